//! Every gRPC server answers the standard health check and serves reflection that the real
//! grpcurl understands; unfinished RPCs say so.

use orderflow_tests::stack::Stack;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

#[tokio::test]
async fn every_server_reports_serving() {
    let stack = Stack::start().await;
    for (address, service) in [
        (stack.addresses.order_api, "orderflow.order.v1.OrderService"),
        (
            stack.addresses.inventory,
            "orderflow.inventory.v1.InventoryService",
        ),
        (
            stack.addresses.notify,
            "orderflow.notify.v1.NotificationService",
        ),
    ] {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = HealthClient::new(channel);
        for name in [service, ""] {
            let status = health
                .check(HealthCheckRequest {
                    service: name.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status();
            assert_eq!(status, ServingStatus::Serving, "{service} ({name:?})");
        }
    }
}

#[tokio::test]
async fn rpcs_of_later_milestones_answer_unimplemented() {
    let stack = Stack::start().await;
    use orderflow_proto::notify::v1::notification_service_client::NotificationServiceClient;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", stack.addresses.notify))
            .unwrap()
            .connect_lazy();
    let status = NotificationServiceClient::new(channel)
        .list_notifications(orderflow_proto::notify::v1::ListNotificationsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
}

#[tokio::test]
async fn grpcurl_sees_each_servers_own_service_through_reflection() {
    let stack = Stack::start().await;
    let grpcurl = orderflow_tests::deps::grpcurl_binary();
    let servers = [
        (
            stack.addresses.order_api,
            "orderflow.order.v1.OrderService",
            "CreateOrder",
        ),
        (
            stack.addresses.inventory,
            "orderflow.inventory.v1.InventoryService",
            "Reserve",
        ),
        (
            stack.addresses.notify,
            "orderflow.notify.v1.NotificationService",
            "ListNotifications",
        ),
    ];
    for (address, service, method) in servers {
        let run = |args: Vec<String>| {
            let grpcurl = grpcurl.clone();
            async move {
                let output = tokio::process::Command::new(&grpcurl)
                    .args(&args)
                    .output()
                    .await
                    .unwrap_or_else(|error| {
                        panic!(
                            "cannot run grpcurl ({grpcurl}): {error}; install it with \
                             `scripts/ensure-grpcurl.sh` (or run `make test`)"
                        )
                    });
                assert!(
                    output.status.success(),
                    "grpcurl {args:?}: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
                String::from_utf8_lossy(&output.stdout).into_owned()
            }
        };
        let target = address.to_string();
        let listed = run(vec!["-plaintext".into(), target.clone(), "list".into()]).await;
        let ours: Vec<&str> = listed
            .lines()
            .filter(|line| line.starts_with("orderflow."))
            .collect();
        assert_eq!(
            ours,
            [service],
            "{address} lists only the service it serves"
        );
        assert!(listed.lines().any(|line| line == "grpc.health.v1.Health"));

        let described = run(vec![
            "-plaintext".into(),
            target,
            "describe".into(),
            format!("{service}.{method}"),
        ])
        .await;
        assert!(
            described.contains(&format!("rpc {method} (")),
            "{described}"
        );
    }
}

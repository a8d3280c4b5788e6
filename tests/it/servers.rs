//! Every gRPC server answers the standard health check and serves reflection that the real
//! grpcurl understands.

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
        (
            stack.addresses.notify,
            "orderflow.consumer.v1.ConsumerStatusService",
        ),
        (
            stack.workers[0],
            "orderflow.consumer.v1.ConsumerStatusService",
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
async fn grpcurl_sees_each_servers_own_service_through_reflection() {
    let stack = Stack::start().await;
    let grpcurl = orderflow_tests::deps::grpcurl_binary();
    let consumer_status = "orderflow.consumer.v1.ConsumerStatusService";
    let servers = [
        (
            stack.addresses.order_api,
            vec!["orderflow.order.v1.OrderService"],
            "CreateOrder",
        ),
        (
            stack.addresses.inventory,
            vec!["orderflow.inventory.v1.InventoryService"],
            "Reserve",
        ),
        (
            stack.addresses.notify,
            vec![consumer_status, "orderflow.notify.v1.NotificationService"],
            "ListNotifications",
        ),
        (stack.workers[0], vec![consumer_status], "GetConsumerStatus"),
    ];
    for (address, services, method) in servers {
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
            ours, services,
            "{address} lists only the services it serves"
        );
        assert!(listed.lines().any(|line| line == "grpc.health.v1.Health"));

        let described = run(vec![
            "-plaintext".into(),
            target.clone(),
            "describe".into(),
            format!("{}.{method}", services[services.len() - 1]),
        ])
        .await;
        assert!(
            described.contains(&format!("rpc {method} (")),
            "{described}"
        );
        // Every listed service is describable, the reflection services too (clients such as
        // k6 resolve all of them).
        for reflection in [
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ] {
            assert!(listed.lines().any(|line| line == reflection), "{listed}");
            let described = run(vec![
                "-plaintext".into(),
                target.clone(),
                "describe".into(),
                reflection.into(),
            ])
            .await;
            assert!(described.contains("ServerReflectionInfo"), "{described}");
        }
    }
}

/// The Helm chart's migration Jobs: `<service> --migrate-only` applies that service's schema to
/// an empty database and exits 0 without serving (no Redis, broker or port needed: nothing is
/// reached at those addresses).
#[tokio::test]
async fn migrate_only_applies_each_schema_and_exits() {
    let id = orderflow_tests::unique_id();
    let database_url = orderflow_tests::deps::empty_database_on(
        &orderflow_tests::deps::postgres_server(),
        &format!("orderflow_t_{id}"),
    )
    .await;
    let db = sqlx::PgPool::connect(&database_url)
        .await
        .expect("connecting");
    for (binary, table) in [
        ("order-api", "orders.orders"),
        ("inventory-svc", "inventory.skus"),
        ("notify-svc", "notify.notifications"),
    ] {
        let path = orderflow_tests::process::workspace_binary(binary);
        let exit = tokio::process::Command::new(&path)
            .args([
                "--migrate-only",
                &format!("--database-url={database_url}"),
                "--kafka-brokers=127.0.0.1:1",
                "--log=warn",
            ])
            .status()
            .await
            .unwrap_or_else(|error| panic!("running {}: {error}", path.display()));
        assert!(exit.success(), "{binary} --migrate-only exited with {exit}");
        let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&db)
            .await
            .unwrap_or_else(|error| panic!("{binary} did not create {table}: {error}"));
        assert_eq!(rows, 0);
    }
}

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

/// The Helm chart's migration Job: `order-api --migrate-only` applies the schema to an empty
/// database and exits 0 without serving (no Redis, broker or port needed).
#[tokio::test]
async fn migrate_only_applies_the_schema_and_exits() {
    let id = orderflow_tests::unique_id();
    let (database_url, db) = orderflow_tests::deps::fresh_database(&id).await;
    for statement in ["DROP SCHEMA public CASCADE", "CREATE SCHEMA public"] {
        sqlx::query(statement)
            .execute(&db)
            .await
            .unwrap_or_else(|error| panic!("{statement}: {error}"));
    }
    let binary = orderflow_tests::process::workspace_binary("order-api");
    let exit = tokio::process::Command::new(&binary)
        .args([
            "--migrate-only",
            &format!("--database-url={database_url}"),
            "--redis-url=redis://127.0.0.1:1",
            "--kafka-brokers=127.0.0.1:1",
            "--log=warn",
        ])
        .status()
        .await
        .unwrap_or_else(|error| panic!("running {}: {error}", binary.display()));
    assert!(
        exit.success(),
        "order-api --migrate-only exited with {exit}"
    );
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&db)
        .await
        .expect("the orders table exists again");
    assert_eq!(orders, 0);
}

//! The tower layers every server runs behind: load shedding past the concurrency limit (health
//! checks exempt), the cap on open server streams, the request size limit, the per-user rate
//! limit, and the drain on SIGTERM.

use orderflow_tests::orders;
use orderflow_tests::service::Configure;
use orderflow_tests::stack::{Options, Stack};
use orderflow_tests::{assert_status, order_request};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

#[tokio::test]
async fn calls_past_the_concurrency_limit_are_shed_at_once_and_health_checks_never() {
    let stack = Stack::start_with(Options {
        order_config: Configure::new(|config: &mut order_api::Config| {
            config.process.serving.max_concurrent_requests = 2
        }),
        ..Options::default()
    })
    .await;
    stack.set_stock("SHED-1", 1_000, 100).await;

    let calls = (0..64).map(|index| {
        let stack = &stack;
        async move {
            stack
                .create_order(order_request(
                    &format!("shed-{index}"),
                    &format!("buyer-{index}"),
                    &[("SHED-1", 1)],
                ))
                .await
        }
    });
    let mut health = HealthClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://{}", stack.addresses.order_api))
            .expect("an endpoint")
            .connect_lazy(),
    );
    let checks = (0..16).map(|_| {
        let mut health = health.clone();
        async move {
            health
                .check(HealthCheckRequest {
                    service: "orderflow.order.v1.OrderService".into(),
                })
                .await
        }
    });
    let (answers, checks) = tokio::join!(
        futures::future::join_all(calls),
        futures::future::join_all(checks)
    );

    let mut shed = 0;
    for answer in &answers {
        match answer {
            Ok(_) => {}
            Err(status) => {
                assert_status(
                    "a shed call",
                    status,
                    Code::ResourceExhausted,
                    "--max-concurrent-requests",
                );
                shed += 1;
            }
        }
    }
    assert!(
        shed > 0,
        "64 calls at once against a limit of 2: some must be shed"
    );
    assert!(shed < answers.len(), "calls within the limit are served");
    for check in checks {
        let check = check.expect("health checks are never shed");
        assert_eq!(check.get_ref().status(), ServingStatus::Serving);
    }
    // Shed calls left nothing behind: a retry of one succeeds.
    let placed = answers.iter().filter(|answer| answer.is_ok()).count();
    let retried = stack
        .create_order(order_request("shed-retry", "buyer-retry", &[("SHED-1", 1)]))
        .await
        .expect("a retry once the burst is over");
    let stock = stack.stock("SHED-1").await;
    assert_eq!(
        stock.reserved,
        i64::try_from(placed + 1).unwrap_or(i64::MAX),
        "only the served calls reserved stock"
    );
    assert!(!retried.order_id.is_empty());
    assert!(health.check(HealthCheckRequest::default()).await.is_ok());
    stack.stop().await;
}

#[tokio::test]
async fn an_oversized_request_is_refused_before_it_is_decoded() {
    let stack = Stack::start_with(Options {
        order_config: Configure::new(|config: &mut order_api::Config| {
            config.process.serving.max_message_bytes = 4096
        }),
        ..Options::default()
    })
    .await;
    stack.set_stock("BIG-1", 10, 100).await;
    let mut request = order_request("big-1", "buyer-big", &[("BIG-1", 1)]);
    request.user_id = "u".repeat(8 * 1024);
    let refused = stack
        .create_order(request)
        .await
        .expect_err("8 KiB against a 4 KiB limit");
    assert_status(
        "an oversized request",
        &refused,
        Code::ResourceExhausted,
        "--max-message-bytes",
    );
    assert_eq!(stack.stock("BIG-1").await.reserved, 0);

    // Below the limit, the same call is served.
    stack
        .create_order(order_request("big-2", "buyer-big", &[("BIG-1", 1)]))
        .await
        .expect("a small request");
    stack.stop().await;
}

#[tokio::test]
async fn the_per_user_rate_limit_holds_across_replicas() {
    let stack = Stack::start_with(Options {
        order_config: Configure::new(|config: &mut order_api::Config| {
            // One token every 5 s: the burst below never refills by accident on a busy machine.
            config.rate_limit_per_second = 0.2;
            config.rate_limit_burst = 3;
        }),
        extra_order_apis: 1,
        ..Options::default()
    })
    .await;
    stack.set_stock("RATE-1", 100, 100).await;
    let replicas = [stack.order.clone(), stack.replicas[0].clone()];
    let place = |index: usize, user: &str| {
        let mut client = replicas[index % 2].clone();
        let request = order_request(&format!("rate-{user}-{index}"), user, &[("RATE-1", 1)]);
        async move { client.create_order(request).await }
    };

    // The burst, alternating between the two replicas: they share one bucket.
    for index in 0..3 {
        place(index, "eager").await.expect("within the burst");
    }
    let refused = place(3, "eager").await.expect_err("past the burst");
    assert_status(
        "a fourth order at once",
        &refused,
        Code::ResourceExhausted,
        "user_id \"eager\": more than 0.2 orders per second",
    );
    assert!(refused.message().contains("retry in"), "{refused:?}");
    assert_eq!(
        stack.stock("RATE-1").await.reserved,
        3,
        "a refused call reserved nothing"
    );

    // Other buyers have their own bucket.
    place(4, "patient").await.expect("another user");

    // A token comes back after 5 s.
    tokio::time::sleep(std::time::Duration::from_millis(5_100)).await;
    place(5, "eager").await.expect("a token refilled");
    stack.stop().await;
}

#[tokio::test]
async fn sigterm_drains_the_calls_in_flight_and_refuses_new_ones() {
    use std::time::Duration;

    let mut stack = Stack::start_with(Options {
        processes: Some(Vec::new()),
        ..Options::default()
    })
    .await;
    stack.set_stock("DRAIN-1", 10, 100).await;
    let order = stack
        .create_order(order_request("drain", "dana", &[("DRAIN-1", 1)]))
        .await
        .expect("an order");
    stack.wait_for_persisted_orders(1).await;

    // Another transaction holds the order's row: the payment stays in flight until it ends.
    let mut blocker = stack.db.begin().await.expect("a transaction");
    sqlx::query("SELECT 1 FROM orders WHERE order_id = $1::uuid FOR UPDATE")
        .bind(&order.order_id)
        .execute(&mut *blocker)
        .await
        .expect("locking the order");
    let in_flight = tokio::spawn({
        let (mut client, order) = (stack.order.clone(), order.clone());
        async move { orders::pay(&mut client, &order, "pay-drain").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    stack.signal_terminate("order-api").await;

    // Draining: the health check says NOT_SERVING (or the listener is gone) at once.
    let health = HealthClient::new(orderflow_tests::stack::channel(stack.addresses.order_api));
    orderflow_tests::eventually("order-api to stop serving", Duration::from_secs(10), || {
        let mut health = health.clone();
        async move {
            let answer = health
                .check(HealthCheckRequest {
                    service: "orderflow.order.v1.OrderService".into(),
                })
                .await;
            (!answer.is_ok_and(|answer| answer.get_ref().status() == ServingStatus::Serving))
                .then_some(())
        }
    })
    .await;
    assert!(!in_flight.is_finished(), "the call in flight was cut short");
    let newcomer = orderflow_proto::order::v1::order_service_client::OrderServiceClient::new(
        orderflow_tests::stack::channel(stack.addresses.order_api),
    )
    .create_order(order_request("late", "dana", &[("DRAIN-1", 1)]))
    .await
    .expect_err("a new call after SIGTERM");
    assert_eq!(newcomer.code(), Code::Unavailable, "{newcomer:?}");

    // The call in flight still completes once its row is free.
    blocker.rollback().await.expect("releasing the row");
    let paid = in_flight
        .await
        .expect("the call's task")
        .expect("PayOrder finished during the drain");
    assert_eq!(paid.payment_id, "pay-drain");
    stack.stop().await;
}

#[tokio::test]
async fn open_streams_count_against_a_per_server_limit() {
    use futures::StreamExt;
    use orderflow_proto::notify::v1::SubscribeNotificationsRequest;
    use orderflow_proto::order::v1::WatchOrderRequest;

    let stack = Stack::start_with(Options {
        order_config: Configure::new(|config: &mut order_api::Config| {
            config.process.serving.max_open_streams = 2
        }),
        notify_config: Configure::new(|config: &mut notify_svc::Config| {
            config.process.serving.max_open_streams = 1
        }),
        ..Options::default()
    })
    .await;
    stack.set_stock("STREAM-1", 10, 100).await;
    let order = stack
        .create_order(order_request("stream-1", "wes", &[("STREAM-1", 1)]))
        .await
        .expect("CreateOrder");
    let watch = || {
        let mut client = stack.order.clone();
        let order_id = order.order_id.clone();
        async move { client.watch_order(WatchOrderRequest { order_id }).await }
    };
    let mut first = watch().await.expect("a first watcher").into_inner();
    let second = watch().await.expect("a second watcher").into_inner();
    // Both streams are open (each got the current state); a third is refused at once.
    assert!(first.next().await.is_some());
    let refused = watch().await.expect_err("a third watcher");
    assert_status(
        "a stream past the limit",
        &refused,
        Code::ResourceExhausted,
        "--max-open-streams",
    );
    // A client that goes away gives its slot back.
    drop(second);
    orderflow_tests::eventually(
        "a slot to be free again",
        std::time::Duration::from_secs(10),
        || async { watch().await.ok() },
    )
    .await;
    drop(first);

    let subscribe = || {
        let mut client = stack.notify.clone();
        async move {
            client
                .subscribe_notifications(SubscribeNotificationsRequest {
                    user_id: "wes".into(),
                })
                .await
        }
    };
    let _open = subscribe().await.expect("a subscriber");
    let refused = subscribe().await.expect_err("a second subscriber");
    assert_status(
        "a subscription past the limit",
        &refused,
        Code::ResourceExhausted,
        "--max-open-streams",
    );
    stack.stop().await;
}

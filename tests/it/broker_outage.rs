//! With the broker down, CreateOrder answers UNAVAILABLE, while status changes go on (their
//! events wait in the outbox); once it is back, the same request (same idempotency key) places
//! that very order, the waiting events are published, and the units of a refused placement nobody
//! retried come back. Uses a broker of its own: the shared one stays up.

use orderflow_proto::order::v1::OrderStatus;
use orderflow_tests::private::PrivateBroker;
use orderflow_tests::service::Configure;
use orderflow_tests::stack::{Options, Stack};
use orderflow_tests::{assert_status, order_request};
use tonic::Code;

#[tokio::test]
async fn an_unreachable_broker_means_unavailable_and_nothing_reserved() {
    let mut broker = PrivateBroker::start().await;
    let stack = Stack::start_with(Options {
        kafka_brokers: Some(broker.address.clone()),
        kafka_ack_timeout_ms: Some(2_000),
        create_timeout_ms: Some(6_000),
        inventory_config: Configure::new(|config: &mut inventory_svc::Config| {
            config.orphan_grace_ms = 500;
            config.reservation_sweep_interval_ms = 200;
        }),
        ..Options::default()
    })
    .await;
    stack.set_stock("SKU-B", 5, 100).await;

    // A producer's first idempotent send waits for its producer id; retrying with the same
    // idempotency key is what a client does while that is slow.
    let before = stack
        .create_order_eventually(
            "an order while the broker is up",
            order_request("before", "frank", &[("SKU-B", 1)]),
        )
        .await;

    broker.kill().await;
    // No broker on a status change's path: it commits, and its event waits in the outbox.
    let paid = stack
        .pay_order(&before, "p")
        .await
        .expect("PayOrder with the broker down");
    assert_eq!(paid.status(), OrderStatus::Paid);
    let during = order_request("during", "frank", &[("SKU-B", 2)]);
    let refused = stack.create_order(during.clone()).await.unwrap_err();
    assert_status("broker down", &refused, Code::Unavailable, "broker");
    // A buyer who gives up after the error, and never retries.
    let abandoned = order_request("abandoned", "frank", &[("SKU-B", 1)]);
    let refused = stack.create_order(abandoned).await.unwrap_err();
    assert_status("broker down", &refused, Code::Unavailable, "broker");

    // Their units stay held for their placements: with the broker down, nothing can show that
    // the log holds no order for them.
    let stock = stack.stock("SKU-B").await;
    assert_eq!((stock.available, stock.reserved, stock.sold), (1, 3, 1));
    assert_eq!(
        stack.redis_keys("order:*").await.len(),
        1,
        "only the first order is cached"
    );

    broker.restart().await;
    let placed = stack
        .create_order_eventually("CreateOrder to succeed once the broker is back", during)
        .await;
    let back = std::time::Instant::now();
    // The retry placed the order its key was bound to (its reservation, not a second one);
    // the abandoned placement's unit comes back once the log is known to hold no order for it.
    orderflow_tests::eventually(
        "the abandoned placement's unit to come back",
        std::time::Duration::from_secs(60),
        || async {
            let stock = stack.stock("SKU-B").await;
            ((stock.available, stock.reserved, stock.sold) == (2, 2, 1)).then_some(())
        },
    )
    .await;
    println!(
        "the abandoned unit came back {:?} after the broker did",
        back.elapsed()
    );
    stack.wait_for_outbox_drained().await;
    assert_eq!(
        stack.published(orderflow_proto::topics::ORDER_PAID).await,
        1
    );
    stack.wait_for_persisted_orders(2).await;
    let during_orders: Vec<(String, String)> = sqlx::query_as(
        "SELECT order_id::text, status FROM orders WHERE idempotency_key = 'during'",
    )
    .fetch_all(&stack.db)
    .await
    .expect("the orders of the retried key");
    assert_eq!(during_orders, [(placed.order_id, "PENDING".to_owned())]);
    // The refused attempts' events were never sent late: two orders, two events.
    assert_eq!(
        stack
            .published(orderflow_proto::topics::ORDER_CREATED)
            .await,
        2
    );
    // Stop the services while the private broker still runs, so they can leave cleanly.
    stack.stop().await;
}

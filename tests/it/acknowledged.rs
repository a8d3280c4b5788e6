//! Acknowledged means the order exists: one test per way a placement can be cut short after it
//! may have sent its event (a crash right after the broker's ack, Redis failing or stalling
//! after it, a cached order whose stock was given back), a paid order's stock through an
//! inventory outage longer than any hold, and the units of placements that died coming back
//! once the order log is known to hold no order for them — but never those of an acknowledged
//! order the worker has not applied yet. Faults are injected with order-api's test-only
//! `--test-fault` (see `order-api/src/fault.rs`).

use std::time::{Duration, Instant};

use orderflow_proto::inventory::v1::ReleaseRequest;
use orderflow_proto::order::v1::order_service_client::OrderServiceClient;
use orderflow_proto::order::v1::OrderStatus;
use orderflow_proto::topics;
use orderflow_tests::link::Link;
use orderflow_tests::pipeline::WorkerProcess;
use orderflow_tests::service::Configure;
use orderflow_tests::stack::{channel, Options, Stack};
use orderflow_tests::{assert_status, eventually, order_request};
use tonic::Code;

/// A short placement budget, so a lease left by a crashed placement runs out quickly.
fn short_placements() -> Options {
    Options {
        kafka_ack_timeout_ms: Some(2_000),
        create_timeout_ms: Some(3_000),
        ..Options::default()
    }
}

/// Waits until the broker acknowledged `count` order-created events of this stack.
async fn wait_for_created_events(stack: &Stack, count: i64) {
    eventually(
        "order-created events on the broker",
        Duration::from_secs(30),
        || async { (stack.published(topics::ORDER_CREATED).await >= count).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn killed_right_after_the_ack_its_retry_answers_that_same_order_once() {
    let stack = Stack::start_with(short_placements()).await;
    stack.set_stock("ACK-1", 10, 100).await;
    let mut doomed = stack
        .start_order_api(|config| config.test_fault = Some("after-ack:crash".into()))
        .await;
    let request = order_request("k-crash", "ann", &[("ACK-1", 2)]);
    OrderServiceClient::new(channel(doomed.address))
        .create_order(request.clone())
        .await
        .expect_err("the process died before answering");
    doomed.wait_for_exit(Duration::from_secs(10)).await;
    assert_eq!(stack.published(topics::ORDER_CREATED).await, 1);

    // The client retries the same key on another replica: once the crashed placement's lease
    // ran out, it resumes that order instead of placing a second one.
    let order = stack
        .create_order_eventually("the retry to be answered", request.clone())
        .await;
    stack.wait_for_persisted_orders(1).await;
    assert_eq!(
        stack.orders_of_key("ann", "k-crash").await,
        [(order.order_id.clone(), "PENDING".to_owned(), false)]
    );
    assert_eq!(
        stack.rows("processed_events").await,
        1,
        "one order-created event applied: the resumed placement sent the same event id"
    );
    assert_eq!(stack.durable_stock("ACK-1").await, (8, 2, 0));
    let again = stack.create_order(request).await.expect("another retry");
    assert_eq!(again.order_id, order.order_id);
    assert_eq!(
        stack
            .pay_order(&order, "pay-crash")
            .await
            .expect("PayOrder")
            .status(),
        OrderStatus::Paid
    );
    eventually("the sale to settle", Duration::from_secs(30), || async {
        (stack.durable_stock("ACK-1").await == (8, 0, 2)).then_some(())
    })
    .await;
    stack.stop().await;
}

#[tokio::test]
async fn a_placement_killed_before_its_event_gives_its_units_back_and_an_acknowledged_one_keeps_them(
) {
    let stack = Stack::start_with(Options {
        external_worker: true,
        inventory_config: Configure::new(|config: &mut inventory_svc::Config| {
            config.orphan_grace_ms = 500;
            config.reservation_sweep_interval_ms = 200;
        }),
        ..short_placements()
    })
    .await;
    stack.set_stock("ORPH-1", 10, 100).await;
    let mut doomed = stack
        .start_order_api(|config| config.test_fault = Some("before-publish:crash".into()))
        .await;
    OrderServiceClient::new(channel(doomed.address))
        .create_order(order_request("k-orphan", "bea", &[("ORPH-1", 3)]))
        .await
        .expect_err("the process died before sending the order");
    doomed.wait_for_exit(Duration::from_secs(10)).await;
    // Acknowledged while no consumer-worker runs: its event is in the log, not applied.
    let live = stack
        .create_order(order_request("k-live", "bea", &[("ORPH-1", 2)]))
        .await
        .expect("CreateOrder");

    // Long past both placements' holds (3 s budget + 0.5 s grace), nothing came back: until the
    // worker has applied the log, nothing shows that no order exists for either.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(stack.durable_stock("ORPH-1").await, (5, 5, 0));

    let started = Instant::now();
    let worker = WorkerProcess::start(&stack).await;
    stack.wait_for_persisted_orders(1).await;
    eventually(
        "the dead placement's units to come back",
        Duration::from_secs(60),
        || async { (stack.durable_stock("ORPH-1").await == (8, 2, 0)).then_some(()) },
    )
    .await;
    println!(
        "orphaned units back {:?} after consumer-worker started",
        started.elapsed()
    );
    assert_eq!(
        stack.orders_of_key("bea", "k-live").await,
        [(live.order_id.clone(), "PENDING".to_owned(), false)]
    );
    let (confirmed, released): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE confirmed_at IS NOT NULL AND state = 'reserved'), \
                count(*) FILTER (WHERE state = 'released' AND release_reason LIKE 'orphaned%') \
         FROM reservations",
    )
    .fetch_one(&stack.db)
    .await
    .expect("the reservations");
    assert_eq!((confirmed, released), (1, 1));
    assert_eq!(stack.stock("ORPH-1").await.available, 8, "Redis follows");
    assert!(worker.terminate().await);
    stack.stop().await;
}

/// Places an order whose placement pauses right after the broker's ack, breaks order-api's
/// link to Redis during the pause with `fail`, and checks that the order stands: answered,
/// persisted as placed with its stock, its key resumed to it, payable and settled.
async fn redis_failing_right_after_the_ack_leaves_the_order_standing(fail: fn(&Link)) {
    let stack = Stack::start_with(Options {
        order_redis_link: true,
        order_config: Configure::new(|config: &mut order_api::Config| {
            config.test_fault = Some("after-ack:pause=1500".into());
        }),
        ..short_placements()
    })
    .await;
    stack.set_stock("AFTER-1", 10, 100).await;
    let link = stack.order_redis_link.as_ref().expect("the Redis link");
    let mut client = stack.order.clone();
    let request = order_request("k-after", "cid", &[("AFTER-1", 3)]);
    let placing = tokio::spawn({
        let request = request.clone();
        async move { client.create_order(request).await }
    });
    wait_for_created_events(&stack, 1).await;
    fail(link);
    let order = placing
        .await
        .expect("the placing task")
        .expect("the acknowledged order is answered although Redis failed")
        .into_inner()
        .order
        .expect("an order");
    link.restore();

    stack.wait_for_persisted_orders(1).await;
    assert_eq!(
        stack.orders_of_key("cid", "k-after").await,
        [(order.order_id.clone(), "PENDING".to_owned(), false)]
    );
    assert_eq!(stack.durable_stock("AFTER-1").await, (7, 3, 0));
    // Whether or not Redis marked the key placed, a retry answers this order.
    let retried = stack
        .create_order_eventually("a retry of the key", request)
        .await;
    assert_eq!(retried.order_id, order.order_id);
    assert_eq!(
        stack
            .pay_order(&order, "pay-after")
            .await
            .expect("PayOrder")
            .status(),
        OrderStatus::Paid
    );
    eventually("the sale to settle", Duration::from_secs(30), || async {
        (stack.durable_stock("AFTER-1").await == (7, 0, 3)
            && stack.rows("stock_settlements").await == 0)
            .then_some(())
    })
    .await;
    stack.stop().await;
}

#[tokio::test]
async fn redis_cut_right_after_the_ack_leaves_the_order_standing_with_its_stock() {
    redis_failing_right_after_the_ack_leaves_the_order_standing(Link::cut).await;
}

/// The cache and key mark are sent into a stalled link: they reach Redis only after the
/// placement's budget ran out, and the placement never hears back.
#[tokio::test]
async fn a_lost_redis_reply_after_the_ack_answers_the_order_and_keeps_its_stock() {
    redis_failing_right_after_the_ack_leaves_the_order_standing(Link::stall).await;
}

#[tokio::test]
async fn a_cached_order_whose_stock_was_given_back_is_persisted_voided_and_cannot_be_paid() {
    let stack = Stack::start_with(Options {
        external_worker: true,
        ..Options::default()
    })
    .await;
    stack.set_stock("VOID-1", 10, 100).await;
    let order = stack
        .create_order(order_request("k-void", "eve", &[("VOID-1", 2)]))
        .await
        .expect("CreateOrder");
    // An operator gives the stock back while the order is only in the cache.
    stack
        .inventory
        .clone()
        .release(ReleaseRequest {
            order_id: order.order_id.clone(),
            reason: "operator".into(),
        })
        .await
        .expect("Release");
    let refused = stack.pay_order(&order, "pay-void").await.unwrap_err();
    assert_status(
        "paying an order without stock",
        &refused,
        Code::FailedPrecondition,
        "CANCELLED",
    );
    assert_eq!(
        stack.orders_of_key("eve", "k-void").await,
        [(order.order_id.clone(), "CANCELLED".to_owned(), true)]
    );
    assert_eq!(stack.durable_stock("VOID-1").await, (10, 0, 0));
    // The order's event, applied later, changes nothing.
    let worker = WorkerProcess::start(&stack).await;
    eventually(
        "the worker to apply the event",
        Duration::from_secs(30),
        || async { (stack.rows("processed_events").await == 1).then_some(()) },
    )
    .await;
    assert_eq!(
        stack.orders_of_key("eve", "k-void").await,
        [(order.order_id.clone(), "CANCELLED".to_owned(), true)]
    );
    assert_eq!(stack.durable_stock("VOID-1").await, (10, 0, 0));
    assert!(worker.terminate().await);
    stack.stop().await;
}

#[tokio::test]
async fn paid_orders_keep_their_stock_through_an_inventory_outage_longer_than_any_hold() {
    let stack = Stack::start_with(Options {
        inventory_link: true,
        inventory_config: Configure::new(|config: &mut inventory_svc::Config| {
            config.reservation_ttl_secs = 1;
            config.orphan_grace_ms = 200;
            config.reservation_sweep_interval_ms = 100;
        }),
        ..short_placements()
    })
    .await;
    stack.set_stock("PAID-1", 10, 100).await;
    let mut orders = Vec::new();
    for index in 0..3 {
        orders.push(
            stack
                .create_order_eventually(
                    "an order",
                    order_request(&format!("k-paid-{index}"), "fay", &[("PAID-1", 2)]),
                )
                .await,
        );
    }
    stack.wait_for_persisted_orders(3).await;
    let link = stack.inventory_link.as_ref().expect("the inventory link");
    link.cut();
    // Far past every reservation's hold: the sweeps run all along.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for order in &orders {
        assert_eq!(
            stack
                .pay_order(order, &format!("pay-{}", order.order_id))
                .await
                .expect("PayOrder")
                .status(),
            OrderStatus::Paid
        );
    }
    assert_eq!(stack.rows("stock_settlements").await, 3);
    link.restore();
    eventually("every sale to settle", Duration::from_secs(60), || async {
        (stack.rows("stock_settlements").await == 0).then_some(())
    })
    .await;
    assert_eq!(stack.durable_stock("PAID-1").await, (4, 0, 6));
    let committed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM reservations WHERE state = 'committed'")
            .fetch_one(&stack.db)
            .await
            .expect("counting reservations");
    assert_eq!(committed, 3);
    stack.stop().await;
}

#[tokio::test]
async fn a_cancel_reason_equal_to_the_void_marker_does_not_free_the_key() {
    let stack = Stack::start().await;
    stack.set_stock("MARK-1", 10, 100).await;
    let request = order_request("k-mark", "gus", &[("MARK-1", 1)]);
    let order = stack
        .create_order(request.clone())
        .await
        .expect("CreateOrder");
    stack
        .cancel_order(&order.order_id, "stock_not_held")
        .await
        .expect("CancelOrder");
    assert_eq!(
        stack.orders_of_key("gus", "k-mark").await,
        [(order.order_id.clone(), "CANCELLED".to_owned(), false)]
    );
    // Redis forgets every key of this test (as if it lost its data): the retry looks the key up
    // in PostgreSQL and finds the cancelled order, which still holds it.
    let mut redis = stack.redis.clone();
    let keys = stack.redis_keys("idempotency*").await;
    let _: () = redis::AsyncCommands::del(&mut redis, keys)
        .await
        .expect("forgetting the keys");
    let again = stack.create_order(request).await.expect("the retry");
    assert_eq!(again.order_id, order.order_id);
    assert_eq!(again.status(), OrderStatus::Cancelled);
    stack.wait_for_persisted_orders(1).await;
    stack.stop().await;
}

#[tokio::test]
async fn a_nul_in_a_cancel_reason_is_invalid_not_unavailable() {
    let stack = Stack::start().await;
    stack.set_stock("NUL-1", 10, 100).await;
    let order = stack
        .create_order(order_request("k-nul", "hal", &[("NUL-1", 1)]))
        .await
        .expect("CreateOrder");
    let refused = stack
        .cancel_order(&order.order_id, "changed\0mind")
        .await
        .unwrap_err();
    assert_status(
        "a NUL in the reason",
        &refused,
        Code::InvalidArgument,
        "reason: must not contain the NUL character",
    );
    let refused = stack
        .inventory
        .clone()
        .release(ReleaseRequest {
            order_id: order.order_id.clone(),
            reason: "\0".into(),
        })
        .await
        .unwrap_err();
    assert_status(
        "a NUL in a release reason",
        &refused,
        Code::InvalidArgument,
        "reason: must not contain the NUL character",
    );
    assert_eq!(stack.durable_stock("NUL-1").await, (9, 1, 0));
    stack.stop().await;
}

#[tokio::test]
async fn redis_losing_its_keys_while_an_order_is_only_in_the_log_never_yields_a_second_order() {
    let stack = Stack::start_with(Options {
        external_worker: true,
        ..Options::default()
    })
    .await;
    stack.set_stock("LOSS-1", 10, 100).await;
    let request = order_request("k-loss", "ida", &[("LOSS-1", 1)]);
    // Acknowledged, while no consumer-worker runs: only the log has it.
    let order = stack
        .create_order(request.clone())
        .await
        .expect("CreateOrder");
    // Redis loses order-api's keys (the claims, the memory marker, the cache).
    let mut redis = stack.redis.clone();
    let mut lost = stack.redis_keys("idempotency*").await;
    lost.extend(stack.redis_keys("order:*").await);
    let _: () = redis::AsyncCommands::del(&mut redis, lost)
        .await
        .expect("losing the keys");
    // The retry cannot be answered yet, and places nothing: PostgreSQL does not have the
    // order, and the log may.
    let refused = stack.create_order(request.clone()).await.unwrap_err();
    assert_status(
        "a retry while the keys are restored",
        &refused,
        Code::Unavailable,
        "restored",
    );
    assert_eq!(stack.published(topics::ORDER_CREATED).await, 1);
    // Once consumer-worker applied the log, the retry answers the order it was.
    let worker = WorkerProcess::start(&stack).await;
    let again = stack
        .create_order_eventually("the retry to be answered", request)
        .await;
    assert_eq!(again.order_id, order.order_id);
    assert_eq!(
        stack.orders_of_key("ida", "k-loss").await,
        [(order.order_id.clone(), "PENDING".to_owned(), false)]
    );
    assert_eq!(stack.published(topics::ORDER_CREATED).await, 1);
    assert!(worker.terminate().await);
    stack.stop().await;
}

//! consumer-worker applies each event once, whatever arrives twice, and steps over events that
//! can never be applied without stopping.

use orderflow_proto::events::v1::OrderCreated;
use orderflow_proto::inventory::v1::ReleaseRequest;
use orderflow_proto::order::v1::{Order, OrderItem, OrderStatus};
use orderflow_proto::topics::ORDER_CREATED;
use orderflow_runtime::timestamp;
use orderflow_tests::inventory::reserve_request_for;
use orderflow_tests::stack::Stack;
use prost::Message;
use uuid::Uuid;

fn order_created(order_id: Uuid, idempotency_key: &str) -> OrderCreated {
    let now = Some(timestamp::to_proto(timestamp::now()));
    OrderCreated {
        event_id: Uuid::now_v7().to_string(),
        order_id: order_id.to_string(),
        occurred_at: now,
        order: Some(Order {
            order_id: order_id.to_string(),
            user_id: "walter".into(),
            items: vec![OrderItem {
                sku: "W-1".into(),
                quantity: 3,
                unit_price_cents: 250,
            }],
            total_cents: 750,
            currency: "CNY".into(),
            status: OrderStatus::Pending.into(),
            created_at: now,
            updated_at: now,
            ..Order::default()
        }),
        idempotency_key: idempotency_key.into(),
    }
}

async fn count(stack: &Stack, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&stack.db)
        .await
        .expect("a count")
}

#[tokio::test]
async fn redelivered_and_duplicated_events_change_nothing() {
    let stack = Stack::start().await;
    let order_id = Uuid::now_v7();
    let other_id = Uuid::now_v7();
    // Both orders hold stock, as every order the API publishes does.
    stack.set_stock("W-1", 10, 250).await;
    for id in [order_id, other_id] {
        stack
            .inventory
            .clone()
            .reserve(reserve_request_for(&id.to_string(), &[("W-1", 3)]))
            .await
            .expect("Reserve");
    }
    let event = order_created(order_id, "w-key");
    let bytes = event.encode_to_vec();
    let key = order_id.to_string();

    // The same event three times (redelivery), then a second event for the same order (the
    // API published it twice), then an order for the same idempotency key under another id.
    for _ in 0..3 {
        stack.publish_raw(ORDER_CREATED, &key, &bytes).await;
    }
    let republished = OrderCreated {
        event_id: Uuid::now_v7().to_string(),
        ..event.clone()
    };
    stack
        .publish_raw(ORDER_CREATED, &key, &republished.encode_to_vec())
        .await;
    stack
        .publish_raw(
            ORDER_CREATED,
            &key, // the same partition, so it is applied after the first order
            &order_created(other_id, "w-key").encode_to_vec(),
        )
        .await;

    // Three distinct event ids, each recorded once: then everything has been applied.
    orderflow_tests::eventually(
        "three distinct events applied",
        std::time::Duration::from_secs(60),
        || async {
            (count(&stack, "SELECT count(*) FROM processed_events").await == 3).then_some(())
        },
    )
    .await;
    assert_eq!(count(&stack, "SELECT count(*) FROM orders").await, 1);
    assert_eq!(count(&stack, "SELECT count(*) FROM order_items").await, 1);
    let persisted: Uuid = sqlx::query_scalar("SELECT order_id FROM orders")
        .fetch_one(&stack.db)
        .await
        .unwrap();
    assert_eq!(
        persisted, order_id,
        "the first order keeps its idempotency key"
    );
}

#[tokio::test]
async fn events_that_can_never_apply_are_skipped_and_the_worker_goes_on() {
    let stack = Stack::start().await;
    // One key for every message: one partition, so the good event is consumed after the bad.
    let key = "one-partition";
    stack
        .publish_raw(ORDER_CREATED, key, b"\xff\xfe not protobuf")
        .await;
    let mut no_items = order_created(Uuid::now_v7(), "bad");
    if let Some(order) = no_items.order.as_mut() {
        order.items.clear();
    }
    stack
        .publish_raw(ORDER_CREATED, key, &no_items.encode_to_vec())
        .await;
    let mut negative_total = order_created(Uuid::now_v7(), "negative");
    if let Some(order) = negative_total.order.as_mut() {
        // Decodes fine, but PostgreSQL's CHECK refuses it: a permanent error, not a retry loop.
        order.total_cents = -1;
    }
    stack
        .publish_raw(ORDER_CREATED, key, &negative_total.encode_to_vec())
        .await;

    let good_id = Uuid::now_v7();
    stack
        .publish_raw(
            ORDER_CREATED,
            key,
            &order_created(good_id, "good").encode_to_vec(),
        )
        .await;

    stack.wait_for_persisted_orders(1).await;
    let persisted: Uuid = sqlx::query_scalar("SELECT order_id FROM orders")
        .fetch_one(&stack.db)
        .await
        .unwrap();
    assert_eq!(persisted, good_id);
}

#[tokio::test]
async fn an_order_whose_stock_was_released_before_it_arrived_is_recorded_cancelled() {
    let stack = Stack::start().await;
    stack.set_stock("W-1", 10, 250).await;
    let mut inventory = stack.inventory.clone();
    let (released, held) = (Uuid::now_v7(), Uuid::now_v7());
    for order_id in [released, held] {
        inventory
            .reserve(reserve_request_for(&order_id.to_string(), &[("W-1", 3)]))
            .await
            .expect("Reserve");
    }
    // The API heard no acknowledgement for `released` and gave its stock back, yet its event
    // was written and arrives.
    inventory
        .release(ReleaseRequest {
            order_id: released.to_string(),
            reason: "publish failed".into(),
        })
        .await
        .expect("Release");
    // The client was told to retry and did, with the same idempotency key: a new order, held.
    let retry = Uuid::now_v7();
    inventory
        .reserve(reserve_request_for(&retry.to_string(), &[("W-1", 3)]))
        .await
        .expect("Reserve");
    for (order_id, key) in [(released, "w-key"), (held, "w-held"), (retry, "w-key")] {
        let event = order_created(order_id, key).encode_to_vec();
        stack
            .publish_raw(ORDER_CREATED, &order_id.to_string(), &event)
            .await;
    }
    stack.wait_for_persisted_orders(3).await;

    let status = |order_id: Uuid| {
        sqlx::query_as::<_, (String, Option<String>)>(
            "SELECT status, cancel_reason FROM orders WHERE order_id = $1",
        )
        .bind(order_id)
        .fetch_one(&stack.db)
    };
    let (cancelled, reason) = status(released).await.unwrap();
    assert_eq!(cancelled, "CANCELLED");
    assert_eq!(reason.as_deref(), Some("stock_not_held"));
    assert_eq!(status(held).await.unwrap(), ("PENDING".into(), None));
    // The retry is recorded too: the cancelled order does not hold the idempotency key.
    assert_eq!(status(retry).await.unwrap(), ("PENDING".into(), None));
    // The stock is untouched: only the held orders' units are out.
    let stock = stack.stock("W-1").await;
    assert_eq!((stock.available, stock.reserved), (4, 6));
}

//! One order end to end, idempotent retries, and no oversell under concurrent buyers.

use std::time::Duration;

use orderflow_proto::order::v1::OrderStatus;
use orderflow_proto::refusals::Shortage;
use orderflow_tests::service::Configure;
use orderflow_tests::stack::{Options, Stack};
use orderflow_tests::{assert_status, eventually, order_request};
use redis::AsyncCommands;
use sqlx::Row;
use tonic::Code;

#[tokio::test]
async fn an_order_travels_the_whole_path() {
    let stack = Stack::start().await;
    stack.set_stock("TEA-1", 10, 1999).await;
    stack.set_stock("CUP-1", 3, 500).await;

    let created = stack
        .create_order(order_request(
            "key-1",
            "alice",
            &[("TEA-1", 2), ("CUP-1", 1)],
        ))
        .await
        .expect("CreateOrder");
    assert_eq!(created.status(), OrderStatus::Pending);
    assert_eq!(created.user_id, "alice");
    assert_eq!(created.total_cents, 2 * 1999 + 500);
    assert_eq!(created.currency, "CNY");
    assert_eq!(created.items.len(), 2);
    assert_eq!(created.items[0].unit_price_cents, 1999);

    // Readable at once, before the worker persisted it (from the Redis cache).
    assert_eq!(stack.get_order(&created.order_id).await.unwrap(), created);
    let tea = stack.stock("TEA-1").await;
    assert_eq!((tea.available, tea.reserved), (8, 2));

    // The worker persists it, once, with its items.
    stack.wait_for_persisted_orders(1).await;
    let row = sqlx::query("SELECT user_id, status, total_cents, idempotency_key FROM orders")
        .fetch_one(&stack.db)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>("user_id"), "alice");
    assert_eq!(row.get::<String, _>("status"), "PENDING");
    assert_eq!(row.get::<i64, _>("total_cents"), 4498);
    assert_eq!(row.get::<String, _>("idempotency_key"), "key-1");
    let items: i64 = sqlx::query_scalar("SELECT count(*) FROM order_items")
        .fetch_one(&stack.db)
        .await
        .unwrap();
    assert_eq!(items, 2);

    // With the cache entry gone, the same order comes from PostgreSQL and refills the cache.
    let cache_key = stack.redis_key(&["order", &created.order_id]);
    let mut redis = stack.redis.clone();
    let _: i64 = redis.del(&cache_key).await.unwrap();
    assert_eq!(stack.get_order(&created.order_id).await.unwrap(), created);
    eventually(
        "GetOrder to refill the cache from PostgreSQL",
        Duration::from_secs(10),
        || {
            let mut redis = redis.clone();
            let cache_key = cache_key.clone();
            async move {
                redis
                    .exists::<_, bool>(&cache_key)
                    .await
                    .unwrap()
                    .then_some(())
            }
        },
    )
    .await;

    // Every service shuts down cleanly, as on SIGTERM.
    stack.stop().await;
}

#[tokio::test]
async fn a_retry_with_the_same_key_returns_the_same_order() {
    let stack = Stack::start().await;
    stack.set_stock("SKU-R", 10, 100).await;
    let request = order_request("retry-key", "bob", &[("SKU-R", 2)]);

    let first = stack.create_order(request.clone()).await.unwrap();
    let again = stack.create_order(request.clone()).await.unwrap();
    assert_eq!(first, again);

    // Many concurrent retries: all answer that order (or "still in progress"), none reserves.
    let retries: Vec<_> = (0..20)
        .map(|_| {
            let mut client = stack.order.clone();
            let request = request.clone();
            tokio::spawn(async move { client.create_order(request).await })
        })
        .collect();
    for retry in retries {
        match retry.await.unwrap() {
            Ok(answer) => assert_eq!(answer.into_inner().order.as_ref(), Some(&first)),
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        }
    }

    let stock = stack.stock("SKU-R").await;
    assert_eq!(
        (stock.available, stock.reserved),
        (8, 2),
        "reserved exactly once"
    );
    stack.wait_for_persisted_orders(1).await;
    // Give a duplicate event time to arrive; there must still be one order.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(stack.persisted_orders().await, 1);
}

#[tokio::test]
async fn a_key_reused_for_another_request_is_refused() {
    let stack = Stack::start().await;
    stack.set_stock("SKU-K", 10, 100).await;
    stack
        .create_order(order_request("same-key", "carol", &[("SKU-K", 1)]))
        .await
        .unwrap();

    let refused = stack
        .create_order(order_request("same-key", "carol", &[("SKU-K", 2)]))
        .await
        .unwrap_err();
    assert_status(
        "reused key",
        &refused,
        Code::AlreadyExists,
        "idempotency_key",
    );

    // The same key of another user is another key.
    stack
        .create_order(order_request("same-key", "dave", &[("SKU-K", 2)]))
        .await
        .expect("keys are per user");

    let stock = stack.stock("SKU-K").await;
    assert_eq!((stock.available, stock.reserved), (7, 3));
}

#[tokio::test]
async fn concurrent_buyers_never_oversell() {
    let stack = Stack::start().await;
    stack.set_stock("HOT-1", 5, 100).await;

    let buyers: Vec<_> = (0..60)
        .map(|buyer| {
            let mut client = stack.order.clone();
            tokio::spawn(async move {
                client
                    .create_order(order_request(
                        "k",
                        &format!("buyer-{buyer}"),
                        &[("HOT-1", 1)],
                    ))
                    .await
            })
        })
        .collect();
    let mut placed = 0;
    for buyer in buyers {
        match buyer.await.unwrap() {
            Ok(_) => placed += 1,
            Err(status) => assert_status("sold out", &status, Code::FailedPrecondition, "HOT-1"),
        }
    }
    assert_eq!(placed, 5);
    let stock = stack.stock("HOT-1").await;
    assert_eq!((stock.available, stock.reserved), (0, 5));
    stack.wait_for_persisted_orders(5).await;
    let refused_by_postgres: i64 = sqlx::query_scalar("SELECT count(*) FROM stock_refusals")
        .fetch_one(&stack.db)
        .await
        .unwrap();
    assert_eq!(
        refused_by_postgres, 0,
        "Redis admitted what PostgreSQL refused"
    );
}

/// The refusal for too little stock carries its figures as an `ErrorInfo`; a SKU inventory-svc
/// reported short is refused from order-api's memo (no reservation asked for), for as long as
/// `--sold-out-memo-ms`, even when stock came back meanwhile; a placed order's retry still gets
/// its order.
#[tokio::test]
async fn a_sold_out_sku_is_refused_from_the_memo_with_its_figures() {
    let stack = Stack::start_with(Options {
        order_config: Configure::new(|config: &mut order_api::Config| {
            config.sold_out_memo_ms = 600_000
        }),
        ..Options::default()
    })
    .await;
    stack.set_stock("MEMO-1", 1, 100).await;
    let last_unit = stack
        .create_order(order_request("k", "first", &[("MEMO-1", 1)]))
        .await
        .expect("the last unit");
    let sold_out = Shortage {
        sku: "MEMO-1".into(),
        requested: 2,
        available: 0,
    };
    let from_inventory = stack
        .create_order(order_request("k", "second", &[("MEMO-1", 2)]))
        .await
        .expect_err("sold out");
    assert_status(
        "sold out",
        &from_inventory,
        Code::FailedPrecondition,
        "insufficient stock for SKU \"MEMO-1\": requested 2, available 0",
    );
    assert_eq!(
        Shortage::from_status(&from_inventory),
        Some(sold_out.clone())
    );

    stack.set_stock("MEMO-1", 5, 100).await;
    let from_memo = stack
        .create_order(order_request("k", "third", &[("MEMO-1", 2)]))
        .await
        .expect_err("still remembered as sold out");
    assert_eq!(from_memo.message(), from_inventory.message());
    assert_eq!(Shortage::from_status(&from_memo), Some(sold_out));
    let stock = stack.stock("MEMO-1").await;
    assert_eq!(
        (stock.available, stock.reserved),
        (5, 1),
        "the memo's refusal reserved nothing"
    );
    // The key is claimed before the memo is asked: a retry of the order that got the last unit
    // is answered that order, not "sold out".
    let retried = stack
        .create_order(order_request("k", "first", &[("MEMO-1", 1)]))
        .await
        .expect("the retry of a placed order");
    assert_eq!(retried.order_id, last_unit.order_id);
}

/// With the default memo, stock that comes back is sold again moments later.
#[tokio::test]
async fn stock_that_comes_back_is_sold_again_once_the_memo_expires() {
    let stack = Stack::start().await;
    stack.set_stock("MEMO-2", 0, 100).await;
    let refused = stack
        .create_order(order_request("k", "buyer", &[("MEMO-2", 1)]))
        .await
        .expect_err("sold out");
    assert_status("sold out", &refused, Code::FailedPrecondition, "MEMO-2");
    stack.set_stock("MEMO-2", 1, 100).await;
    stack
        .create_order_eventually(
            "the returned unit sold",
            order_request("k", "buyer", &[("MEMO-2", 1)]),
        )
        .await;
    let stock = stack.stock("MEMO-2").await;
    assert_eq!((stock.available, stock.reserved), (0, 1));
}

#[tokio::test]
async fn lost_stock_counters_are_rebuilt_from_postgres() {
    let stack = Stack::start().await;
    stack.set_stock("LOST-1", 5, 100).await;
    stack
        .create_order(order_request("k1", "erin", &[("LOST-1", 2)]))
        .await
        .expect("an order before the loss");
    // Redis loses this SKU's counters (only this test's key: shared data stays untouched).
    let mut redis = stack.redis.clone();
    let _: i64 = redis
        .del(stack.redis_key(&["stock", "LOST-1"]))
        .await
        .unwrap();

    // The next order rebuilds them from PostgreSQL, which counts the first order's units.
    stack
        .create_order(order_request("k2", "erin", &[("LOST-1", 3)]))
        .await
        .expect("an order after the loss");
    let refused = stack
        .create_order(order_request("k3", "erin", &[("LOST-1", 1)]))
        .await
        .unwrap_err();
    assert_status(
        "sold out",
        &refused,
        Code::FailedPrecondition,
        "available 0",
    );
    let stock = stack.stock("LOST-1").await;
    assert_eq!((stock.available, stock.reserved), (0, 5));
    stack.wait_for_persisted_orders(2).await;
}

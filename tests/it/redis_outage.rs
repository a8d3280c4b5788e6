//! With Redis gone, persisted orders stay readable from PostgreSQL, and CreateOrder and status
//! changes answer UNAVAILABLE without changing or publishing anything (a change that could not
//! mark the cache could leave it stale). Uses a Redis of its own: the shared one stays up.

use orderflow_proto::topics::ORDER_CREATED;
use orderflow_tests::private::PrivateRedis;
use orderflow_tests::stack::{Options, Stack};
use orderflow_tests::{assert_status, order_request};
use tonic::Code;

#[tokio::test]
async fn without_redis_reads_fall_back_to_postgres_and_orders_are_refused() {
    let mut redis = PrivateRedis::start().await;
    let stack = Stack::start_with(Options {
        redis_url: Some(redis.url.clone()),
        ..Options::default()
    })
    .await;
    stack.set_stock("SKU-X", 5, 300).await;
    let created = stack
        .create_order(order_request("before", "grace", &[("SKU-X", 1)]))
        .await
        .expect("an order while Redis is up");
    stack.wait_for_persisted_orders(1).await;

    redis.kill().await;
    let read = stack
        .get_order(&created.order_id)
        .await
        .expect("GetOrder answers from PostgreSQL without Redis");
    assert_eq!(read, created);

    let refused = stack.pay_order(&created, "p").await.unwrap_err();
    assert_status("pay without Redis", &refused, Code::Unavailable, "Redis");
    let status: String = sqlx::query_scalar("SELECT status FROM orders")
        .fetch_one(&stack.db)
        .await
        .expect("reading the order's status");
    assert_eq!(status, "PENDING", "nothing changed");
    assert_eq!(stack.rows("order_outbox").await, 0);

    let refused = stack
        .create_order(order_request("during", "grace", &[("SKU-X", 1)]))
        .await
        .unwrap_err();
    assert_status("Redis down", &refused, Code::Unavailable, "Redis");
    assert_eq!(stack.published(ORDER_CREATED).await, 1, "nothing published");
    assert_eq!(stack.persisted_orders().await, 1);
    stack.stop().await;
}

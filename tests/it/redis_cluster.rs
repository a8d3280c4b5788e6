//! The same inventory code against a 3-master Redis Cluster started for this test: every key of
//! a deployment shares one hash tag, so the multi-key scripts, pipelines and locks work there
//! as on a single Redis.

use futures::future::join_all;
use orderflow_lock::{LockSettings, Locks};
use orderflow_proto::inventory::v1::{BatchGetStockRequest, CommitRequest};
use orderflow_tests::assert_status;
use orderflow_tests::inventory::{reserve_request, InventoryOptions, InventoryStack};
use orderflow_tests::locking::assert_mutual_exclusion;
use orderflow_tests::orders;
use orderflow_tests::private::PrivateRedisCluster;
use tonic::Code;

#[tokio::test]
async fn inventory_and_locks_work_on_a_redis_cluster() {
    let cluster = PrivateRedisCluster::start().await;
    let stack = InventoryStack::start(InventoryOptions {
        processes: 2,
        redis_url: Some(cluster.seeds.clone()),
        redis_cluster: true,
        ..InventoryOptions::default()
    })
    .await;
    stack.set_stock("CL-HOT", 20, 100).await;
    stack.set_stock("CL-SIDE", 100, 50).await;

    let answers = join_all((0..200).map(|i| {
        let mut client = stack.client(i);
        let request = if i % 2 == 0 {
            reserve_request(&[("CL-HOT", 1)])
        } else {
            reserve_request(&[("CL-SIDE", 1), ("CL-HOT", 1)])
        };
        async move { client.reserve(request).await }
    }))
    .await;
    let mut reserved = Vec::new();
    for answer in answers {
        match answer {
            Ok(answer) => reserved.push(answer.into_inner().reservation.expect("a reservation")),
            Err(status) => {
                assert_status("reserve", &status, Code::FailedPrecondition, "insufficient")
            }
        }
    }
    assert_eq!(reserved.len(), 20);
    let pairs = reserved.iter().filter(|r| r.items.len() == 2).count() as i64;

    let committed = &reserved[0].order_id;
    stack
        .client(1)
        .commit(CommitRequest {
            order_id: committed.clone(),
        })
        .await
        .expect("Commit");
    let hot_sold = i64::from(reserved[0].items.iter().any(|item| item.sku == "CL-HOT"));
    assert_eq!(
        stack.durable_counters("CL-HOT").await,
        [0, 20 - hot_sold, hot_sold]
    );
    assert_eq!(
        stack.redis_counters("CL-HOT").await,
        Some([0, 20 - hot_sold, hot_sold])
    );
    let side = stack.durable_counters("CL-SIDE").await;
    assert_eq!(side[0] + side[1] + side[2], 100);
    assert_eq!(side[1] + side[2], pairs);

    // A batch read is one pipeline: its keys share the slot.
    let batch = stack
        .client(0)
        .batch_get_stock(BatchGetStockRequest {
            skus: vec!["CL-HOT".into(), "CL-SIDE".into(), "CL-NONE".into()],
        })
        .await
        .expect("BatchGetStock")
        .into_inner();
    assert_eq!(batch.stocks.len(), 2);
    assert_eq!(batch.missing_skus, ["CL-NONE"]);
    assert_eq!(stack.refusals().await, 0);

    let locks = Locks::new(
        stack.redis.clone(),
        &stack.redis_args.redis_key_prefix,
        LockSettings {
            ttl: std::time::Duration::from_secs(5),
            wait: std::time::Duration::from_secs(30),
        },
    );
    let counter = stack.redis_args.key(&["lock-test-counter"]);
    assert_mutual_exclusion(&locks, &stack.redis, &counter).await;
}

#[tokio::test]
async fn the_order_lifecycle_works_on_a_redis_cluster() {
    use orderflow_proto::order::v1::{BatchGetOrdersRequest, OrderStatus, WatchOrderRequest};
    use orderflow_tests::order_request;
    use orderflow_tests::stack::{Options, Stack};

    let cluster = PrivateRedisCluster::start().await;
    let stack = Stack::start_with(Options {
        redis_url: Some(cluster.seeds.clone()),
        redis_cluster: true,
        ..Options::default()
    })
    .await;
    stack.set_stock("CL-ORDER", 10, 250).await;
    let request = order_request("cluster-key", "quinn", &[("CL-ORDER", 2)]);
    let order = stack
        .create_order(request.clone())
        .await
        .expect("CreateOrder");
    assert_eq!(
        stack.create_order(request).await.unwrap(),
        order,
        "the key holds"
    );
    let mut client = stack.order.clone();
    let mut watch = client
        .watch_order(WatchOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let paid = orders::pay(&mut client, &order, "p")
        .await
        .expect("PayOrder");
    assert_eq!(paid.status(), OrderStatus::Paid);
    let read = orders::get(&mut client, &order.order_id)
        .await
        .expect("GetOrder");
    assert_eq!(read, paid);
    let batch = client
        .batch_get_orders(BatchGetOrdersRequest {
            order_ids: vec![order.order_id.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.orders, std::slice::from_ref(&paid));
    assert_eq!(watch.message().await.unwrap().unwrap().order, Some(order));
    assert_eq!(watch.message().await.unwrap().unwrap().order, Some(paid));
    let stock = stack.stock("CL-ORDER").await;
    assert_eq!((stock.available, stock.reserved, stock.sold), (8, 0, 2));
    stack.stop().await;
}

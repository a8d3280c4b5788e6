//! Crashes and outages in the middle of a stream of orders: nothing acknowledged is lost, no
//! effect is applied twice, stock counts agree, no notification is sent twice.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use orderflow_proto::order::v1::Order;
use orderflow_proto::topics;
use orderflow_tests::pipeline::{consumer_status, WorkerProcess};
use orderflow_tests::private::PrivateBroker;
use orderflow_tests::stack::{Options, Stack};
use orderflow_tests::{eventually, order_request};
use tonic::Code;
use uuid::Uuid;

const SKUS: [&str; 4] = ["C-0", "C-1", "C-2", "C-3"];
const INITIAL_STOCK: i64 = 10_000;
/// The worker's topics have two partitions each.
const EVERY_PARTITION: usize = 2 * topics::ALL.len();

/// Order `index`: its SKU, quantity and whether it gets paid (three in four do).
fn plan(index: usize) -> (&'static str, i64, bool) {
    (
        SKUS[index % SKUS.len()],
        1 + (index % 3) as i64,
        index % 4 != 0,
    )
}

async fn place_and_maybe_pay(stack: &Stack, index: usize) -> Order {
    let (sku, quantity, pay) = plan(index);
    let order = stack
        .create_order_eventually(
            "an order",
            order_request(
                &format!("crash-{index}"),
                &format!("buyer-{}", index % 50),
                &[(sku, quantity)],
            ),
        )
        .await;
    if pay {
        stack
            .pay_order(&order, &format!("pay-{index}"))
            .await
            .expect("PayOrder");
    }
    order
}

/// What the topics held once the pipeline drained.
struct Drained {
    /// Distinct events applied by the worker.
    applied: i64,
    /// Orders recorded voided (their stock given back before their event was applied).
    voided: i64,
}

/// Waits until the outbox is empty, the worker has committed everything on its topics and the
/// settlements and notifications are done. Kafka is at-least-once: a topic may hold an event
/// twice (an ack lost after the broker wrote it) and the event of a placement that answered an
/// error, so "drained" is the worker's committed lag reaching 0 after the last publish, not a
/// message count.
async fn wait_for_the_pipeline_to_drain(stack: &Stack, worker: SocketAddr) -> Drained {
    stack.wait_for_outbox_drained().await;
    let all_published = SystemTime::now();
    // Printed as it changes, so a timeout shows whether the worker lacked partitions or lagged.
    let last_seen = Mutex::new(None);
    let status = eventually(
        "the worker's lag to reach 0",
        Duration::from_secs(120),
        || async {
            let status = consumer_status(worker).await;
            let seen = (
                status.partitions.len(),
                status.total_lag,
                status.messages_applied,
            );
            if last_seen.lock().expect("not poisoned").replace(seen) != Some(seen) {
                println!("draining: {seen:?} (partitions, lag, applied)");
            }
            let reported_after_publishing = status
                .reported_at
                .and_then(|at| SystemTime::try_from(at).ok())
                .is_some_and(|at| at > all_published);
            // Every partition: lag 0 over some of them says nothing of the others, which a
            // killed predecessor may still hold until the coordinator drops it.
            (reported_after_publishing
                && status.total_lag == 0
                && status.partitions.len() == EVERY_PARTITION)
                .then_some(status)
        },
    )
    .await;
    println!(
        "after the crashes: lag {}, {} partitions, this worker applied {} messages in {} batches",
        status.total_lag,
        status.partitions.len(),
        status.messages_applied,
        status.batches_applied
    );
    let applied = stack.rows("processed_events").await;
    let created = stack.published(topics::ORDER_CREATED).await;
    let paid = stack.published(topics::ORDER_PAID).await;
    let published = created + paid;
    // Where a shortfall is, should there be one: per topic, what the worker recorded against
    // what the topic holds (duplicates included), and the orders and payments in PostgreSQL.
    let by_topic: Vec<(String, i64)> =
        sqlx::query_as("SELECT topic, count(*) FROM processed_events GROUP BY topic ORDER BY 1")
            .fetch_all(&stack.db)
            .await
            .expect("processed events by topic");
    println!(
        "processed events by topic {by_topic:?}; published order-created {created}, order-paid \
         {paid}; orders {}, paid orders {}",
        count(stack, "SELECT count(*) FROM orders").await,
        count(
            stack,
            "SELECT count(*) FROM orders WHERE payment_id IS NOT NULL"
        )
        .await,
    );
    assert!(
        published >= applied,
        "{applied} events applied but only {published} published"
    );
    eventually("every settlement done", Duration::from_secs(60), || async {
        (stack.rows("stock_settlements").await == 0).then_some(())
    })
    .await;
    // Printed as it changes, so a timeout shows where notify-svc's consumer stood.
    let last_seen = Mutex::new(None);
    eventually(
        "every notification stored",
        Duration::from_secs(120),
        || async {
            let stored = stack.rows("notifications").await;
            let notify = consumer_status(stack.addresses.notify).await;
            let seen = (stored, notify.partitions.len(), notify.total_lag);
            if last_seen.lock().expect("not poisoned").replace(seen) != Some(seen) {
                println!("notifications: {seen:?} (stored, notify-svc's partitions, its lag) of {applied}");
            }
            (stored == applied).then_some(())
        },
    )
    .await;
    let voided = count(stack, "SELECT count(*) FROM orders WHERE voided").await;
    Drained { applied, voided }
}

async fn count(stack: &Stack, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&stack.db)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
}

#[tokio::test]
async fn killing_the_worker_twice_loses_and_duplicates_nothing() {
    // A broker of its own: the drain below must not depend on what the rest of the suite left
    // on the shared one (tansu slows as it fills, and its group coordinator keeps every group).
    let broker = PrivateBroker::start().await;
    let stack = Stack::start_with(Options {
        external_worker: true,
        kafka_brokers: Some(broker.address.clone()),
        ..Options::default()
    })
    .await;
    for sku in SKUS {
        stack.set_stock(sku, INITIAL_STOCK, 100).await;
    }
    let total = 2_000;
    let acknowledged = AtomicUsize::new(0);
    let first = WorkerProcess::start(&stack).await;

    let driver = futures::stream::iter(0..total)
        .map(|index| {
            let stack = &stack;
            let acknowledged = &acknowledged;
            async move {
                let order = place_and_maybe_pay(stack, index).await;
                acknowledged.fetch_add(1, Ordering::Relaxed);
                (index, order)
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>();
    let crashes = async {
        let mut worker = first;
        for at in [total / 3, 2 * total / 3] {
            eventually("orders to flow", Duration::from_secs(300), || async {
                (acknowledged.load(Ordering::Relaxed) >= at).then_some(())
            })
            .await;
            // Killed while it applies: this test is about what a crash mid-batch leaves behind.
            // Kills in the middle of a rebalance, which tansu 0.6 can leave with partitions
            // nobody holds until a member rejoins, are tests/it/consumer_healing.rs's and
            // chaos.rs's. Owning every partition means the group has dropped its dead
            // predecessor: no rebalance pending.
            eventually(
                "the worker to own every partition and apply",
                Duration::from_secs(120),
                || async {
                    let status = consumer_status(worker.address).await;
                    (status.partitions.len() == EVERY_PARTITION && status.messages_applied > 0)
                        .then_some(())
                },
            )
            .await;
            worker.kill().await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            worker = WorkerProcess::start(&stack).await;
        }
        worker
    };
    let (placed, worker) = tokio::join!(driver, crashes);
    assert_eq!(placed.len(), total);

    let paid = (0..total).filter(|index| plan(*index).2).count();
    let drained = wait_for_the_pipeline_to_drain(&stack, worker.address).await;
    // A placement that answered an error (an ack lost or late under load) was resumed by its
    // buyer's retry: the same order and the same event, never a second one, never voided.
    assert_eq!(drained.voided, 0, "orders voided");
    assert_eq!(
        drained.applied,
        i64::try_from(total + paid).unwrap_or(i64::MAX),
        "one event per placement and per payment"
    );

    // Every acknowledged order exactly once, with the right status.
    let ids: Vec<Uuid> = placed
        .iter()
        .map(|(_, order)| Uuid::parse_str(&order.order_id).expect("an order id"))
        .collect();
    assert_eq!(
        stack.persisted_orders().await,
        i64::try_from(total).unwrap_or(i64::MAX)
    );
    let statuses: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT order_id, status FROM orders WHERE order_id = ANY($1)")
            .bind(&ids)
            .fetch_all(&stack.db)
            .await
            .expect("the orders' statuses");
    assert_eq!(statuses.len(), total);
    let paid_ids: std::collections::HashSet<Uuid> = placed
        .iter()
        .filter(|(index, _)| plan(*index).2)
        .map(|(_, order)| Uuid::parse_str(&order.order_id).expect("an order id"))
        .collect();
    for (order_id, status) in &statuses {
        let expected = if paid_ids.contains(order_id) {
            "PAID"
        } else {
            "PENDING"
        };
        assert_eq!(status, expected, "order {order_id}");
    }
    assert_eq!(
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM order_status_history WHERE order_id = ANY($1)"
        )
        .bind(&ids)
        .fetch_one(&stack.db)
        .await
        .expect("counting history rows"),
        i64::try_from(total + paid).unwrap_or(i64::MAX),
        "one history row per placement and per payment"
    );

    // Stock: sold = paid units, reserved = unpaid units, nothing lost, in PostgreSQL and Redis.
    for (position, sku) in SKUS.iter().enumerate() {
        let (mut sold, mut reserved) = (0, 0);
        for index in (0..total).filter(|index| index % SKUS.len() == position) {
            let (_, quantity, pay) = plan(index);
            if pay {
                sold += quantity;
            } else {
                reserved += quantity;
            }
        }
        let durable: (i64, i64, i64) =
            sqlx::query_as("SELECT available, reserved, sold FROM skus WHERE sku = $1")
                .bind(sku)
                .fetch_one(&stack.db)
                .await
                .expect("the SKU's row");
        assert_eq!(
            durable,
            (INITIAL_STOCK - sold - reserved, reserved, sold),
            "{sku} in PostgreSQL"
        );
        let stock = stack.stock(sku).await;
        assert_eq!(
            (stock.available, stock.reserved, stock.sold),
            durable,
            "{sku}: GetStock agrees with PostgreSQL"
        );
    }

    // One notification per event, none twice.
    assert_eq!(
        count(
            &stack,
            "SELECT count(*) FROM (SELECT order_id, event_type FROM notifications \
             GROUP BY order_id, event_type HAVING count(*) > 1) AS twice"
        )
        .await,
        0
    );

    // SIGTERM: the worker finishes, commits and leaves; its successor has nothing to replay.
    assert!(
        worker.terminate().await,
        "consumer-worker exited uncleanly on SIGTERM"
    );
    let successor = WorkerProcess::start(&stack).await;
    let status = eventually(
        "the successor to own and measure its partitions",
        Duration::from_secs(60),
        || async {
            let status = consumer_status(successor.address).await;
            (status.total_lag >= 0 && status.partitions.len() == EVERY_PARTITION).then_some(status)
        },
    )
    .await;
    assert_eq!(status.total_lag, 0, "offsets were committed on shutdown");
    assert_eq!(status.messages_applied, 0, "nothing was replayed");
    assert!(successor.terminate().await);
    stack.stop().await;
}

#[tokio::test]
async fn a_broker_outage_refuses_orders_and_loses_none_acknowledged() {
    let mut broker = PrivateBroker::start().await;
    let stack = Stack::start_with(Options {
        kafka_brokers: Some(broker.address.clone()),
        kafka_ack_timeout_ms: Some(2_000),
        create_timeout_ms: Some(6_000),
        ..Options::default()
    })
    .await;
    for sku in SKUS {
        stack.set_stock(sku, INITIAL_STOCK, 100).await;
    }
    let acknowledged = Mutex::new(Vec::new());
    let unavailable = AtomicUsize::new(0);
    let stop = tokio_util::sync::CancellationToken::new();

    // Each buyer retries the same request (same idempotency key) after UNAVAILABLE until it is
    // answered, as the API asks: an order whose ack was lost is then the one it hears of.
    let buyers = (0..4).map(|buyer| {
        let (stack, acknowledged, unavailable, stop) = (&stack, &acknowledged, &unavailable, &stop);
        async move {
            let mut index = 0;
            while !stop.is_cancelled() {
                let (sku, quantity, _) = plan(index);
                let request = order_request(
                    &format!("b{buyer}-{index}"),
                    &format!("buyer-{buyer}"),
                    &[(sku, quantity)],
                );
                index += 1;
                loop {
                    match stack.create_order(request.clone()).await {
                        Ok(order) => {
                            acknowledged
                                .lock()
                                .expect("the acknowledged list")
                                .push(Uuid::parse_str(&order.order_id).expect("an order id"));
                            break;
                        }
                        Err(status) if status.code() == Code::Unavailable => {
                            unavailable.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(status) => panic!("CreateOrder answered {status:?}"),
                    }
                }
            }
        }
    });
    let outage = async {
        let acked = || acknowledged.lock().expect("the acknowledged list").len();
        eventually(
            "orders before the outage",
            Duration::from_secs(120),
            || async { (acked() >= 100).then_some(()) },
        )
        .await;
        broker.kill().await;
        let refused_before = unavailable.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(
            unavailable.load(Ordering::Relaxed) > refused_before,
            "CreateOrder answered UNAVAILABLE while the broker was down"
        );
        broker.restart().await;
        let after_restart = acked();
        eventually(
            "orders after the outage",
            Duration::from_secs(120),
            || async { (acked() >= after_restart + 100).then_some(()) },
        )
        .await;
        stop.cancel();
    };
    tokio::join!(futures::future::join_all(buyers), outage);

    let acknowledged = acknowledged.into_inner().expect("the acknowledged list");
    eventually(
        "every acknowledged order in PostgreSQL",
        Duration::from_secs(120),
        || async {
            let present: i64 =
                sqlx::query_scalar("SELECT count(*) FROM orders WHERE order_id = ANY($1)")
                    .bind(&acknowledged)
                    .fetch_one(&stack.db)
                    .await
                    .expect("counting orders");
            (present == i64::try_from(acknowledged.len()).unwrap_or(i64::MAX)).then_some(())
        },
    )
    .await;
    // An order whose ack was lost is the one its buyer's retry answered: no live order nobody
    // heard of.
    let unacknowledged_holding: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orders WHERE NOT (order_id = ANY($1)) AND NOT voided",
    )
    .bind(&acknowledged)
    .fetch_one(&stack.db)
    .await
    .expect("counting orders");
    assert_eq!(unacknowledged_holding, 0);
    // Placements given up before they sent their event give their units back once the log is
    // known to hold no order for them.
    for sku in SKUS {
        eventually(
            &format!("{sku}: the stock of the acknowledged orders only"),
            Duration::from_secs(60),
            || async {
                let (available, reserved, sold): (i64, i64, i64) =
                    sqlx::query_as("SELECT available, reserved, sold FROM skus WHERE sku = $1")
                        .bind(sku)
                        .fetch_one(&stack.db)
                        .await
                        .expect("the SKU's row");
                let held: i64 = sqlx::query_scalar(
                    "SELECT coalesce(sum(i.quantity), 0)::bigint FROM order_items i \
                 WHERE i.sku = $1 AND i.order_id = ANY($2)",
                )
                .bind(sku)
                .bind(&acknowledged)
                .fetch_one(&stack.db)
                .await
                .expect("summing held units");
                assert_eq!(
                    available + reserved + sold,
                    INITIAL_STOCK,
                    "{sku}: units appeared or vanished"
                );
                (reserved + sold == held).then_some(())
            },
        )
        .await;
    }
    stack.stop().await;
}

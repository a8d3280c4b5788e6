//! consumer-worker applies every event exactly once and in any order: each permutation of one
//! order's events ends in the same PostgreSQL state, poison lands on its dead-letter topic while
//! the worker goes on, two workers share the partitions, and a PostgreSQL outage only delays.

use std::collections::HashSet;
use std::time::Duration;

use orderflow_kafka::consume::dead_letter;
use orderflow_proto::events::v1::{
    OrderCancelled, OrderCompleted, OrderCreated, OrderPaid, OrderShipped,
};
use orderflow_proto::order::v1::{Order, OrderItem, OrderStatus};
use orderflow_proto::topics;
use orderflow_tests::inventory::reserve_request_for;
use orderflow_tests::pipeline::consumer_status;
use orderflow_tests::stack::{Options, Stack};
use orderflow_tests::{eventually, order_request};
use prost::Message;
use time::OffsetDateTime;
use uuid::Uuid;

/// One event of an order's life: its topic, id and encoding.
#[derive(Clone)]
struct Event {
    topic: &'static str,
    event_id: Uuid,
    payload: Vec<u8>,
}

/// The order after `version` changes, at fixed times so every order of a scenario is alike.
fn snapshot(order_id: Uuid, status: OrderStatus, version: i64, start: OffsetDateTime) -> Order {
    let at = |seconds: i64| {
        Some(orderflow_runtime::timestamp::to_proto(
            start + time::Duration::seconds(seconds),
        ))
    };
    Order {
        order_id: order_id.to_string(),
        user_id: "perm".into(),
        items: vec![OrderItem {
            sku: "P-1".into(),
            quantity: 1,
            unit_price_cents: 990,
        }],
        total_cents: 990,
        currency: "CNY".into(),
        status: status.into(),
        created_at: at(0),
        updated_at: at(version - 1),
        expires_at: at(900),
        version,
        ..Order::default()
    }
}

/// The events of an order that is paid, shipped and completed.
fn delivered_life(order_id: Uuid, start: OffsetDateTime) -> Vec<Event> {
    let id = order_id.to_string();
    let mut paid = snapshot(order_id, OrderStatus::Paid, 2, start);
    paid.payment_id = "pay-1".into();
    let mut shipped = snapshot(order_id, OrderStatus::Shipped, 3, start);
    shipped.payment_id = "pay-1".into();
    shipped.tracking_number = "SF-1".into();
    let mut completed = shipped.clone();
    completed.status = OrderStatus::Completed.into();
    completed.version = 4;
    completed.updated_at = snapshot(order_id, OrderStatus::Completed, 4, start).updated_at;
    vec![
        created_event(order_id, start),
        event(topics::ORDER_PAID, |event_id| OrderPaid {
            event_id,
            order_id: id.clone(),
            occurred_at: paid.updated_at,
            payment_id: "pay-1".into(),
            amount_cents: 990,
            order: Some(paid.clone()),
        }),
        event(topics::ORDER_SHIPPED, |event_id| OrderShipped {
            event_id,
            order_id: id.clone(),
            occurred_at: shipped.updated_at,
            tracking_number: "SF-1".into(),
            order: Some(shipped.clone()),
        }),
        event(topics::ORDER_COMPLETED, |event_id| OrderCompleted {
            event_id,
            order_id: id.clone(),
            occurred_at: completed.updated_at,
            order: Some(completed.clone()),
        }),
    ]
}

/// The events of an order that is cancelled (or expires, with `status` EXPIRED).
fn cancelled_life(order_id: Uuid, start: OffsetDateTime, status: OrderStatus) -> Vec<Event> {
    let reason = if status == OrderStatus::Expired {
        "expired"
    } else {
        "changed my mind"
    };
    let mut cancelled = snapshot(order_id, status, 2, start);
    cancelled.cancel_reason = reason.into();
    vec![
        created_event(order_id, start),
        event(topics::ORDER_CANCELLED, |event_id| OrderCancelled {
            event_id,
            order_id: order_id.to_string(),
            occurred_at: cancelled.updated_at,
            reason: reason.into(),
            order: Some(cancelled.clone()),
        }),
    ]
}

fn created_event(order_id: Uuid, start: OffsetDateTime) -> Event {
    let order = snapshot(order_id, OrderStatus::Pending, 1, start);
    event(topics::ORDER_CREATED, |event_id| OrderCreated {
        event_id,
        order_id: order_id.to_string(),
        occurred_at: order.created_at,
        order: Some(order.clone()),
        idempotency_key: format!("key-{order_id}"),
    })
}

fn event<M: Message>(topic: &'static str, build: impl FnOnce(String) -> M) -> Event {
    let event_id = Uuid::now_v7();
    Event {
        topic,
        event_id,
        payload: build(event_id.to_string()).encode_to_vec(),
    }
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut all = Vec::new();
    for shorter in permutations(n - 1) {
        for position in 0..=shorter.len() {
            let mut one = shorter.clone();
            one.insert(position, n - 1);
            all.push(one);
        }
    }
    all
}

/// The events of one order's life, given its id and start.
type Life = fn(Uuid, OffsetDateTime) -> Vec<Event>;

/// An order and its events in the order they are to arrive.
type OrderArrivals = (Uuid, Vec<Event>);

/// An order's final state in PostgreSQL, without its id: orders of one scenario must agree.
type FinalState = (
    String,
    i64,
    OffsetDateTime,
    Option<String>,
    Option<String>,
    Option<String>,
    Vec<(i64, String, Option<String>, OffsetDateTime)>,
);

async fn final_state(stack: &Stack, order_id: Uuid) -> FinalState {
    let (status, version, updated_at, payment_id, tracking_number, cancel_reason): (
        String,
        i64,
        OffsetDateTime,
        Option<String>,
        Option<String>,
        Option<String>,
    ) = sqlx::query_as(
        "SELECT status, version, updated_at, payment_id, tracking_number, cancel_reason \
         FROM orders WHERE order_id = $1",
    )
    .bind(order_id)
    .fetch_one(&stack.db)
    .await
    .expect("the order's row");
    let history = sqlx::query_as(
        "SELECT version, status, reason, changed_at FROM order_status_history \
         WHERE order_id = $1 ORDER BY version",
    )
    .bind(order_id)
    .fetch_all(&stack.db)
    .await
    .expect("the order's history");
    (
        status,
        version,
        updated_at,
        payment_id,
        tracking_number,
        cancel_reason,
        history,
    )
}

#[tokio::test]
async fn every_arrival_order_of_an_orders_events_ends_in_the_same_state() {
    let stack = Stack::start().await;
    stack.set_stock("P-1", 100, 990).await;
    let start = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("whole seconds");

    // Every permutation of each life, one order per permutation.
    let mut scenarios: Vec<(&str, Vec<OrderArrivals>)> = Vec::new();
    let lives: [(&str, Life); 3] = [
        ("delivered", delivered_life),
        ("cancelled", |id, start| {
            cancelled_life(id, start, OrderStatus::Cancelled)
        }),
        ("expired", |id, start| {
            cancelled_life(id, start, OrderStatus::Expired)
        }),
    ];
    for (name, life) in lives {
        let template_len = life(Uuid::now_v7(), start).len();
        let mut orders = Vec::new();
        for permutation in permutations(template_len) {
            let order_id = Uuid::now_v7();
            let events = life(order_id, start);
            orders.push((
                order_id,
                permutation
                    .iter()
                    .map(|index| events[*index].clone())
                    .collect(),
            ));
        }
        scenarios.push((name, orders));
    }
    // Every order holds stock, as every order the API publishes does.
    for (_, orders) in &scenarios {
        for (order_id, _) in orders {
            stack
                .inventory
                .clone()
                .reserve(reserve_request_for(&order_id.to_string(), &[("P-1", 1)]))
                .await
                .expect("Reserve");
        }
    }

    // Round k publishes the k-th event of every permutation and waits until all are applied,
    // so each order's events arrive exactly in its permutation's order.
    let rounds = scenarios
        .iter()
        .flat_map(|(_, orders)| orders.iter().map(|(_, events)| events.len()))
        .max()
        .unwrap_or_default();
    for round in 0..rounds {
        let batch: Vec<(Uuid, &Event)> = scenarios
            .iter()
            .flat_map(|(_, orders)| orders.iter())
            .filter_map(|(order_id, events)| events.get(round).map(|event| (*order_id, event)))
            .collect();
        let messages: Vec<(&str, String, Vec<u8>)> = batch
            .iter()
            .map(|(order_id, event)| (event.topic, order_id.to_string(), event.payload.clone()))
            .collect();
        stack.publish_all(&messages).await;
        let ids: Vec<Uuid> = batch.iter().map(|(_, event)| event.event_id).collect();
        stack.wait_for_events_applied(&ids).await;
    }

    for (name, orders) in &scenarios {
        let reference = final_state(&stack, orders[0].0).await;
        for (order_id, events) in orders {
            let order = final_state(&stack, *order_id).await;
            let arrival: Vec<&str> = events.iter().map(|event| event.topic).collect();
            assert_eq!(order, reference, "{name}: events arrived as {arrival:?}");
        }
        let (status, version, _, payment_id, tracking, reason, history) = reference;
        let expected = match *name {
            "delivered" => (
                "COMPLETED",
                4,
                Some("pay-1".to_owned()),
                Some("SF-1".to_owned()),
                None,
            ),
            "cancelled" => (
                "CANCELLED",
                2,
                None,
                None,
                Some("changed my mind".to_owned()),
            ),
            _ => ("EXPIRED", 2, None, None, Some("expired".to_owned())),
        };
        assert_eq!(
            (status.as_str(), version, payment_id, tracking, reason),
            expected,
            "{name}"
        );
        let versions: Vec<i64> = history.iter().map(|row| row.0).collect();
        assert_eq!(
            versions,
            (1..=version).collect::<Vec<_>>(),
            "{name}: history"
        );
    }
    assert_eq!(stack.rows("parked_events").await, 0, "nothing left waiting");
    stack.stop().await;
}

#[tokio::test]
async fn poison_on_every_topic_is_dead_lettered_and_the_worker_goes_on() {
    let stack = Stack::start().await;
    stack.set_stock("D-1", 10, 100).await;

    // Bytes that are no event, on every topic.
    let garbage = b"\xff\xffnot protobuf".to_vec();
    let poison: Vec<(&str, String, Vec<u8>)> = topics::ALL
        .iter()
        .map(|topic| (*topic, format!("poison-{topic}"), garbage.clone()))
        .collect();
    stack.publish_all(&poison).await;

    // PostgreSQL refuses an order with a line of quantity 0 (a CHECK): in one partition between
    // two good orders, so the batch is refused and retried message by message.
    let start = OffsetDateTime::now_utc();
    let key = "same-partition".to_owned();
    let good_before = created_event(Uuid::now_v7(), start);
    let good_after = created_event(Uuid::now_v7(), start);
    let refused_id = Uuid::now_v7();
    let mut refused_order = snapshot(refused_id, OrderStatus::Pending, 1, start);
    refused_order.items[0].quantity = 0;
    let refused = event(topics::ORDER_CREATED, |event_id| OrderCreated {
        event_id,
        order_id: refused_id.to_string(),
        occurred_at: refused_order.created_at,
        order: Some(refused_order.clone()),
        idempotency_key: "refused".into(),
    });
    stack
        .publish_all(&[
            (
                topics::ORDER_CREATED,
                key.clone(),
                good_before.payload.clone(),
            ),
            (topics::ORDER_CREATED, key.clone(), refused.payload.clone()),
            (
                topics::ORDER_CREATED,
                key.clone(),
                good_after.payload.clone(),
            ),
        ])
        .await;
    stack
        .wait_for_events_applied(&[good_before.event_id, good_after.event_id])
        .await;

    let group = consumer_status(stack.workers[0]).await.group_id;
    for topic in topics::ALL {
        let expected = if *topic == topics::ORDER_CREATED {
            2
        } else {
            1
        };
        let letters = stack.dead_letters(topic, &group, expected).await;
        let garbage_letter = letters
            .iter()
            .find(|letter| letter.payload == garbage)
            .unwrap_or_else(|| panic!("{topic}: the garbage is not on its dead-letter topic"));
        assert_eq!(
            garbage_letter.key.as_deref(),
            Some(format!("poison-{topic}").as_bytes()),
            "{topic}: the key is kept"
        );
        assert_eq!(
            garbage_letter.header(dead_letter::TOPIC_HEADER),
            Some(stack.topic(topic).as_str())
        );
        assert!(garbage_letter
            .header(dead_letter::REASON_HEADER)
            .is_some_and(|reason| reason.contains("undecodable")));
        for header in [
            dead_letter::PARTITION_HEADER,
            dead_letter::OFFSET_HEADER,
            dead_letter::GROUP_HEADER,
            dead_letter::FAILED_AT_HEADER,
        ] {
            assert!(garbage_letter.header(header).is_some(), "{topic}: {header}");
        }
        if *topic == topics::ORDER_CREATED {
            let refused_letter = letters
                .iter()
                .find(|letter| letter.payload == refused.payload)
                .expect("the refused order is on the dead-letter topic");
            assert!(
                refused_letter
                    .header(dead_letter::REASON_HEADER)
                    .is_some_and(|reason| reason.contains("order_items")),
                "{:?}",
                refused_letter.header(dead_letter::REASON_HEADER)
            );
        }
    }
    assert_eq!(
        stack.persisted_orders().await,
        2,
        "both good orders, not the bad one"
    );
    let status = consumer_status(stack.workers[0]).await;
    assert_eq!(status.messages_dead_lettered, 6);
    stack.stop().await;
}

#[tokio::test]
async fn two_workers_share_the_partitions_and_apply_each_event_once() {
    let stack = Stack::start_with(Options {
        extra_workers: 1,
        ..Options::default()
    })
    .await;
    // Both members own partitions, none of them twice, before any event flows. Each status is
    // librdkafka's statistics, refreshed once per lag-report interval, so a snapshot taken across
    // a rebalance can still list what a member just gave up: only an overlap that outlasts the
    // wait is two owners.
    let mut last_seen = Vec::new();
    let converged = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let mut owned: Vec<HashSet<(String, i32)>> = Vec::new();
            for address in &stack.workers {
                let status = consumer_status(*address).await;
                owned.push(
                    status
                        .partitions
                        .iter()
                        .map(|partition| (partition.topic.clone(), partition.partition))
                        .collect(),
                );
            }
            let every_member_owns = owned.iter().all(|partitions| !partitions.is_empty());
            if every_member_owns && owned[0].is_disjoint(&owned[1]) {
                return;
            }
            last_seen = owned;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        converged.is_ok(),
        "after 60 s the workers still do not each own partitions of their own: {last_seen:?}"
    );

    stack.set_stock("T-1", 1_000, 100).await;
    let orders = 200;
    let mut placed = Vec::new();
    for index in 0..orders {
        let order = stack
            .create_order_eventually(
                "an order",
                order_request(
                    &format!("k{index}"),
                    &format!("user-{index}"),
                    &[("T-1", 1)],
                ),
            )
            .await;
        placed.push(order);
    }
    for order in placed.iter().step_by(2) {
        stack
            .pay_order(order, &format!("pay-{}", order.order_id))
            .await
            .expect("PayOrder");
    }
    stack.wait_for_outbox_drained().await;
    let published =
        stack.published(topics::ORDER_CREATED).await + stack.published(topics::ORDER_PAID).await;
    assert_eq!(published, orders + orders / 2);
    eventually("every event applied", Duration::from_secs(60), || async {
        (stack.rows("processed_events").await == published).then_some(())
    })
    .await;
    assert_eq!(stack.persisted_orders().await, orders);
    let mut applied_by = Vec::new();
    for address in &stack.workers {
        applied_by.push(consumer_status(*address).await.messages_applied);
    }
    assert!(
        applied_by.iter().all(|applied| *applied > 0),
        "both workers applied events: {applied_by:?}"
    );
    stack.stop().await;
}

#[tokio::test]
async fn the_worker_waits_out_a_postgres_outage_and_loses_nothing() {
    let stack = Stack::start_with(Options {
        worker_database_link: true,
        ..Options::default()
    })
    .await;
    stack.set_stock("O-1", 100, 100).await;
    let link = stack
        .worker_database_link
        .as_ref()
        .expect("the worker's database link");
    let place = |index: usize| {
        stack.create_order_eventually(
            "an order",
            order_request(&format!("o{index}"), "olga", &[("O-1", 1)]),
        )
    };
    for index in 0..10 {
        place(index).await;
    }
    stack.wait_for_persisted_orders(10).await;

    // PostgreSQL unreachable for the worker (connections dropped, new ones refused) for 10 s,
    // while orders keep coming: the API does not need the worker.
    link.cut();
    for index in 10..40 {
        place(index).await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        stack.persisted_orders().await,
        10,
        "nothing was applied while the worker could not reach PostgreSQL"
    );
    link.restore();
    stack.wait_for_persisted_orders(40).await;
    assert_eq!(
        stack.rows("processed_events").await,
        stack.published(topics::ORDER_CREATED).await
    );
    stack.stop().await;
}

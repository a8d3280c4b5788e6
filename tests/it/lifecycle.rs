//! The order lifecycle through the gRPC API: every legal and illegal status change, payment
//! against cancellation, expiry, idempotency keys (also after Redis forgot them), reads that are
//! never stale, batch reads, pagination, live status, and caller deadlines.

use std::collections::HashSet;
use std::time::Duration;

use orderflow_proto::order::v1::{
    BatchGetOrdersRequest, ListOrdersRequest, Order, OrderStatus, PayOrderRequest,
    WatchOrderRequest,
};
use orderflow_tests::orders::{cancel, complete, get, pay, ship, OrderClient as Client};
use orderflow_tests::stack::{Options, Stack};
use orderflow_tests::{assert_status, eventually, order_request};
use redis::AsyncCommands;
use tonic::Code;

async fn place(stack: &Stack, key: &str, user: &str, sku: &str, quantity: i64) -> Order {
    stack
        .create_order(order_request(key, user, &[(sku, quantity)]))
        .await
        .expect("CreateOrder")
}

async fn wait_for_stock(stack: &Stack, sku: &str, expected: (i64, i64, i64)) {
    eventually(
        &format!("{sku} at (available, reserved, sold) = {expected:?}"),
        Duration::from_secs(20),
        || async { (stack.durable_stock(sku).await == expected).then_some(()) },
    )
    .await;
    let redis = stack.stock(sku).await;
    assert_eq!(
        (redis.available, redis.reserved),
        (expected.0, expected.1),
        "Redis agrees with PostgreSQL on {sku}"
    );
}

#[tokio::test]
async fn every_status_change_and_every_refusal() {
    let stack = Stack::start().await;
    stack.set_stock("LIFE-1", 10, 250).await;
    let mut client = stack.order.clone();

    // The happy path, right after CreateOrder: consumer-worker may not have persisted it yet.
    let order = place(&stack, "k1", "erin", "LIFE-1", 2).await;
    assert_eq!((order.status(), order.version), (OrderStatus::Pending, 1));
    assert!(order.expires_at.is_some());
    let paid = pay(&mut client, &order, "pay-1").await.expect("PayOrder");
    assert_eq!((paid.status(), paid.version), (OrderStatus::Paid, 2));
    assert_eq!(paid.payment_id, "pay-1");
    wait_for_stock(&stack, "LIFE-1", (8, 0, 2)).await;

    // Repeats answer the same order; other details are refused.
    assert_eq!(pay(&mut client, &order, "pay-1").await.unwrap(), paid);
    let other = pay(&mut client, &order, "pay-2").await.unwrap_err();
    assert_status("second payment", &other, Code::FailedPrecondition, "pay-1");
    let mut wrong = order.clone();
    wrong.total_cents += 1;
    let amount = pay(&mut client, &wrong, "pay-1").await.unwrap_err();
    assert_status(
        "wrong amount",
        &amount,
        Code::InvalidArgument,
        "amount_cents",
    );

    for (case, refused) in [
        (
            "cancel a paid order",
            cancel(&mut client, &order.order_id, "changed my mind").await,
        ),
        (
            "complete a paid order",
            complete(&mut client, &order.order_id).await,
        ),
    ] {
        let status = refused.unwrap_err();
        assert_status(
            case,
            &status,
            Code::FailedPrecondition,
            "is PAID; it cannot become",
        );
    }
    let shipped = ship(&mut client, &order.order_id, "SF123").await.unwrap();
    assert_eq!(
        (shipped.status(), shipped.version),
        (OrderStatus::Shipped, 3)
    );
    assert_eq!(
        ship(&mut client, &order.order_id, "SF123").await.unwrap(),
        shipped
    );
    let reship = ship(&mut client, &order.order_id, "SF999")
        .await
        .unwrap_err();
    assert_status("reship", &reship, Code::FailedPrecondition, "SF123");
    let cancel_shipped = cancel(&mut client, &order.order_id, "changed my mind")
        .await
        .unwrap_err();
    assert_status(
        "cancel shipped",
        &cancel_shipped,
        Code::FailedPrecondition,
        "is SHIPPED; it cannot become CANCELLED",
    );
    let done = complete(&mut client, &order.order_id).await.unwrap();
    assert_eq!((done.status(), done.version), (OrderStatus::Completed, 4));
    assert_eq!(complete(&mut client, &order.order_id).await.unwrap(), done);
    // A payment repeated after the order moved on still answers the order.
    assert_eq!(pay(&mut client, &order, "pay-1").await.unwrap(), done);
    let reopen = ship(&mut client, &order.order_id, "SF777")
        .await
        .unwrap_err();
    assert_eq!(reopen.code(), Code::FailedPrecondition);
    let cancel_done = cancel(&mut client, &order.order_id, "changed my mind")
        .await
        .unwrap_err();
    assert_status(
        "cancel completed",
        &cancel_done,
        Code::FailedPrecondition,
        "is COMPLETED; it cannot become CANCELLED",
    );

    // PENDING → CANCELLED gives the stock back; nothing leaves CANCELLED.
    let second = place(&stack, "k2", "erin", "LIFE-1", 3).await;
    let skip = ship(&mut client, &second.order_id, "SF1")
        .await
        .unwrap_err();
    assert_status(
        "ship unpaid",
        &skip,
        Code::FailedPrecondition,
        "is PENDING; it cannot become SHIPPED",
    );
    let skip = complete(&mut client, &second.order_id).await.unwrap_err();
    assert_status(
        "complete unpaid",
        &skip,
        Code::FailedPrecondition,
        "is PENDING; it cannot become COMPLETED",
    );
    let cancelled = cancel(&mut client, &second.order_id, "changed my mind")
        .await
        .unwrap();
    assert_eq!(cancelled.status(), OrderStatus::Cancelled);
    assert_eq!(cancelled.cancel_reason, "changed my mind");
    assert_eq!(
        cancel(&mut client, &second.order_id, "changed my mind")
            .await
            .unwrap(),
        cancelled
    );
    wait_for_stock(&stack, "LIFE-1", (8, 0, 2)).await;
    let late_pay = pay(&mut client, &second, "pay-3").await.unwrap_err();
    assert_status(
        "pay cancelled",
        &late_pay,
        Code::FailedPrecondition,
        "is CANCELLED; it cannot become PAID",
    );
    for (case, refused) in [
        (
            "ship cancelled",
            ship(&mut client, &second.order_id, "SF2").await,
        ),
        (
            "complete cancelled",
            complete(&mut client, &second.order_id).await,
        ),
    ] {
        assert_status(
            case,
            &refused.unwrap_err(),
            Code::FailedPrecondition,
            "is CANCELLED",
        );
    }

    // Bad input names the field; unknown orders are NOT_FOUND.
    let unknown = uuid::Uuid::now_v7().to_string();
    assert_status(
        "unknown",
        &cancel(&mut client, &unknown, "changed my mind")
            .await
            .unwrap_err(),
        Code::NotFound,
        &unknown,
    );
    assert_status(
        "bad id",
        &cancel(&mut client, "nope", "changed my mind")
            .await
            .unwrap_err(),
        Code::InvalidArgument,
        "order_id",
    );
    let no_payment = pay(&mut client, &second, "").await.unwrap_err();
    assert_status(
        "no payment id",
        &no_payment,
        Code::InvalidArgument,
        "payment_id",
    );
    let no_tracking = ship(&mut client, &second.order_id, "").await.unwrap_err();
    assert_status(
        "no tracking",
        &no_tracking,
        Code::InvalidArgument,
        "tracking_number",
    );
    let long_reason = cancel(&mut client, &second.order_id, &"x".repeat(10_000))
        .await
        .unwrap_err();
    assert_status("long reason", &long_reason, Code::InvalidArgument, "reason");

    // History, events: one per change, all published.
    let history: Vec<(i64, String)> = sqlx::query_as(
        "SELECT version, status FROM order_status_history WHERE order_id = $1::uuid ORDER BY version",
    )
    .bind(&order.order_id)
    .fetch_all(&stack.db)
    .await
    .unwrap();
    let history: Vec<(i64, &str)> = history.iter().map(|(v, s)| (*v, s.as_str())).collect();
    assert_eq!(
        history,
        [
            (1, "PENDING"),
            (2, "PAID"),
            (3, "SHIPPED"),
            (4, "COMPLETED")
        ]
    );
    stack.wait_for_outbox_drained().await;
    for (topic, count) in [
        ("order-paid", 1),
        ("order-shipped", 1),
        ("order-completed", 1),
        ("order-cancelled", 1),
    ] {
        assert_eq!(stack.published(topic).await, count, "{topic}");
    }
    stack.stop().await;
}

#[tokio::test]
async fn payment_racing_cancellation_has_exactly_one_winner() {
    let stack = Stack::start().await;
    stack.set_stock("RACE-1", 40, 100).await;
    let mut orders = Vec::new();
    for index in 0..20 {
        orders.push(place(&stack, &format!("race-{index}"), "frank", "RACE-1", 2).await);
    }
    let races: Vec<_> = orders
        .iter()
        .map(|order| {
            let (mut payer, mut canceller) = (stack.order.clone(), stack.order.clone());
            let (to_pay, to_cancel) = (order.clone(), order.order_id.clone());
            tokio::spawn(async move {
                tokio::join!(
                    async move { pay(&mut payer, &to_pay, "p").await },
                    async move { cancel(&mut canceller, &to_cancel, "changed my mind").await }
                )
            })
        })
        .collect();
    let mut paid = 0;
    for race in races {
        match race.await.unwrap() {
            (Ok(order), Err(refused)) => {
                assert_eq!(order.status(), OrderStatus::Paid);
                assert_status("cancel lost", &refused, Code::FailedPrecondition, "is PAID");
                paid += 1;
            }
            (Err(refused), Ok(order)) => {
                assert_eq!(order.status(), OrderStatus::Cancelled);
                assert_status(
                    "pay lost",
                    &refused,
                    Code::FailedPrecondition,
                    "is CANCELLED",
                );
            }
            other => panic!("exactly one of pay and cancel must win: {other:?}"),
        }
    }
    let sold = 2 * paid;
    wait_for_stock(&stack, "RACE-1", (40 - sold, 0, sold)).await;
    stack.stop().await;
}

#[tokio::test]
async fn unpaid_orders_expire_and_their_stock_returns() {
    let stack = Stack::start_with(Options {
        payment_deadline_secs: Some(1),
        ..Options::default()
    })
    .await;
    stack.set_stock("EXP-1", 5, 100).await;
    let mut client = stack.order.clone();
    let unpaid = place(&stack, "e1", "gina", "EXP-1", 2).await;
    let paid_in_time = place(&stack, "e2", "gina", "EXP-1", 1).await;
    pay(&mut client, &paid_in_time, "p").await.unwrap();

    let expired = eventually(
        "the unpaid order to expire",
        Duration::from_secs(20),
        || {
            let mut client = client.clone();
            let order_id = unpaid.order_id.clone();
            async move {
                let order = get(&mut client, &order_id).await.unwrap();
                (order.status() == OrderStatus::Expired).then_some(order)
            }
        },
    )
    .await;
    assert_eq!(expired.cancel_reason, "expired");
    wait_for_stock(&stack, "EXP-1", (4, 0, 1)).await;
    let late = pay(&mut client, &unpaid, "p").await.unwrap_err();
    assert_status(
        "pay expired",
        &late,
        Code::FailedPrecondition,
        "is EXPIRED; it cannot become PAID",
    );
    assert_eq!(
        get(&mut client, &paid_in_time.order_id)
            .await
            .unwrap()
            .status(),
        OrderStatus::Paid
    );
    let reasons: Vec<String> =
        sqlx::query_scalar("SELECT release_reason FROM reservations WHERE order_id = $1::uuid")
            .bind(&unpaid.order_id)
            .fetch_all(&stack.db)
            .await
            .unwrap();
    assert_eq!(reasons, ["expired"]);
    eventually(
        "order-cancelled for the expiry",
        Duration::from_secs(20),
        || async { (stack.published("order-cancelled").await == 1).then_some(()) },
    )
    .await;
    stack.stop().await;
}

#[tokio::test]
async fn idempotency_keys_survive_payment_and_redis_forgetting_them() {
    let stack = Stack::start().await;
    stack.set_stock("IDEM-1", 10, 300).await;
    let mut client = stack.order.clone();
    let request = order_request("buy-once", "hana", &[("IDEM-1", 2)]);
    let order = stack.create_order(request.clone()).await.unwrap();
    let paid = pay(&mut client, &order, "p").await.unwrap();
    assert_eq!(
        stack.create_order(request.clone()).await.unwrap(),
        paid,
        "replay after payment"
    );
    stack.wait_for_persisted_orders(1).await;

    // Redis forgets every idempotency key of this test (as after losing its data).
    let mut redis = stack.redis.clone();
    for key in stack.redis_keys("idempotency*").await {
        let _: i64 = redis.del(&key).await.unwrap();
    }
    assert_eq!(
        stack.create_order(request.clone()).await.unwrap(),
        paid,
        "replay from PostgreSQL"
    );
    let mismatch = stack
        .create_order(order_request("buy-once", "hana", &[("IDEM-1", 3)]))
        .await
        .unwrap_err();
    assert_status(
        "mismatch",
        &mismatch,
        Code::AlreadyExists,
        "idempotency_key",
    );
    // The keys come back from PostgreSQL; a fresh key still places a new order.
    eventually(
        "the idempotency memory to be rebuilt",
        Duration::from_secs(20),
        || async { (!stack.redis_keys("idempotency-memory").await.is_empty()).then_some(()) },
    )
    .await;
    assert_eq!(
        stack.create_order(request).await.unwrap(),
        paid,
        "replay after the rebuild"
    );
    let fresh = place(&stack, "buy-twice", "hana", "IDEM-1", 1).await;
    assert_ne!(fresh.order_id, order.order_id);
    wait_for_stock(&stack, "IDEM-1", (7, 1, 2)).await;
    stack.stop().await;
}

#[tokio::test]
async fn reads_are_never_older_than_an_acknowledged_change() {
    let stack = Stack::start().await;
    stack.set_stock("READ-1", 100, 100).await;
    let mut client = stack.order.clone();
    for round in 0..10 {
        let order = place(&stack, &format!("r{round}"), "ivan", "READ-1", 1).await;
        // Persisted first: the readers below drop the cache entry, the only copy until then.
        stack.wait_for_persisted_orders(round + 1).await;
        // Readers hammer the order (and refill the cache) while it changes.
        let stop = tokio_util::sync::CancellationToken::new();
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let (mut client, stop) = (stack.order.clone(), stop.clone());
                let order_id = order.order_id.clone();
                let cache_key = stack.redis_key(&["order", &order.order_id]);
                let mut redis = stack.redis.clone();
                tokio::spawn(async move {
                    while !stop.is_cancelled() {
                        get(&mut client, &order_id).await.unwrap();
                        let _: i64 = redis.del(&cache_key).await.unwrap();
                    }
                })
            })
            .collect();
        let steps: [Order; 3] = [
            pay(&mut client, &order, "p").await.unwrap(),
            ship(&mut client, &order.order_id, "T").await.unwrap(),
            complete(&mut client, &order.order_id).await.unwrap(),
        ];
        for acknowledged in &steps {
            let seen = get(&mut client, &order.order_id).await.unwrap();
            assert!(
                seen.version >= acknowledged.version,
                "stale read {seen:?} after {acknowledged:?}"
            );
        }
        stop.cancel();
        for reader in readers {
            reader.await.unwrap();
        }
        // Once the readers are done, every read (cache or PostgreSQL) is the last state.
        for _ in 0..3 {
            assert_eq!(get(&mut client, &order.order_id).await.unwrap(), steps[2]);
        }
    }
    stack.stop().await;
}

#[tokio::test]
async fn batch_get_answers_hits_misses_and_unknown_ids() {
    let stack = Stack::start().await;
    stack.set_stock("BATCH-1", 100, 100).await;
    let mut orders = Vec::new();
    for index in 0..6 {
        orders.push(place(&stack, &format!("b{index}"), "judy", "BATCH-1", 1).await);
    }
    stack.wait_for_persisted_orders(6).await;
    // Half of them only in PostgreSQL now.
    let mut redis = stack.redis.clone();
    for order in &orders[..3] {
        let _: i64 = redis
            .del(stack.redis_key(&["order", &order.order_id]))
            .await
            .unwrap();
    }
    let unknown = uuid::Uuid::now_v7().to_string();
    let mut ids: Vec<String> = orders.iter().map(|order| order.order_id.clone()).collect();
    ids.insert(2, unknown.clone());
    ids.push(orders[0].order_id.clone());
    let answer = stack
        .order
        .clone()
        .batch_get_orders(BatchGetOrdersRequest { order_ids: ids })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        answer.orders, orders,
        "every order once, in the order asked"
    );
    assert_eq!(answer.missing_order_ids, [unknown]);

    let too_many = (0..501).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    for (case, order_ids, fragment) in [
        ("too many", too_many, "must hold 1 to 500 ids, got 501"),
        ("none", vec![], "order_ids"),
        (
            "bad id",
            vec![orders[0].order_id.clone(), "x".into()],
            "order_ids[1]",
        ),
    ] {
        let refused = stack
            .order
            .clone()
            .batch_get_orders(BatchGetOrdersRequest { order_ids })
            .await
            .unwrap_err();
        assert_status(case, &refused, Code::InvalidArgument, fragment);
    }
    stack.stop().await;
}

#[tokio::test]
async fn pages_walk_every_order_once_while_orders_arrive() {
    let stack = Stack::start().await;
    stack.set_stock("PAGE-1", 1_000, 100).await;
    for index in 0..23 {
        place(&stack, &format!("p{index}"), "kim", "PAGE-1", 1).await;
    }
    place(&stack, "other", "someone-else", "PAGE-1", 1).await;
    stack.wait_for_persisted_orders(24).await;

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = stack
            .order
            .clone()
            .list_orders(ListOrdersRequest {
                user_id: "kim".into(),
                page_size: 5,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.orders.len() <= 5);
        seen.extend(page.orders);
        pages += 1;
        // Newer orders arriving mid-walk sort before the cursor: the walk neither repeats nor skips.
        place(&stack, &format!("late{pages}"), "kim", "PAGE-1", 1).await;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 5);
    let ids: HashSet<&str> = seen.iter().map(|order| order.order_id.as_str()).collect();
    assert_eq!(
        (seen.len(), ids.len()),
        (23, 23),
        "every original order exactly once"
    );
    assert!(seen.iter().all(|order| order.user_id == "kim"));
    assert!(seen
        .windows(2)
        .all(|pair| pair[0].created_at.unwrap().seconds >= pair[1].created_at.unwrap().seconds));

    for (case, page_size, page_token, fragment) in [
        ("negative size", -1, String::new(), "page_size"),
        ("forged token", 5, "abc".to_owned(), "page_token"),
    ] {
        let refused = stack
            .order
            .clone()
            .list_orders(ListOrdersRequest {
                user_id: "kim".into(),
                page_size,
                page_token,
            })
            .await
            .unwrap_err();
        assert_status(case, &refused, Code::InvalidArgument, fragment);
    }
    stack.stop().await;
}

#[tokio::test]
async fn a_watcher_sees_the_whole_lifecycle_and_the_stream_ends() {
    let stack = Stack::start().await;
    stack.set_stock("WATCH-1", 10, 100).await;
    let mut client = stack.order.clone();
    let order = place(&stack, "w1", "lee", "WATCH-1", 1).await;
    let mut watchers = Vec::new();
    for _ in 0..3 {
        let stream = client
            .watch_order(WatchOrderRequest {
                order_id: order.order_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        watchers.push(stream);
    }
    // In quick succession: a watcher may read a state a few changes ahead, and must still send
    // every one of them, exactly as acknowledged.
    let acknowledged = vec![
        order.clone(),
        pay(&mut client, &order, "p").await.unwrap(),
        ship(&mut client, &order.order_id, "T").await.unwrap(),
        complete(&mut client, &order.order_id).await.unwrap(),
    ];
    for mut stream in watchers {
        let mut seen = Vec::new();
        let collected = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(answer) = stream.message().await.unwrap() {
                seen.push(answer.order.unwrap());
            }
        })
        .await;
        let statuses: Vec<OrderStatus> = seen.iter().map(Order::status).collect();
        assert!(
            collected.is_ok(),
            "the stream ends after COMPLETED; saw {statuses:?}"
        );
        assert_eq!(seen, acknowledged, "every state, as acknowledged");
    }
    let unknown = client
        .watch_order(WatchOrderRequest {
            order_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    stack.stop().await;
}

#[tokio::test]
async fn a_short_deadline_or_a_hang_up_changes_nothing() {
    let stack = Stack::start().await;
    stack.set_stock("DL-1", 10, 100).await;
    let mut client = stack.order.clone();
    let order = place(&stack, "d1", "mia", "DL-1", 2).await;
    stack.wait_for_persisted_orders(1).await;

    // Another transaction holds the order's row: the change cannot proceed in time.
    let mut blocker = stack.db.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM orders WHERE order_id = $1::uuid FOR UPDATE")
        .bind(&order.order_id)
        .execute(&mut *blocker)
        .await
        .unwrap();
    let mut request = tonic::Request::new(PayOrderRequest {
        order_id: order.order_id.clone(),
        payment_id: "p".into(),
        amount_cents: order.total_cents,
    });
    request.set_timeout(Duration::from_secs(1));
    let late = client.pay_order(request).await.unwrap_err();
    assert_status(
        "short deadline",
        &late,
        Code::DeadlineExceeded,
        "locking the order",
    );
    // A caller that hangs up (no deadline at all) abandons its change just the same.
    let hung_up = tokio::spawn({
        let (mut client, order) = (client.clone(), order.clone());
        async move { pay(&mut client, &order, "p").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    hung_up.abort();
    assert!(hung_up.await.unwrap_err().is_cancelled());
    tokio::time::sleep(Duration::from_millis(200)).await;
    blocker.rollback().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    assert_eq!(
        get(&mut client, &order.order_id).await.unwrap(),
        order,
        "nothing changed"
    );
    assert_eq!(stack.rows("order_outbox").await, 0);
    wait_for_stock(&stack, "DL-1", (8, 2, 0)).await;
    assert_eq!(
        pay(&mut client, &order, "p").await.unwrap().status(),
        OrderStatus::Paid
    );
    wait_for_stock(&stack, "DL-1", (8, 0, 2)).await;
    stack.stop().await;
}

#[tokio::test]
async fn replicas_expire_each_order_once_and_watchers_see_every_replicas_changes() {
    let stack = Stack::start_with(Options {
        payment_deadline_secs: Some(2),
        extra_order_apis: 2,
        ..Options::default()
    })
    .await;
    stack.set_stock("REP-1", 100, 100).await;
    let clients: Vec<Client> = std::iter::once(stack.order.clone())
        .chain(stack.replicas.iter().cloned())
        .collect();

    // A change made through one replica reaches a watcher connected to another.
    let watched = place(&stack, "watched", "nina", "REP-1", 1).await;
    let mut stream = clients[2]
        .clone()
        .watch_order(WatchOrderRequest {
            order_id: watched.order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        stream
            .message()
            .await
            .unwrap()
            .unwrap()
            .order
            .unwrap()
            .version,
        1
    );
    cancel(
        &mut clients[1].clone(),
        &watched.order_id,
        "changed my mind",
    )
    .await
    .unwrap();
    let cancelled = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("the watcher hears of the change made through another replica")
        .unwrap()
        .unwrap()
        .order
        .unwrap();
    assert_eq!(cancelled.status(), OrderStatus::Cancelled);
    assert!(stream.message().await.unwrap().is_none(), "the stream ends");

    // 30 unpaid orders through all three; three expiry tasks race for them.
    for index in 0..30 {
        let mut client = clients[index % 3].clone();
        client
            .create_order(order_request(&format!("x{index}"), "nina", &[("REP-1", 1)]))
            .await
            .unwrap();
    }
    stack.wait_for_persisted_orders(31).await;
    eventually(
        "every unpaid order to expire",
        Duration::from_secs(30),
        || async {
            let pending: i64 =
                sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'PENDING'")
                    .fetch_one(&stack.db)
                    .await
                    .unwrap();
            (pending == 0).then_some(())
        },
    )
    .await;
    let expiries: Vec<i64> = sqlx::query_scalar(
        "SELECT count(*) FROM order_status_history WHERE status = 'EXPIRED' GROUP BY order_id",
    )
    .fetch_all(&stack.db)
    .await
    .unwrap();
    assert_eq!(expiries, vec![1; 30], "each order expired exactly once");
    wait_for_stock(&stack, "REP-1", (100, 0, 0)).await;
    stack.wait_for_outbox_drained().await;
    assert_eq!(stack.published("order-cancelled").await, 31);
    stack.stop().await;
}

#[tokio::test]
async fn a_change_stands_while_inventory_is_unreachable_and_its_stock_settles_later() {
    let stack = Stack::start_with(Options {
        inventory_link: true,
        ..Options::default()
    })
    .await;
    let link = stack.inventory_link.as_ref().expect("the inventory link");
    stack.set_stock("LINK-1", 10, 100).await;
    let mut client = stack.order.clone();
    let to_pay = place(&stack, "l1", "olga", "LINK-1", 2).await;
    let to_cancel = place(&stack, "l2", "olga", "LINK-1", 3).await;

    link.cut();
    let refused = stack
        .create_order(order_request("l3", "olga", &[("LINK-1", 1)]))
        .await
        .unwrap_err();
    assert_status(
        "inventory unreachable",
        &refused,
        Code::Unavailable,
        "inventory",
    );
    // The decisions are PostgreSQL's: they stand, and their stock waits for inventory-svc.
    assert_eq!(
        pay(&mut client, &to_pay, "p").await.unwrap().status(),
        OrderStatus::Paid
    );
    assert_eq!(
        cancel(&mut client, &to_cancel.order_id, "changed my mind")
            .await
            .unwrap()
            .status(),
        OrderStatus::Cancelled
    );
    assert_eq!(stack.rows("stock_settlements").await, 2);
    assert_eq!(stack.durable_stock("LINK-1").await, (5, 5, 0));

    link.restore();
    wait_for_stock(&stack, "LINK-1", (8, 0, 2)).await;
    eventually(
        "the settlements to be done",
        Duration::from_secs(30),
        || async { (stack.rows("stock_settlements").await == 0).then_some(()) },
    )
    .await;
    stack.stop().await;
}

#[tokio::test]
async fn a_placement_past_the_callers_deadline_leaves_nothing_even_if_its_reserve_arrives_late() {
    let stack = Stack::start_with(Options {
        inventory_link: true,
        create_timeout_ms: Some(2_000),
        kafka_ack_timeout_ms: Some(1_500),
        ..Options::default()
    })
    .await;
    let link = stack.inventory_link.as_ref().expect("the inventory link");
    stack.set_stock("LATE-1", 10, 100).await;
    let request = order_request("late", "pia", &[("LATE-1", 4)]);

    link.stall();
    let mut call = tonic::Request::new(request.clone());
    call.set_timeout(Duration::from_secs(1));
    let late = stack.order.clone().create_order(call).await.unwrap_err();
    assert_status(
        "stalled inventory",
        &late,
        Code::DeadlineExceeded,
        "reserving stock",
    );
    // What was sent arrives now: the Reserve, then the undo's Release, on the one connection.
    // (Over separate connections the Release could come first; order-api then releases once
    // more after twice the create timeout, hence the wait below.)
    link.restore();
    assert!(
        stack.redis_keys("order:*").await.is_empty(),
        "nothing cached"
    );
    wait_for_stock(&stack, "LATE-1", (10, 0, 0)).await;
    tokio::time::sleep(Duration::from_secs(5)).await; // past the late release (2 × 2 s)
    wait_for_stock(&stack, "LATE-1", (10, 0, 0)).await;
    assert_eq!(stack.published("order-created").await, 0);

    // The key is free again: the retry places the order once.
    let placed = stack.create_order(request).await.expect("the retry");
    assert_eq!(placed.status(), OrderStatus::Pending);
    wait_for_stock(&stack, "LATE-1", (6, 4, 0)).await;
    stack.stop().await;
}

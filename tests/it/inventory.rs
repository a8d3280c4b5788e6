//! Inventory under contention, against real inventory-svc processes, PostgreSQL and Redis:
//! flash sales never oversell, multi-SKU reservations are all or nothing, retries and
//! settlements are idempotent, reservations no order confirmed give their stock back, and Redis losing
//! its data mid-sale still sells no unit twice.

use std::time::Duration;

use futures::future::join_all;
use orderflow_proto::inventory::v1::{
    CommitRequest, ConfirmReservationsRequest, ReconcileStockRequest, ReleaseRequest,
    ReservationState, ReserveRequest,
};
use orderflow_tests::inventory::{reserve_request, InventoryOptions, InventoryStack};
use orderflow_tests::private::{PrivatePostgres, PrivateRedis};
use orderflow_tests::service::Configure;
use orderflow_tests::{assert_status, eventually};
use tonic::Code;

fn processes(count: usize) -> InventoryOptions {
    InventoryOptions {
        processes: count,
        ..InventoryOptions::default()
    }
}

/// `count` processes, their configuration changed by `change`, e.g. a short reservation TTL.
fn processes_with(
    count: usize,
    change: impl Fn(&mut inventory_svc::Config) + Send + Sync + 'static,
) -> InventoryOptions {
    InventoryOptions {
        config: Configure::new(change),
        ..processes(count)
    }
}

/// Sweeps every 100 ms and settles unrecorded admissions after 1 s.
fn quick_sweeps(config: &mut inventory_svc::Config) {
    config.unrecorded_grace_secs = 1;
    config.reservation_sweep_interval_ms = 100;
}

/// Sends every request concurrently, spread over the stack's processes; the number reserved.
/// Any answer but a reservation or "insufficient stock" fails the test.
async fn reserve_all(stack: &InventoryStack, requests: Vec<ReserveRequest>) -> usize {
    reserve_all_tolerating(stack, requests, None).await
}

/// As `reserve_all`, also accepting `tolerated` (e.g. UNAVAILABLE while Redis is being wiped).
async fn reserve_all_tolerating(
    stack: &InventoryStack,
    requests: Vec<ReserveRequest>,
    tolerated: Option<Code>,
) -> usize {
    let answers = join_all(requests.into_iter().enumerate().map(|(i, request)| {
        let mut client = stack.client(i);
        async move { client.reserve(request).await }
    }))
    .await;
    answers
        .into_iter()
        .filter(|answer| match answer {
            Ok(_) => true,
            Err(status) if Some(status.code()) == tolerated => false,
            Err(status) => {
                assert_status(
                    "reserve",
                    status,
                    Code::FailedPrecondition,
                    "insufficient stock",
                );
                false
            }
        })
        .count()
}

async fn assert_counters_agree(stack: &InventoryStack, sku: &str, expected: [i64; 3]) {
    assert_eq!(
        stack.durable_counters(sku).await,
        expected,
        "{sku} in PostgreSQL"
    );
    assert_eq!(
        stack.redis_counters(sku).await,
        Some(expected),
        "{sku} in Redis"
    );
}

#[tokio::test]
async fn a_flash_sale_across_three_processes_sells_exactly_the_units() {
    let stack = InventoryStack::start(processes(3)).await;
    stack.set_stock("HOT", 50, 9_900).await;

    let buyers = (0..500).map(|_| reserve_request(&[("HOT", 1)])).collect();
    assert_eq!(reserve_all(&stack, buyers).await, 50);

    assert_counters_agree(&stack, "HOT", [0, 50, 0]).await;
    assert_eq!(stack.count("SELECT count(*) FROM reservations").await, 50);
    assert_eq!(stack.refusals().await, 0);
}

#[tokio::test]
async fn multi_sku_reservations_are_all_or_nothing_under_contention() {
    let stack = InventoryStack::start(processes(2)).await;
    stack.set_stock("PAIR-A", 120, 100).await;
    stack.set_stock("PAIR-B", 25, 200).await;

    // 80 orders want one A and one B (listed both ways round: PostgreSQL locks rows in SKU
    // order, so there is no deadlock either way), 40 want two A. B runs out after 25 pairs;
    // a refused pair must not keep its A.
    let requests = (0..120)
        .map(|i| match i % 3 {
            0 => reserve_request(&[("PAIR-A", 1), ("PAIR-B", 1)]),
            1 => reserve_request(&[("PAIR-B", 1), ("PAIR-A", 1)]),
            _ => reserve_request(&[("PAIR-A", 2)]),
        })
        .collect();
    assert_eq!(reserve_all(&stack, requests).await, 25 + 40);

    assert_counters_agree(&stack, "PAIR-A", [120 - 25 - 80, 25 + 80, 0]).await;
    assert_counters_agree(&stack, "PAIR-B", [0, 25, 0]).await;
    let complete_pairs = stack
        .count(
            "SELECT count(*) FROM (SELECT order_id FROM reservation_items \
             GROUP BY order_id HAVING count(*) = 2) AS pairs",
        )
        .await;
    assert_eq!(complete_pairs, 25);
    assert_eq!(stack.refusals().await, 0);
}

#[tokio::test]
async fn retries_reserve_once_and_settlements_follow_the_state_machine() {
    let stack = InventoryStack::start(processes(2)).await;
    stack.set_stock("IDEM", 10, 500).await;

    // The same order, ten times at once and then again: one reservation of 3 units.
    let request = reserve_request(&[("IDEM", 3)]);
    let order_id = request.order_id.clone();
    let answers = join_all((0..10).map(|i| {
        let (mut client, request) = (stack.client(i), request.clone());
        async move {
            eventually("a retried reservation", Duration::from_secs(10), || {
                let (mut client, request) = (client.clone(), request.clone());
                async move { client.reserve(request).await.ok() }
            })
            .await;
            client.reserve(request).await.expect("a retry").into_inner()
        }
    }))
    .await;
    for answer in &answers {
        let reservation = answer.reservation.as_ref().expect("a reservation");
        assert_eq!(reservation.state(), ReservationState::Reserved);
        assert_eq!(reservation.items[0].quantity, 3);
        assert_eq!(reservation.items[0].unit_price_cents, 500);
        assert!(reservation.expires_at.is_some());
    }
    assert_counters_agree(&stack, "IDEM", [7, 3, 0]).await;

    // Commit twice: one sale. Release after commit is refused and changes nothing.
    let mut client = stack.client(0);
    let commit = CommitRequest {
        order_id: order_id.clone(),
    };
    for _ in 0..2 {
        let committed = client.commit(commit.clone()).await.expect("Commit");
        let reservation = committed.into_inner().reservation.expect("a reservation");
        assert_eq!(reservation.state(), ReservationState::Committed);
    }
    let refused = client
        .release(ReleaseRequest {
            order_id: order_id.clone(),
            reason: "buyer cancelled".into(),
        })
        .await
        .unwrap_err();
    assert_status(
        "release after commit",
        &refused,
        Code::FailedPrecondition,
        "is committed; it cannot be released",
    );
    assert_counters_agree(&stack, "IDEM", [7, 0, 3]).await;

    // Release twice: units back once. Commit after release is refused.
    let other = reserve_request(&[("IDEM", 2)]);
    client.reserve(other.clone()).await.expect("Reserve");
    let release = ReleaseRequest {
        order_id: other.order_id.clone(),
        reason: "payment failed".into(),
    };
    for _ in 0..2 {
        let released = client.release(release.clone()).await.expect("Release");
        let reservation = released.into_inner().reservation.expect("a reservation");
        assert_eq!(reservation.state(), ReservationState::Released);
    }
    let refused = client
        .commit(CommitRequest {
            order_id: other.order_id,
        })
        .await
        .unwrap_err();
    assert_status(
        "commit after release",
        &refused,
        Code::FailedPrecondition,
        "is released; it cannot be committed",
    );
    assert_counters_agree(&stack, "IDEM", [7, 0, 3]).await;

    let unknown = uuid::Uuid::now_v7().to_string();
    let missing = client
        .commit(CommitRequest { order_id: unknown })
        .await
        .unwrap_err();
    assert_status("commit unknown", &missing, Code::NotFound, "no reservation");
    assert_eq!(stack.refusals().await, 0);
}

#[tokio::test]
async fn a_reservation_no_order_confirms_returns_its_stock_and_a_confirmed_one_never_expires() {
    let stack = InventoryStack::start(processes_with(2, |config| {
        config.reservation_ttl_secs = 1;
        config.orphan_grace_ms = 200;
        config.reservation_sweep_interval_ms = 100;
    }))
    .await;
    stack.set_stock("EXP", 5, 100).await;
    let mut client = stack.client(0);
    let kept = reserve_request(&[("EXP", 1)]);
    let forgotten = reserve_request(&[("EXP", 3)]);
    let confirmed = reserve_request(&[("EXP", 1)]);
    for request in [&kept, &forgotten, &confirmed] {
        let reservation = client
            .reserve(request.clone())
            .await
            .expect("Reserve")
            .into_inner()
            .reservation
            .expect("a reservation");
        assert!(!reservation.confirmed);
    }
    client
        .commit(CommitRequest {
            order_id: kept.order_id.clone(),
        })
        .await
        .expect("Commit");
    // An order that exists claims its reservation: from now on only the order settles it.
    let answer = client
        .confirm_reservations(ConfirmReservationsRequest {
            order_ids: vec![confirmed.order_id.clone(), kept.order_id.clone()],
        })
        .await
        .expect("ConfirmReservations")
        .into_inner();
    let states: Vec<(bool, ReservationState)> = answer
        .reservations
        .iter()
        .map(|reservation| (reservation.confirmed, reservation.state()))
        .collect();
    assert_eq!(
        states,
        [
            (true, ReservationState::Reserved),
            (false, ReservationState::Committed)
        ]
    );
    assert_counters_agree(&stack, "EXP", [0, 4, 1]).await;

    eventually(
        "the reservation no order confirmed to give its units back",
        Duration::from_secs(20),
        || async { (stack.durable_counters("EXP").await == [3, 1, 1]).then_some(()) },
    )
    .await;
    assert_counters_agree(&stack, "EXP", [3, 1, 1]).await;
    let reason: String =
        sqlx::query_scalar("SELECT release_reason FROM reservations WHERE order_id = $1::uuid")
            .bind(&forgotten.order_id)
            .fetch_one(&stack.db)
            .await
            .expect("the released reservation");
    assert!(reason.starts_with("orphaned"), "{reason}");
    let late = client
        .commit(CommitRequest {
            order_id: forgotten.order_id,
        })
        .await
        .unwrap_err();
    assert_status(
        "pay after release",
        &late,
        Code::FailedPrecondition,
        "released",
    );
    // Long past its hold, the confirmed reservation is still held: its order decides.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_counters_agree(&stack, "EXP", [3, 1, 1]).await;
    client
        .commit(CommitRequest {
            order_id: confirmed.order_id,
        })
        .await
        .expect("Commit of the confirmed reservation");
    assert_counters_agree(&stack, "EXP", [3, 0, 2]).await;
    assert_eq!(stack.refusals().await, 0);
}

#[tokio::test]
async fn units_of_an_admission_a_dead_process_never_recorded_come_back() {
    let stack = InventoryStack::start(processes_with(1, quick_sweeps)).await;
    stack.set_stock("CRASH", 10, 100).await;
    let request = reserve_request(&[("CRASH", 3)]);
    stack
        .admit_without_recording(&request.order_id, "CRASH", 3)
        .await;
    assert_eq!(stack.redis_counters("CRASH").await, Some([7, 3, 0]));

    // A retry meanwhile cannot be answered yet: PostgreSQL has no such reservation.
    let mut client = stack.client(0);
    let status = client.reserve(request.clone()).await.unwrap_err();
    assert_status("retry", &status, Code::Unavailable, "still being recorded");

    eventually(
        "the unrecorded admission's units to come back",
        Duration::from_secs(20),
        || async { (stack.redis_counters("CRASH").await == Some([10, 0, 0])).then_some(()) },
    )
    .await;
    // The retry now reserves for real, once.
    client.reserve(request).await.expect("Reserve");
    assert_counters_agree(&stack, "CRASH", [7, 3, 0]).await;
    assert_eq!(stack.refusals().await, 0);
}

#[tokio::test]
async fn killing_a_process_mid_sale_strands_and_oversells_nothing() {
    let mut stack = InventoryStack::start(processes_with(3, quick_sweeps)).await;
    stack.set_stock("KILL", 60, 100).await;

    // 400 buyers over three processes; process 0 is killed while they are in flight. Its
    // buyers hear transport errors (or nothing was recorded for them); the others are served.
    let buyers = join_all((0..400).map(|i| {
        let mut client = stack.client(i);
        let request = reserve_request(&[("KILL", 1)]);
        async move { (i % 3, client.reserve(request).await) }
    }));
    let crash = async {
        tokio::time::sleep(Duration::from_millis(15)).await;
        stack.kill(0).await;
    };
    let (answers, ()) = tokio::join!(buyers, async {
        crash.await;
    });
    let (mut acknowledged, mut cut_off) = (0, 0);
    for (process, answer) in answers {
        match answer {
            Ok(_) => acknowledged += 1,
            Err(_) if process == 0 => cut_off += 1,
            Err(status) => {
                assert_status("reserve", &status, Code::FailedPrecondition, "insufficient")
            }
        }
    }

    // Whatever the dead process admitted but never recorded is settled by the survivors.
    let unrecorded = stack.redis_args.key(&["unrecorded"]);
    eventually(
        "unrecorded admissions to be settled",
        Duration::from_secs(20),
        || {
            let (mut redis, key) = (stack.redis.clone(), unrecorded.clone());
            async move {
                let left: i64 = redis::cmd("ZCARD")
                    .arg(key)
                    .query_async(&mut redis)
                    .await
                    .ok()?;
                (left == 0).then_some(())
            }
        },
    )
    .await;
    let [available, reserved, sold] = stack.durable_counters("KILL").await;
    assert_eq!(available + reserved + sold, 60);
    assert!(
        acknowledged as i64 <= reserved,
        "an acknowledged reservation was lost"
    );

    // No unit was stranded: the survivors sell exactly what PostgreSQL still has.
    let more = (0..100)
        .map(|_| reserve_request(&[("KILL", 1)]))
        .collect::<Vec<_>>();
    let answers = join_all(more.into_iter().map(|request| {
        let mut client = stack.client(1);
        async move { client.reserve(request).await }
    }))
    .await;
    let sold_later = answers.iter().filter(|answer| answer.is_ok()).count() as i64;
    assert_eq!(
        sold_later, available,
        "units stranded or oversold after the crash"
    );
    println!(
        "crash mid-sale: {acknowledged} acknowledged, {cut_off} cut off with the process, \
         {sold_later} sold afterwards"
    );
    assert_eq!(stack.durable_counters("KILL").await, [0, 60, 0]);
    assert_eq!(stack.redis_counters("KILL").await, Some([0, 60, 0]));
    assert_eq!(stack.refusals().await, 0);
}

#[tokio::test]
async fn with_postgres_down_nothing_is_reserved_anywhere() {
    let postgres = PrivatePostgres::start().await;
    let stack = InventoryStack::start(InventoryOptions {
        processes: 1,
        postgres_server: Some(postgres.url.clone()),
        config: Configure::new(|config: &mut inventory_svc::Config| {
            config.process.postgres.database_acquire_timeout_ms = 1000
        }),
        ..InventoryOptions::default()
    })
    .await;
    stack.set_stock("PGDOWN", 10, 100).await;
    let mut client = stack.client(0);
    client
        .reserve(reserve_request(&[("PGDOWN", 2)]))
        .await
        .expect("Reserve");

    postgres.stop().await;
    let refused = client
        .reserve(reserve_request(&[("PGDOWN", 1)]))
        .await
        .unwrap_err();
    assert_status("PostgreSQL down", &refused, Code::Unavailable, "PostgreSQL");
    // Redis admitted it first; the failed recording undid that.
    assert_eq!(stack.redis_counters("PGDOWN").await, Some([8, 2, 0]));
    let unrecorded: i64 = redis::cmd("ZCARD")
        .arg(stack.redis_args.key(&["unrecorded"]))
        .query_async(&mut stack.redis.clone())
        .await
        .expect("ZCARD");
    assert_eq!(unrecorded, 0);
    let refused = client
        .set_stock(orderflow_proto::inventory::v1::SetStockRequest {
            sku: "PGDOWN".into(),
            quantity: 50,
            price_cents: 100,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(stack.redis_counters("PGDOWN").await, Some([8, 2, 0]));

    postgres.restart().await;
    eventually(
        "reservations to work again",
        Duration::from_secs(30),
        || {
            let mut client = client.clone();
            async move { client.reserve(reserve_request(&[("PGDOWN", 1)])).await.ok() }
        },
    )
    .await;
    assert_counters_agree(&stack, "PGDOWN", [7, 3, 0]).await;
    assert_eq!(stack.refusals().await, 0);
}

#[tokio::test]
async fn reconciling_restores_exact_counters_counting_admissions_in_flight() {
    let stack = InventoryStack::start(processes(1)).await;
    stack.set_stock("RECON", 20, 300).await;
    let mut client = stack.client(0);
    client
        .reserve(reserve_request(&[("RECON", 5)]))
        .await
        .expect("Reserve");
    // Two units admitted in Redis that PostgreSQL has not recorded yet (in flight).
    let in_flight = reserve_request(&[("RECON", 2)]);
    stack
        .admit_without_recording(&in_flight.order_id, "RECON", 2)
        .await;
    // Redis drifts (say a follow-up write was lost).
    let stock_key = stack.redis_args.key(&["stock", "RECON"]);
    let () = redis::cmd("HSET")
        .arg(&stock_key)
        .arg(&["available", "999", "reserved", "0"])
        .query_async(&mut stack.redis.clone())
        .await
        .expect("HSET");

    let reconcile = ReconcileStockRequest {
        sku: "RECON".into(),
    };
    let answer = client
        .reconcile_stock(reconcile.clone())
        .await
        .expect("ReconcileStock")
        .into_inner();
    let before = answer.before.expect("counters before");
    assert_eq!((before.available, before.reserved), (999, 0));
    let after = answer.after.expect("counters after");
    assert_eq!((after.available, after.reserved, after.sold), (13, 7, 0));
    assert_eq!(after.price_cents, 300);
    assert_eq!(stack.redis_counters("RECON").await, Some([13, 7, 0]));
    assert_eq!(stack.durable_counters("RECON").await, [15, 5, 0]);

    // Counters Redis lost entirely are recreated the same way.
    let () = redis::cmd("DEL")
        .arg(&stock_key)
        .query_async(&mut stack.redis.clone())
        .await
        .expect("DEL");
    let answer = client
        .reconcile_stock(reconcile)
        .await
        .expect("ReconcileStock")
        .into_inner();
    assert!(answer.before.is_none());
    assert_eq!(stack.redis_counters("RECON").await, Some([13, 7, 0]));

    let unknown = client
        .reconcile_stock(ReconcileStockRequest { sku: "NOPE".into() })
        .await
        .unwrap_err();
    assert_status("unknown SKU", &unknown, Code::NotFound, "sku: unknown SKU");
    let bad = client
        .reconcile_stock(ReconcileStockRequest { sku: String::new() })
        .await
        .unwrap_err();
    assert_status(
        "empty SKU",
        &bad,
        Code::InvalidArgument,
        "sku: must not be empty",
    );
    assert_eq!(stack.refusals().await, 0);
}

async fn flushall(stack: &InventoryStack) {
    let () = redis::cmd("FLUSHALL")
        .query_async(&mut stack.redis.clone())
        .await
        .expect("FLUSHALL");
}

#[tokio::test]
async fn redis_losing_its_data_mid_sale_sells_no_unit_twice() {
    let redis = PrivateRedis::start().await;
    let stack = InventoryStack::start(InventoryOptions {
        processes: 3,
        redis_url: Some(redis.url.clone()),
        ..InventoryOptions::default()
    })
    .await;
    stack.set_stock("FLUSH", 50, 100).await;

    // 20 sold, then Redis forgets everything: the rebuilt counters must count those 20.
    let early: Vec<_> = (0..20).map(|_| reserve_request(&[("FLUSH", 1)])).collect();
    assert_eq!(reserve_all(&stack, early.clone()).await, 20);
    flushall(&stack).await;

    // 140 more buyers, and Redis forgets everything again while they are in flight.
    let wave = (0..140).map(|_| reserve_request(&[("FLUSH", 1)])).collect();
    let racing_flush = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        flushall(&stack).await;
    };
    // A buyer whose counters vanish twice within one request hears UNAVAILABLE ("retry").
    let (late, ()) = tokio::join!(
        reserve_all_tolerating(&stack, wave, Some(Code::Unavailable)),
        racing_flush
    );
    assert_eq!(20 + late, 50, "every unit sold once, none stranded");

    // Every acknowledged reservation is in PostgreSQL; units were neither created nor lost.
    assert_eq!(stack.durable_counters("FLUSH").await, [0, 50, 0]);
    assert_eq!(stack.count("SELECT count(*) FROM reservations").await, 50);

    // Releasing reservations whose Redis records were lost returns their units exactly once.
    let mut client = stack.client(0);
    for request in &early[..5] {
        client
            .release(ReleaseRequest {
                order_id: request.order_id.clone(),
                reason: "cancelled".into(),
            })
            .await
            .expect("Release");
    }
    let buyers = (0..30).map(|_| reserve_request(&[("FLUSH", 1)])).collect();
    assert_eq!(reserve_all(&stack, buyers).await, 5);
    assert_counters_agree(&stack, "FLUSH", [0, 50, 0]).await;
    println!(
        "Redis loss: {} reservations refused by PostgreSQL after Redis admitted them",
        stack.refusals().await
    );
}

//! The Redis distributed lock against a real Redis: mutual exclusion under contention, expiry,
//! owner-only release, lease extension, bounded waiting, and fencing tokens that let PostgreSQL
//! refuse a holder that was paused past its lease.

use std::time::Duration;

use inventory_svc::ledger::Ledger;
use inventory_svc::InventoryError;
use orderflow_lock::{LockError, LockSettings, Locks};
use orderflow_runtime::redis::RedisArgs;
use orderflow_runtime::redis::RedisConnection;
use orderflow_tests::locking::assert_mutual_exclusion;

async fn locks(ttl_ms: u64, wait_ms: u64) -> (Locks, RedisConnection, String) {
    let prefix = format!("t{}", orderflow_tests::unique_id());
    let args = RedisArgs {
        redis_url: orderflow_tests::deps::redis_url(),
        redis_url_file: None,
        redis_tls_ca_file: None,
        redis_cluster: false,
        redis_key_prefix: prefix.clone(),
        redis_timeout_ms: 2000,
    };
    let redis = orderflow_runtime::redis::connect(&args)
        .await
        .unwrap_or_else(|error| panic!("{error}; {}", orderflow_tests::deps::HOW_TO_START));
    let settings = LockSettings {
        ttl: Duration::from_millis(ttl_ms),
        wait: Duration::from_millis(wait_ms),
    };
    (Locks::new(redis.clone(), &prefix, settings), redis, prefix)
}

#[tokio::test]
async fn only_one_holder_at_a_time_under_contention() {
    let (locks, redis, prefix) = locks(5_000, 30_000).await;
    assert_mutual_exclusion(&locks, &redis, &format!("{{{prefix}}}:counter")).await;
}

#[tokio::test]
async fn a_lock_frees_itself_when_its_holder_vanishes_and_only_the_owner_releases() {
    let (short, redis, prefix) = locks(300, 2_000).await;
    let long = with_settings(&redis, &prefix, 10_000, 2_000);
    let crashed = short.acquire("res", 0).await.expect("acquire");
    // The holder "crashes": it never releases. The next one gets in once the TTL ran out.
    let started = std::time::Instant::now();
    let next = long.acquire("res", 0).await.expect("acquire after expiry");
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "got in too early"
    );
    assert!(next.fence() > crashed.fence());

    // The old holder can neither extend nor release what is now someone else's lock.
    assert!(matches!(
        crashed.extend(Duration::from_secs(1)).await,
        Err(LockError::Lost { .. })
    ));
    assert!(matches!(
        crashed.release().await,
        Err(LockError::Lost { .. })
    ));
    let impatient = with_settings(&redis, &prefix, 10_000, 100);
    match impatient.acquire("res", 0).await {
        Err(error @ LockError::Timeout { .. }) => {
            assert!(error.to_string().contains("\"res\" is busy"), "{error}");
        }
        other => panic!("a non-owner freed the lock: {:?}", other.map(|g| g.fence())),
    }
    next.release().await.expect("the owner releases");
    impatient.acquire("res", 0).await.expect("free again");
}

fn with_settings(redis: &RedisConnection, prefix: &str, ttl_ms: u64, wait_ms: u64) -> Locks {
    let settings = LockSettings {
        ttl: Duration::from_millis(ttl_ms),
        wait: Duration::from_millis(wait_ms),
    };
    Locks::new(redis.clone(), prefix, settings)
}

#[tokio::test]
async fn a_holder_that_extends_its_lease_keeps_the_lock() {
    let (holder_locks, redis, prefix) = locks(300, 1_000).await;
    let holder = holder_locks.acquire("long-job", 0).await.expect("acquire");
    let competitor = with_settings(&redis, &prefix, 300, 700);
    let extend = async {
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            holder
                .extend(Duration::from_millis(300))
                .await
                .expect("extend");
        }
    };
    let (competing, ()) = tokio::join!(competitor.acquire("long-job", 0), extend);
    assert!(
        matches!(competing, Err(LockError::Timeout { .. })),
        "the lease ran out despite extensions"
    );
    holder.release().await.expect("release");
    competitor
        .acquire("long-job", 0)
        .await
        .expect("free after release");
}

#[tokio::test]
async fn fencing_tokens_increase_even_after_redis_forgot_them() {
    let (locks, redis, prefix) = locks(5_000, 1_000).await;
    let mut last = 0;
    for _ in 0..3 {
        let guard = locks.acquire("fenced", 0).await.expect("acquire");
        assert!(guard.fence() > last);
        last = guard.fence();
        guard.release().await.expect("release");
    }
    // Redis loses the counter: the store's last accepted token is the floor.
    let () = redis::cmd("DEL")
        .arg(format!("{{{prefix}}}:fence:fenced"))
        .query_async(&mut redis.clone())
        .await
        .expect("DEL");
    let guard = locks.acquire("fenced", last).await.expect("acquire");
    assert!(guard.fence() > last, "{} after {last}", guard.fence());
}

#[tokio::test]
async fn a_holder_paused_past_its_lease_cannot_overwrite_the_newer_write() {
    let (short, redis, prefix) = locks(200, 2_000).await;
    let (_, pool) = orderflow_tests::deps::fresh_database(&orderflow_tests::unique_id()).await;
    let ledger = Ledger::new(pool);

    let paused = short.acquire("stock:FENCE", 0).await.expect("acquire");
    // The holder stalls (GC pause, stopped VM) past its TTL; a new holder takes over and writes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let newer = with_settings(&redis, &prefix, 5_000, 2_000)
        .acquire("stock:FENCE", 0)
        .await
        .expect("acquire");
    ledger
        .set_stock("FENCE", 7, 100, newer.fence())
        .await
        .expect("the newer holder writes")
        .commit()
        .await
        .expect("commit");

    // The paused holder wakes up, still believing it holds the lock: its write is refused.
    match ledger.set_stock("FENCE", 999, 1, paused.fence()).await {
        Err(error @ InventoryError::Fenced { .. }) => {
            assert!(error.to_string().contains("is stale"), "{error}");
        }
        Err(other) => panic!("refused for the wrong reason: {other}"),
        Ok(_) => panic!("the stale holder overwrote the newer write"),
    }
    let row = ledger.sku("FENCE").await.expect("read").expect("the row");
    assert_eq!((row.level.available, row.level.price_cents), (7, 100));
    assert_eq!(row.fence, newer.fence());
}

//! Checks of the distributed lock shared by the single-Redis and the Redis Cluster tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use orderflow_lock::Locks;
use orderflow_runtime::redis::RedisConnection;

/// Proves mutual exclusion: every holder does a read-modify-write that would lose updates if
/// two ran at once, and no two are ever inside together.
pub async fn assert_mutual_exclusion(locks: &Locks, redis: &RedisConnection, counter_key: &str) {
    let inside = Arc::new(AtomicUsize::new(0));
    let workers = join_all((0..20).map(|_| {
        let (locks, mut redis, inside) = (locks.clone(), redis.clone(), inside.clone());
        let key = counter_key.to_owned();
        async move {
            for _ in 0..5 {
                let guard = locks.acquire("counter", 0).await.expect("acquire");
                assert_eq!(
                    inside.fetch_add(1, Ordering::SeqCst),
                    0,
                    "two holders at once"
                );
                let value: Option<i64> = redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut redis)
                    .await
                    .expect("GET");
                tokio::time::sleep(Duration::from_millis(1)).await;
                let () = redis::cmd("SET")
                    .arg(&key)
                    .arg(value.unwrap_or(0) + 1)
                    .query_async(&mut redis)
                    .await
                    .expect("SET");
                inside.fetch_sub(1, Ordering::SeqCst);
                guard.release().await.expect("release");
            }
        }
    }))
    .await;
    assert_eq!(workers.len(), 20);
    let total: i64 = redis::cmd("GET")
        .arg(counter_key)
        .query_async(&mut redis.clone())
        .await
        .expect("GET");
    assert_eq!(total, 100, "lost updates: the lock let two holders in");
}

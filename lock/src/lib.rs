//! A distributed lock in Redis with fencing tokens, for work that spans Redis and PostgreSQL
//! and must not run twice at once (setting a SKU's stock, rebuilding its lost counters).
//!
//! A lock is a key holding its owner's random token with a TTL (`SET key owner NX PX ttl`), so a
//! crashed holder frees it when the TTL runs out. Only the owner may release or extend it: both
//! are compare-then-act scripts, atomic in Redis. Waiting is bounded, with jittered exponential
//! backoff so that many waiters do not retry in lockstep.
//!
//! A holder can be paused past its TTL (a long GC-like stall, a stopped VM, a slow disk) and then
//! resume believing it still holds the lock. So every acquisition also yields a fencing token,
//! strictly greater than every earlier one for that resource, and the store the lock protects
//! accepts a write only with a token newer than the last one it accepted: the paused holder's
//! late write is refused. Tokens come from a Redis counter that a Redis which lost its data
//! restarts from zero; callers therefore pass the last token their store accepted
//! (`fence_floor`) and the new token is always above it.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use redis::Script;

use orderflow_runtime::redis::redis_key;
use orderflow_runtime::redis::RedisConnection;
use orderflow_telemetry::metrics::metrics;

/// How long a lock is held before it frees itself, and how long `acquire` waits for it.
#[derive(Debug, Clone, Copy)]
pub struct LockSettings {
    pub ttl: Duration,
    pub wait: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("lock {resource:?} is busy: not acquired within {waited_ms} ms")]
    Timeout { resource: String, waited_ms: u128 },
    #[error("lock {resource:?} is no longer held by this owner: its lease ran out")]
    Lost { resource: String },
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

const ACQUIRE: &str = r"
-- KEYS[1] the lock, KEYS[2] the resource's fencing counter
-- ARGV[1] owner token, ARGV[2] TTL in ms, ARGV[3] fence floor
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return false
end
local fence = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[3])
if fence <= floor then
  fence = floor + 1
  redis.call('SET', KEYS[2], fence)
end
return fence
";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

const EXTEND: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Locks of one deployment (its Redis key prefix). Cheap to clone.
#[derive(Clone)]
pub struct Locks {
    redis: RedisConnection,
    key_prefix: String,
    settings: LockSettings,
    acquire: Script,
    release: Script,
    extend: Script,
}

impl Locks {
    pub fn new(redis: RedisConnection, key_prefix: &str, settings: LockSettings) -> Self {
        Self {
            redis,
            key_prefix: key_prefix.to_owned(),
            settings,
            acquire: Script::new(ACQUIRE),
            release: Script::new(RELEASE),
            extend: Script::new(EXTEND),
        }
    }

    /// Waits (at most the configured wait) until `resource` is free, then holds it for the TTL.
    /// The guard's fencing token is greater than `fence_floor` and than every token handed out
    /// before for `resource`.
    pub async fn acquire(&self, resource: &str, fence_floor: i64) -> Result<LockGuard, LockError> {
        let lock_key = redis_key(&self.key_prefix, &["lock", resource]);
        let fence_key = redis_key(&self.key_prefix, &["fence", resource]);
        let owner = uuid::Uuid::new_v4().to_string();
        let started = Instant::now();
        let mut backoff = Duration::from_millis(2);
        loop {
            let mut redis = self.redis.clone();
            let fence: Option<i64> = self
                .acquire
                .key(&lock_key)
                .key(&fence_key)
                .arg(&owner)
                .arg(millis(self.settings.ttl))
                .arg(fence_floor)
                .invoke_async(&mut redis)
                .await?;
            if let Some(fence) = fence {
                metrics().observe_lock_wait(started.elapsed(), "acquired");
                return Ok(LockGuard {
                    locks: self.clone(),
                    resource: resource.to_owned(),
                    key: lock_key,
                    owner,
                    fence,
                    released: false,
                });
            }
            let pause = jittered(backoff);
            if started.elapsed() + pause > self.settings.wait {
                metrics().observe_lock_wait(started.elapsed(), "timeout");
                return Err(LockError::Timeout {
                    resource: resource.to_owned(),
                    waited_ms: started.elapsed().as_millis(),
                });
            }
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(Duration::from_millis(100));
        }
    }
}

/// A held lock. Release it with [`LockGuard::release`]; a guard dropped unreleased frees the lock
/// in the background (or, failing that, when its TTL runs out).
pub struct LockGuard {
    locks: Locks,
    resource: String,
    key: String,
    owner: String,
    fence: i64,
    released: bool,
}

impl LockGuard {
    /// The fencing token of this acquisition: pass it with every write made under the lock.
    pub fn fence(&self) -> i64 {
        self.fence
    }

    /// Renews the lease for another `ttl`; `Lost` if it already ran out and someone else may
    /// hold the lock now.
    pub async fn extend(&self, ttl: Duration) -> Result<(), LockError> {
        let mut redis = self.locks.redis.clone();
        let extended: i64 = self
            .locks
            .extend
            .key(&self.key)
            .arg(&self.owner)
            .arg(millis(ttl))
            .invoke_async(&mut redis)
            .await?;
        if extended == 1 {
            Ok(())
        } else {
            Err(LockError::Lost {
                resource: self.resource.clone(),
            })
        }
    }

    /// Frees the lock if this guard still owns it; `Lost` if its lease had already run out.
    pub async fn release(mut self) -> Result<(), LockError> {
        self.released = true;
        if release(&self.locks, &self.key, &self.owner).await? {
            Ok(())
        } else {
            Err(LockError::Lost {
                resource: self.resource.clone(),
            })
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (locks, key, owner) = (self.locks.clone(), self.key.clone(), self.owner.clone());
            runtime.spawn(async move {
                let _ = release(&locks, &key, &owner).await;
            });
        }
    }
}

async fn release(locks: &Locks, key: &str, owner: &str) -> Result<bool, LockError> {
    let mut redis = locks.redis.clone();
    let deleted: i64 = locks
        .release
        .key(key)
        .arg(owner)
        .invoke_async(&mut redis)
        .await?;
    Ok(deleted == 1)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// A random pause between half of `base` and `base`.
fn jittered(base: Duration) -> Duration {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let half = base / 2;
    half + Duration::from_nanos(random % u64::try_from(half.as_nanos().max(1)).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_and_full_base() {
        let base = Duration::from_millis(40);
        for _ in 0..1000 {
            let pause = jittered(base);
            assert!(pause >= base / 2 && pause <= base, "{pause:?}");
        }
    }
}

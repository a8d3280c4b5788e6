//! Per-user rate limit on CreateOrder: a token bucket in Redis (`{prefix}:rate:<user>`), so the
//! limit holds across every replica; a buyer hammering the button during a flash sale gets
//! RESOURCE_EXHAUSTED with the time to wait instead of taking capacity from everyone else.

use redis::Script;

use crate::error::OrderError;
use orderflow_runtime::redis::RedisArgs;
use orderflow_runtime::redis::RedisConnection;
use orderflow_telemetry::metrics::metrics;

#[derive(Clone)]
pub struct RateLimit {
    redis: RedisConnection,
    keys: RedisArgs,
    per_second: f64,
    burst: u32,
    bucket: Script,
}

impl RateLimit {
    /// `None` when `per_second` is 0 (no limit).
    pub fn new(
        redis: RedisConnection,
        keys: RedisArgs,
        per_second: f64,
        burst: u32,
    ) -> Option<Self> {
        (per_second > 0.0).then(|| Self {
            redis,
            keys,
            per_second,
            burst: burst.max(1),
            bucket: Script::new(include_str!("scripts/token_bucket.lua")),
        })
    }

    /// Takes one of `user_id`'s tokens, or refuses naming the wait.
    pub async fn take(&self, user_id: &str) -> Result<(), OrderError> {
        let mut redis = self.redis.clone();
        let (allowed, wait_ms): (i64, i64) = self
            .bucket
            .key(self.keys.key(&["rate", user_id]))
            .arg(self.per_second)
            .arg(self.burst)
            .invoke_async(&mut redis)
            .await?;
        if allowed == 1 {
            return Ok(());
        }
        metrics().rate_limited.inc();
        Err(OrderError::RateLimited {
            user_id: user_id.to_owned(),
            per_second: self.per_second,
            burst: self.burst,
            retry_after_ms: wait_ms,
        })
    }
}

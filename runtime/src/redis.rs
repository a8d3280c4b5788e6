//! Redis connection set-up: one multiplexed, auto-reconnecting connection per process, cloned
//! cheaply into every task (pipelining happens on the shared connection).
//!
//! Every connection attempt and every answer is bounded by `--redis-timeout-ms`, and reconnects
//! give up after a few quick retries: while Redis is down, calls fail fast (and become
//! UNAVAILABLE) instead of hanging the callers; the next call tries to reconnect again.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::{redact_url, RedisArgs};
use crate::RuntimeError;

pub async fn connect(args: &RedisArgs) -> Result<ConnectionManager, RuntimeError> {
    let error = |source| RuntimeError::Redis {
        url: redact_url(&args.redis_url),
        source,
    };
    let timeout = Duration::from_millis(args.redis_timeout_ms.max(1));
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(timeout)
        .set_response_timeout(timeout)
        .set_number_of_retries(2)
        .set_factor(50)
        .set_max_delay(500);
    let client = redis::Client::open(args.redis_url.as_str()).map_err(error)?;
    ConnectionManager::new_with_config(client, config)
        .await
        .map_err(error)
}

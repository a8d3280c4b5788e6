//! Redis connection set-up: one multiplexed, auto-reconnecting connection per process, cloned
//! cheaply into every task (pipelining happens on the shared connection).

use redis::aio::ConnectionManager;

use crate::config::{redact_url, RedisArgs};
use crate::RuntimeError;

pub async fn connect(args: &RedisArgs) -> Result<ConnectionManager, RuntimeError> {
    let error = |source| RuntimeError::Redis {
        url: redact_url(&args.redis_url),
        source,
    };
    let client = redis::Client::open(args.redis_url.as_str()).map_err(error)?;
    ConnectionManager::new(client).await.map_err(error)
}

//! The order cache in Redis: the live state of an order from the moment CreateOrder answers,
//! before consumer-worker has persisted it, and a read-through cache of PostgreSQL afterwards.
//!
//! Key `{prefix}:order:<order_id>`, a hash with a TTL:
//! - `o`: the protobuf-encoded `Order`, `v`: its version;
//! - `k`: the idempotency key (only for an order placed here and not yet read back from
//!   PostgreSQL: it is what order-api needs to persist the order itself at its first change);
//! - `p`: the version of a status change being committed in PostgreSQL right now.
//!
//! A read never shows a state older than one already acknowledged: a change first sets `p`
//! (before its commit), so from then on readers go to PostgreSQL; after the commit it writes
//! the new version and clears `p`. Every write keeps the highest version, so a reader refilling
//! the cache with what it read before the change cannot undo it. If the write after the commit
//! fails, `p` stays and readers keep asking PostgreSQL, which has the change.

use std::time::Duration;

use orderflow_proto::order::v1::Order;
use orderflow_runtime::redis::RedisArgs;
use orderflow_runtime::redis::RedisConnection;
use prost::Message;
use redis::Script;
use uuid::Uuid;

use crate::error::OrderError;

/// What the cache holds for one order.
#[derive(Debug, Clone, PartialEq)]
pub enum Cached {
    /// The current state.
    Fresh(Order),
    /// A change is being committed (or failed to update the cache): PostgreSQL decides; the
    /// cached copy is current only if PostgreSQL has no row yet (the change did not commit).
    Changing(Option<Order>),
    Missing,
}

#[derive(Clone)]
pub struct OrderCache {
    redis: RedisConnection,
    keys: RedisArgs,
    ttl: Duration,
    put_newer: Script,
    mark_changing: Script,
}

impl OrderCache {
    pub fn new(redis: RedisConnection, keys: RedisArgs, ttl: Duration) -> Self {
        Self {
            redis,
            keys,
            ttl,
            // KEYS[1] order; ARGV: version, encoded order, ttl seconds. Keeps the highest
            // version; yields to a change in flight that is newer than this copy.
            put_newer: Script::new(
                "local held = tonumber(redis.call('HGET', KEYS[1], 'v') or '0') \
                 local changing = tonumber(redis.call('HGET', KEYS[1], 'p') or '0') \
                 local version = tonumber(ARGV[1]) \
                 if version <= held or version < changing then return 0 end \
                 redis.call('HSET', KEYS[1], 'o', ARGV[2], 'v', ARGV[1]) \
                 redis.call('HDEL', KEYS[1], 'p', 'k') \
                 redis.call('EXPIRE', KEYS[1], ARGV[3]) \
                 return 1",
            ),
            // KEYS[1] order; ARGV: version being committed, ttl seconds.
            mark_changing: Script::new(
                "local changing = tonumber(redis.call('HGET', KEYS[1], 'p') or '0') \
                 if tonumber(ARGV[1]) > changing then \
                   redis.call('HSET', KEYS[1], 'p', ARGV[1]) \
                 end \
                 if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end \
                 return 1",
            ),
        }
    }

    fn key(&self, order_id: &str) -> String {
        self.keys.key(&["order", order_id])
    }

    fn ttl_secs(&self) -> u64 {
        self.ttl.as_secs().max(1)
    }

    /// Adds to `pipe` the commands that cache a just-placed order with the idempotency key it
    /// was placed under (the placement sends them with its other last writes, in one round trip).
    pub fn put_placed(&self, pipe: &mut redis::Pipeline, order: &Order, idempotency_key: &str) {
        let key = self.key(&order.order_id);
        pipe.hset_multiple(
            &key,
            &[
                ("o", order.encode_to_vec()),
                ("v", order.version.to_string().into_bytes()),
                ("k", idempotency_key.as_bytes().to_vec()),
            ],
        )
        .ignore()
        .expire(&key, self.ttl_secs() as i64)
        .ignore();
    }

    /// Caches `order` unless the cache already has it at this version or newer, or a newer
    /// change is being committed.
    pub async fn put_if_newer(&self, order: &Order) -> Result<(), OrderError> {
        let mut redis = self.redis.clone();
        let _: i64 = self
            .put_newer
            .key(self.key(&order.order_id))
            .arg(order.version)
            .arg(order.encode_to_vec())
            .arg(self.ttl_secs())
            .invoke_async(&mut redis)
            .await?;
        Ok(())
    }

    /// Says that `version` of the order is being committed: until it is cached, readers ask
    /// PostgreSQL.
    pub async fn mark_changing(&self, order_id: Uuid, version: i64) -> Result<(), OrderError> {
        let mut redis = self.redis.clone();
        let _: i64 = self
            .mark_changing
            .key(self.key(&order_id.to_string()))
            .arg(version)
            .arg(self.ttl_secs())
            .invoke_async(&mut redis)
            .await?;
        Ok(())
    }

    /// One pipelined round trip for all of `order_ids`, answered in the same order.
    pub async fn get_many(&self, order_ids: &[&str]) -> Result<Vec<Cached>, OrderError> {
        let mut pipe = redis::pipe();
        for order_id in order_ids {
            pipe.cmd("HMGET")
                .arg(self.key(order_id))
                .arg(&["o", "v", "p"]);
        }
        let mut redis = self.redis.clone();
        type Fields = (Option<Vec<u8>>, Option<i64>, Option<i64>);
        let answers: Vec<Fields> = pipe.query_async(&mut redis).await?;
        order_ids
            .iter()
            .zip(answers)
            .map(|(order_id, (bytes, version, changing))| {
                let order = bytes.map(|bytes| decode(order_id, &bytes)).transpose()?;
                Ok(match (order, changing) {
                    (None, None) => Cached::Missing,
                    (Some(order), Some(changing)) if changing > version.unwrap_or(0) => {
                        Cached::Changing(Some(order))
                    }
                    (Some(order), _) => Cached::Fresh(order),
                    (None, Some(_)) => Cached::Changing(None),
                })
            })
            .collect()
    }

    /// The order as it was placed, with its idempotency key, while only the cache has it.
    pub async fn placed(&self, order_id: Uuid) -> Result<Option<(Order, String)>, OrderError> {
        let order_id = order_id.to_string();
        let mut redis = self.redis.clone();
        let (bytes, idempotency_key): (Option<Vec<u8>>, Option<String>) = redis::cmd("HMGET")
            .arg(self.key(&order_id))
            .arg(&["o", "k"])
            .query_async(&mut redis)
            .await?;
        match (bytes, idempotency_key) {
            (Some(bytes), Some(key)) => Ok(Some((decode(&order_id, &bytes)?, key))),
            _ => Ok(None),
        }
    }

    /// Drops the cached copy of an order whose cached state is no longer true (an order
    /// persisted voided): readers then go to PostgreSQL.
    pub async fn remove(&self, order_id: Uuid) -> Result<(), OrderError> {
        let _: i64 = redis::cmd("DEL")
            .arg(self.key(&order_id.to_string()))
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(())
    }
}

fn decode(order_id: &str, bytes: &[u8]) -> Result<Order, OrderError> {
    Order::decode(bytes).map_err(|error| {
        OrderError::Internal(format!("cached order {order_id} is unreadable: {error}"))
    })
}

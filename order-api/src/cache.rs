//! The order cache in Redis: the live state of an order from the moment CreateOrder answers,
//! before consumer-worker has persisted it, and a read-through cache afterwards.
//! Key `{prefix}:order:<order_id>`, value the protobuf-encoded `Order`, with a TTL.

use std::time::Duration;

use orderflow_proto::order::v1::Order;
use orderflow_runtime::config::RedisArgs;
use orderflow_runtime::redis::RedisConnection;
use prost::Message;
use redis::AsyncCommands;

use crate::error::OrderError;

#[derive(Clone)]
pub struct OrderCache {
    redis: RedisConnection,
    keys: RedisArgs,
    ttl: Duration,
}

impl OrderCache {
    pub fn new(redis: RedisConnection, keys: RedisArgs, ttl: Duration) -> Self {
        Self { redis, keys, ttl }
    }

    fn key(&self, order_id: &str) -> String {
        self.keys.key(&["order", order_id])
    }

    pub async fn put(&self, order: &Order) -> Result<(), OrderError> {
        let mut redis = self.redis.clone();
        let () = redis
            .set_ex(
                self.key(&order.order_id),
                order.encode_to_vec(),
                self.ttl.as_secs().max(1),
            )
            .await?;
        Ok(())
    }

    pub async fn get(&self, order_id: &str) -> Result<Option<Order>, OrderError> {
        let mut redis = self.redis.clone();
        let bytes: Option<Vec<u8>> = redis.get(self.key(order_id)).await?;
        bytes
            .map(|bytes| {
                Order::decode(bytes.as_slice()).map_err(|error| {
                    OrderError::Internal(format!("cached order {order_id} is unreadable: {error}"))
                })
            })
            .transpose()
    }

    pub async fn remove(&self, order_id: &str) -> Result<(), OrderError> {
        let mut redis = self.redis.clone();
        let _: i64 = redis.del(self.key(order_id)).await?;
        Ok(())
    }
}

//! Idempotency keys in Redis: the first CreateOrder with a key claims it for one order id; a
//! retry with the same key finds that claim and returns the same order instead of a second one.
//!
//! A claim is `placing` (with a lease of twice the create timeout, so it outlives the
//! placement) while the order is being placed, and `placed` (kept for the idempotency TTL,
//! 24 h by default) once the broker acknowledged it. A failed placement deletes its own claim so
//! a retry can start afresh; a process that dies mid-placement leaves a claim that lapses with
//! its lease.
//!
//! Key: `{prefix}:idempotency:<sha256(user_id, key)>`, so keys are per user and of fixed size.
//! Value: `state|fingerprint|order_id|created_at_micros`.

use std::time::Duration;

use orderflow_runtime::config::RedisArgs;
use orderflow_runtime::redis::RedisConnection;
use redis::{AsyncCommands, Script};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::OrderError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimState {
    Placing,
    Placed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRecord {
    pub state: ClaimState,
    pub fingerprint: String,
    pub order_id: Uuid,
    pub created_at: OffsetDateTime,
}

impl ClaimRecord {
    fn encode(&self) -> String {
        let state = match self.state {
            ClaimState::Placing => "placing",
            ClaimState::Placed => "placed",
        };
        format!(
            "{state}|{}|{}|{}",
            self.fingerprint,
            self.order_id,
            self.created_at.unix_timestamp_nanos() / 1_000
        )
    }

    fn decode(text: &str) -> Option<Self> {
        let mut parts = text.split('|');
        let state = match parts.next()? {
            "placing" => ClaimState::Placing,
            "placed" => ClaimState::Placed,
            _ => return None,
        };
        let fingerprint = parts.next()?.to_owned();
        let order_id = Uuid::try_parse(parts.next()?).ok()?;
        let micros: i128 = parts.next()?.parse().ok()?;
        let created_at = OffsetDateTime::from_unix_timestamp_nanos(micros * 1_000).ok()?;
        Some(Self {
            state,
            fingerprint,
            order_id,
            created_at,
        })
    }
}

/// What claiming a key found.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// The key was free: the caller now owns it and places the order.
    Claimed,
    /// The key was claimed before, by this record.
    Taken(ClaimRecord),
}

#[derive(Clone)]
pub struct Claims {
    redis: RedisConnection,
    keys: RedisArgs,
    retention: Duration,
    lease: Duration,
    delete_if_equal: Script,
}

impl Claims {
    pub fn new(
        redis: RedisConnection,
        keys: RedisArgs,
        retention: Duration,
        lease: Duration,
    ) -> Self {
        Self {
            redis,
            keys,
            retention,
            lease,
            delete_if_equal: Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                   return redis.call('DEL', KEYS[1]) \
                 end \
                 return 0",
            ),
        }
    }

    fn key(&self, user_id: &str, idempotency_key: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(user_id.as_bytes());
        hasher.update([0]);
        hasher.update(idempotency_key.as_bytes());
        self.keys
            .key(&["idempotency", &hex::encode(hasher.finalize())])
    }

    /// Claims the key with `record` (state `Placing`) unless someone claimed it before.
    pub async fn claim(
        &self,
        user_id: &str,
        idempotency_key: &str,
        record: &ClaimRecord,
    ) -> Result<Claim, OrderError> {
        let key = self.key(user_id, idempotency_key);
        let mut redis = self.redis.clone();
        // The owner of a claim may delete it between our SET and GET (a failed placement): then
        // the key is free again and the next round claims it.
        for _ in 0..3 {
            let claimed: bool = redis::cmd("SET")
                .arg(&key)
                .arg(record.encode())
                .arg("NX")
                .arg("PX")
                .arg(millis(self.lease))
                .query_async::<Option<String>>(&mut redis)
                .await?
                .is_some();
            if claimed {
                return Ok(Claim::Claimed);
            }
            let existing: Option<String> = redis.get(&key).await?;
            if let Some(existing) = existing {
                return ClaimRecord::decode(&existing)
                    .map(Claim::Taken)
                    .ok_or_else(|| OrderError::Internal(format!("unreadable claim {existing:?}")));
            }
        }
        Err(OrderError::InProgress)
    }

    /// Marks the claim placed and keeps it for the retention period.
    pub async fn mark_placed(
        &self,
        user_id: &str,
        idempotency_key: &str,
        record: &ClaimRecord,
    ) -> Result<(), OrderError> {
        let placed = ClaimRecord {
            state: ClaimState::Placed,
            ..record.clone()
        };
        let mut redis = self.redis.clone();
        let () = redis
            .set_ex(
                self.key(user_id, idempotency_key),
                placed.encode(),
                self.retention.as_secs().max(1),
            )
            .await?;
        Ok(())
    }

    /// Deletes the claim if it still is `record`, so a retry can place the order afresh.
    pub async fn abandon(
        &self,
        user_id: &str,
        idempotency_key: &str,
        record: &ClaimRecord,
    ) -> Result<(), OrderError> {
        let mut redis = self.redis.clone();
        let _: i64 = self
            .delete_if_equal
            .key(self.key(user_id, idempotency_key))
            .arg(record.encode())
            .invoke_async(&mut redis)
            .await?;
        Ok(())
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let record = ClaimRecord {
            state: ClaimState::Placing,
            fingerprint: "00ff".into(),
            order_id: Uuid::now_v7(),
            created_at: orderflow_runtime::timestamp::now(),
        };
        assert_eq!(ClaimRecord::decode(&record.encode()), Some(record.clone()));
        let placed = ClaimRecord {
            state: ClaimState::Placed,
            ..record
        };
        assert_eq!(ClaimRecord::decode(&placed.encode()), Some(placed));
        assert_eq!(ClaimRecord::decode("placed|x|not-a-uuid|1"), None);
        assert_eq!(ClaimRecord::decode("other|x|y|1"), None);
    }
}

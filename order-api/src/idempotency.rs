//! Idempotency keys in Redis: the first CreateOrder with a key claims it for one order id; a
//! retry with the same key finds that claim and returns the same order instead of a second one.
//!
//! A claim is `placing` (with a lease of twice the placement's time budget, so it outlives the
//! placement) while the order is being placed, and `placed` (kept for the idempotency TTL,
//! 24 h by default) once the broker acknowledged it. A failed placement deletes its own claim so
//! a retry can start afresh; a process that dies mid-placement leaves a claim that lapses with
//! its lease.
//!
//! Key: `{prefix}:idempotency:<sha256(user_id, key)>`, so keys are per user and of fixed size.
//! Value: `state|fingerprint|order_id|created_at_micros`.
//!
//! Redis may lose its data; PostgreSQL keeps every persisted order's key for good. The marker
//! `{prefix}:idempotency-memory` says "Redis holds every claim of the retention period". Every
//! claim checks it in the same script; while it is missing (a new deployment, or Redis lost its
//! data), a new claim also looks the key up in PostgreSQL, and one task rebuilds the placed
//! claims of the retention period from PostgreSQL and then sets the marker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use orderflow_runtime::config::RedisArgs;
use orderflow_runtime::redis::RedisConnection;
use redis::{AsyncCommands, Script};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};
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
    /// The key was free in Redis: the caller now owns it and places the order. Unless
    /// `memory_complete`, the key may have been used before Redis lost its data: the caller
    /// asks PostgreSQL first.
    Claimed { memory_complete: bool },
    /// The key was claimed before, by this record.
    Taken(ClaimRecord),
}

#[derive(Clone)]
pub struct Claims {
    redis: RedisConnection,
    keys: RedisArgs,
    retention: Duration,
    claim: Script,
    delete_if_equal: Script,
    rebuilding: Arc<AtomicBool>,
}

impl Claims {
    pub fn new(redis: RedisConnection, keys: RedisArgs, retention: Duration) -> Self {
        Self {
            redis,
            keys,
            retention,
            // KEYS: the claim, the memory marker; ARGV: record, lease ms. Answers
            // {claimed (1/0), memory complete (1/0), the claim held (when not claimed)}.
            claim: Script::new(
                "local complete = redis.call('EXISTS', KEYS[2]) \
                 if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then \
                   return {1, complete, false} \
                 end \
                 return {0, complete, redis.call('GET', KEYS[1])}",
            ),
            rebuilding: Arc::new(AtomicBool::new(false)),
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

    fn memory_key(&self) -> String {
        self.keys.key(&["idempotency-memory"])
    }

    /// Claims the key with `record` (state `Placing`) for `lease` unless someone claimed it
    /// before.
    pub async fn claim(
        &self,
        user_id: &str,
        idempotency_key: &str,
        record: &ClaimRecord,
        lease: Duration,
    ) -> Result<Claim, OrderError> {
        let mut redis = self.redis.clone();
        let (claimed, complete, existing): (i64, i64, Option<String>) = self
            .claim
            .key(self.key(user_id, idempotency_key))
            .key(self.memory_key())
            .arg(record.encode())
            .arg(millis(lease))
            .invoke_async(&mut redis)
            .await?;
        if claimed == 1 {
            return Ok(Claim::Claimed {
                memory_complete: complete == 1,
            });
        }
        let existing = existing.unwrap_or_default();
        ClaimRecord::decode(&existing)
            .map(Claim::Taken)
            .ok_or_else(|| OrderError::Internal(format!("unreadable claim {existing:?}")))
    }

    /// Unless a rebuild runs already in this process, starts one in the background: every
    /// order of the retention period persisted in PostgreSQL gets its placed claim back (claims
    /// Redis still has are kept), then the memory marker is set.
    pub fn rebuild_in_background(&self, pool: PgPool) {
        if self.rebuilding.swap(true, Ordering::SeqCst) {
            return;
        }
        let claims = self.clone();
        tokio::spawn(async move {
            match claims.rebuild(&pool).await {
                Ok(restored) => {
                    tracing::info!(restored, "idempotency keys rebuilt from PostgreSQL")
                }
                Err(error) => {
                    tracing::warn!(%error, "rebuilding idempotency keys failed; the next claim retries")
                }
            }
            claims.rebuilding.store(false, Ordering::SeqCst);
        });
    }

    async fn rebuild(&self, pool: &PgPool) -> Result<u64, OrderError> {
        let retention_secs = i64::try_from(self.retention.as_secs()).unwrap_or(i64::MAX);
        let mut rows = sqlx::query(
            "SELECT o.user_id, o.idempotency_key, o.order_id, o.created_at, \
                    EXTRACT(EPOCH FROM (o.created_at + $1 * interval '1 second' - now()))::bigint \
                      AS remaining_secs, \
                    array_agg(i.sku) AS skus, array_agg(i.quantity) AS quantities \
             FROM orders o JOIN order_items i USING (order_id) \
             WHERE o.created_at > now() - $1 * interval '1 second' \
               AND o.cancel_reason IS DISTINCT FROM 'stock_not_held' \
             GROUP BY o.order_id",
        )
        .bind(retention_secs)
        .fetch(pool);
        let mut redis = self.redis.clone();
        let mut pipe = redis::pipe();
        let mut restored = 0;
        while let Some(row) = rows.try_next().await? {
            let user_id: String = row.try_get("user_id")?;
            let key: String = row.try_get("idempotency_key")?;
            let skus: Vec<String> = row.try_get("skus")?;
            let quantities: Vec<i64> = row.try_get("quantities")?;
            let record = ClaimRecord {
                state: ClaimState::Placed,
                fingerprint: crate::order::fingerprint(
                    &user_id,
                    skus.iter().map(String::as_str).zip(quantities),
                ),
                order_id: row.try_get("order_id")?,
                created_at: row.try_get("created_at")?,
            };
            let remaining: i64 = row.try_get("remaining_secs")?;
            pipe.cmd("SET")
                .arg(self.key(&user_id, &key))
                .arg(record.encode())
                .arg("NX")
                .arg("EX")
                .arg(remaining.max(1))
                .ignore();
            restored += 1;
            if restored % 1_000 == 0 {
                let () = pipe.query_async(&mut redis).await?;
                pipe = redis::pipe();
            }
        }
        let () = pipe.query_async(&mut redis).await?;
        let () = redis.set(self.memory_key(), 1).await?;
        Ok(restored)
    }

    /// Marks the claim placed and keeps it for the retention period.
    pub async fn mark_placed(
        &self,
        user_id: &str,
        idempotency_key: &str,
        record: &ClaimRecord,
    ) -> Result<(), OrderError> {
        let mut pipe = redis::pipe();
        self.mark_placed_in(&mut pipe, user_id, idempotency_key, record);
        let () = pipe.query_async(&mut self.redis.clone()).await?;
        Ok(())
    }

    /// Adds to `pipe` the command of [`Claims::mark_placed`].
    pub fn mark_placed_in(
        &self,
        pipe: &mut redis::Pipeline,
        user_id: &str,
        idempotency_key: &str,
        record: &ClaimRecord,
    ) {
        let placed = ClaimRecord {
            state: ClaimState::Placed,
            ..record.clone()
        };
        pipe.set_ex(
            self.key(user_id, idempotency_key),
            placed.encode(),
            self.retention.as_secs().max(1),
        )
        .ignore();
    }

    /// The Redis connection the claims live on (the cache's as well).
    pub fn redis(&self) -> RedisConnection {
        self.redis.clone()
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

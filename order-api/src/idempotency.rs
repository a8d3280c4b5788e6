//! Idempotency keys in Redis: the first CreateOrder with a key claims it for one order (its id,
//! its event id and its placement time); a retry with the same key finds that claim and answers
//! that order, or finishes placing it, but never places a second one.
//!
//! A claim is `placing` while its order is being placed and `placed` once the broker
//! acknowledged it; either way it is kept for the idempotency TTL (24 h by default). Who is
//! placing it right now is a separate **lease** (twice the placement's time budget, so it
//! outlives the placement). A placement that failed before it sent its event deletes its claim,
//! so a retry starts afresh. One that may have sent it (or whose process died) leaves the claim
//! bound to its order: once the lease is gone, a retry **resumes** that same order (same order
//! id and event id, so the worker and every consumer see one order whatever reached the log),
//! and only if inventory-svc gave that order's stock back (no order for it exists) is the key
//! bound to a new one.
//!
//! Keys: `{prefix}:idempotency:<sha256(user_id, key)>` (the claim) and
//! `{prefix}:idempotency-lease:<same>` (the lease), per user and of fixed size.
//! Claim value: `state|fingerprint|order_id|created_at_micros|event_id`.
//!
//! Redis may lose its data; PostgreSQL keeps every persisted order's key for good. The marker
//! `{prefix}:idempotency-memory` says "Redis holds every claim of the retention period". Every
//! claim checks it in the same script; while it is missing (a new deployment, or Redis lost its
//! data), a new claim also looks the key up in PostgreSQL, and one task rebuilds the placed
//! claims of the retention period from PostgreSQL and then sets the marker. An order may be
//! acknowledged and still only in the order log, not yet in PostgreSQL: so the rebuild first
//! waits until consumer-worker has applied everything the log held when it started
//! (`log_barrier`), and until then a key PostgreSQL does not know is refused (UNAVAILABLE,
//! retry) rather than placed a second time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use orderflow_kafka::log_barrier::LogBarrier;
use orderflow_runtime::redis::RedisArgs;
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

/// The order a key is bound to: everything that makes a resumed placement publish the very
/// same order as the first attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRecord {
    pub state: ClaimState,
    pub fingerprint: String,
    pub order_id: Uuid,
    pub created_at: OffsetDateTime,
    /// The id of its `order-created` event: consumers deduplicate on it.
    pub event_id: Uuid,
}

impl ClaimRecord {
    /// A new order for a request with this fingerprint, placed from now.
    pub fn new(fingerprint: String) -> Self {
        Self {
            state: ClaimState::Placing,
            fingerprint,
            order_id: Uuid::now_v7(),
            created_at: orderflow_runtime::timestamp::now(),
            event_id: Uuid::now_v7(),
        }
    }

    fn encode(&self) -> String {
        let state = match self.state {
            ClaimState::Placing => "placing",
            ClaimState::Placed => "placed",
        };
        format!(
            "{state}|{}|{}|{}|{}",
            self.fingerprint,
            self.order_id,
            self.created_at.unix_timestamp_nanos() / 1_000,
            self.event_id,
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
        // Claims written before they carried an event id are never resumed (their lease is the
        // claim's own expiry, see the claim script), so they need none.
        let event_id = match parts.next() {
            Some(text) => Uuid::try_parse(text).ok()?,
            None => Uuid::nil(),
        };
        Some(Self {
            state,
            fingerprint,
            order_id,
            created_at,
            event_id,
        })
    }
}

/// One attempt at placing a claimed order: the token its lease holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease(String);

impl Lease {
    pub fn new() -> Self {
        Self(Uuid::new_v4().to_string())
    }
}

/// What claiming a key found.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// The key was free in Redis: it is now bound to the new record, and the caller holds its
    /// lease. Unless `memory_complete`, the key may have been used before Redis lost its data:
    /// the caller asks PostgreSQL first.
    Claimed { memory_complete: bool },
    /// The key is bound to this order, whose last placement attempt ended without an answer
    /// (failed after it may have sent its event, or its process died): the caller now holds
    /// the lease and resumes placing that order.
    Resumed(ClaimRecord),
    /// The key was claimed before, by this record (being placed by someone else, or placed).
    Taken(ClaimRecord),
}

#[derive(Clone)]
pub struct Claims {
    redis: RedisConnection,
    keys: RedisArgs,
    retention: Duration,
    claim: Script,
    abandon: Script,
    rebind: Script,
    release_lease: Script,
    finish_rebuild: Script,
    rebuilding: Arc<AtomicBool>,
    /// The order log, for the rebuild's wait.
    barrier: LogBarrier,
    /// Every order the log held when the running rebuild started is in PostgreSQL.
    log_applied: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Claims {
    pub fn new(
        redis: RedisConnection,
        keys: RedisArgs,
        retention: Duration,
        barrier: LogBarrier,
    ) -> Self {
        Self {
            redis,
            keys,
            retention,
            // KEYS: the claim, its lease, the memory marker; ARGV: record, lease token, lease
            // ms, retention s, fingerprint. Answers {0 taken / 1 claimed / 2 resumed, memory
            // complete (1/0), the claim held (when not claimed)}.
            claim: Script::new(
                "local complete = redis.call('EXISTS', KEYS[3]) \
                 local held = redis.call('GET', KEYS[1]) \
                 if not held then \
                   redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[4]) \
                   redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) \
                   return {1, complete, false} \
                 end \
                 local fingerprint = string.match(held, '^placing|([^|]*)|[^|]*|[^|]*|[^|]+$') \
                 if fingerprint == ARGV[5] and redis.call('EXISTS', KEYS[2]) == 0 then \
                   redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) \
                   return {2, complete, held} \
                 end \
                 return {0, complete, held}",
            ),
            // KEYS: the claim, its lease; ARGV: record, lease token. Frees the key if this
            // lease still holds it for this record.
            abandon: Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] \
                    and redis.call('GET', KEYS[2]) == ARGV[2] then \
                   return redis.call('DEL', KEYS[1], KEYS[2]) \
                 end \
                 return 0",
            ),
            // KEYS: the claim, its lease; ARGV: record, new record, lease token, retention s.
            // Binds the key to the new record if this lease still holds it for the old one.
            rebind: Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] \
                    and redis.call('GET', KEYS[2]) == ARGV[3] then \
                   redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[4]) \
                   return 1 \
                 end \
                 return 0",
            ),
            // KEYS: the lease; ARGV: lease token.
            release_lease: Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                   return redis.call('DEL', KEYS[1]) \
                 end \
                 return 0",
            ),
            // KEYS: the rebuild's token, the memory marker; ARGV: token. Sets the marker only
            // if Redis kept the token the rebuild started with (it did not lose its data again
            // meanwhile, which would have lost claims the rebuild already restored).
            finish_rebuild: Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                   redis.call('SET', KEYS[2], 1) \
                   redis.call('DEL', KEYS[1]) \
                   return 1 \
                 end \
                 return 0",
            ),
            rebuilding: Arc::new(AtomicBool::new(false)),
            barrier,
            log_applied: Arc::new(tokio::sync::watch::Sender::new(false)),
        }
    }

    /// The claim's key and its lease's key.
    fn keys(&self, user_id: &str, idempotency_key: &str) -> (String, String) {
        let mut hasher = Sha256::new();
        hasher.update(user_id.as_bytes());
        hasher.update([0]);
        hasher.update(idempotency_key.as_bytes());
        let hash = hex::encode(hasher.finalize());
        (
            self.keys.key(&["idempotency", &hash]),
            self.keys.key(&["idempotency-lease", &hash]),
        )
    }

    fn memory_key(&self) -> String {
        self.keys.key(&["idempotency-memory"])
    }

    fn retention_secs(&self) -> u64 {
        self.retention.as_secs().max(1)
    }

    /// Binds the key to `record` (state `Placing`) with `lease` for this attempt, unless it is
    /// bound already; resumes the bound order if its last attempt ended without an answer.
    pub async fn claim(
        &self,
        user_id: &str,
        idempotency_key: &str,
        record: &ClaimRecord,
        lease: &Lease,
        lease_for: Duration,
    ) -> Result<Claim, OrderError> {
        let mut redis = self.redis.clone();
        let (claim_key, lease_key) = self.keys(user_id, idempotency_key);
        let (outcome, complete, existing): (i64, i64, Option<String>) = self
            .claim
            .key(claim_key)
            .key(lease_key)
            .key(self.memory_key())
            .arg(record.encode())
            .arg(&lease.0)
            .arg(millis(lease_for))
            .arg(self.retention_secs())
            .arg(&record.fingerprint)
            .invoke_async(&mut redis)
            .await?;
        if outcome == 1 {
            return Ok(Claim::Claimed {
                memory_complete: complete == 1,
            });
        }
        let existing = existing.unwrap_or_default();
        let existing = ClaimRecord::decode(&existing)
            .ok_or_else(|| OrderError::Internal(format!("unreadable claim {existing:?}")))?;
        Ok(if outcome == 2 {
            Claim::Resumed(existing)
        } else {
            Claim::Taken(existing)
        })
    }

    /// Whether the key is bound to no order while Redis is known to hold every claim of the
    /// retention period (the memory marker): a refusal may then be answered without claiming
    /// the key. A read: both lookups in one round trip.
    pub async fn unbound(&self, user_id: &str, idempotency_key: &str) -> Result<bool, OrderError> {
        let (claim_key, _) = self.keys(user_id, idempotency_key);
        let (bound, complete): (bool, bool) = redis::pipe()
            .exists(claim_key)
            .exists(self.memory_key())
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(!bound && complete)
    }

    /// Unless a rebuild runs already in this process, starts one in the background: every
    /// order of the retention period persisted in PostgreSQL gets its placed claim back (claims
    /// Redis still has are kept), then the memory marker is set.
    pub fn rebuild_in_background(&self, pool: PgPool) {
        if self.rebuilding.swap(true, Ordering::SeqCst) {
            return;
        }
        // Before the claim that noticed the loss looks: what an earlier rebuild found is stale.
        self.log_applied.send_replace(false);
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

    /// While the memory is incomplete: waits up to `patience` until every order the log held
    /// when the rebuild began is in PostgreSQL (then a key PostgreSQL does not know was never
    /// used); whether it is. On an idle log that takes one round of requests to the broker.
    pub async fn log_applied(&self, patience: Duration) -> bool {
        let mut applied = self.log_applied.subscribe();
        tokio::time::timeout(patience, applied.wait_for(|applied| *applied))
            .await
            .is_ok_and(|changed| changed.is_ok())
    }

    /// At start-up: if Redis lacks the memory marker (a new deployment, or Redis lost its data
    /// while this process was down), starts the rebuild and waits up to `patience` for it to
    /// have caught up with the order log, so the first orders are not refused while it does.
    pub async fn restore_at_start(
        &self,
        pool: PgPool,
        patience: Duration,
    ) -> Result<(), OrderError> {
        let mut redis = self.redis.clone();
        let complete: bool = redis.exists(self.memory_key()).await?;
        if !complete {
            self.rebuild_in_background(pool);
            if !self.log_applied(patience).await {
                tracing::warn!(?patience, "idempotency keys are still being restored; new keys wait until consumer-worker has applied the order log");
            }
        }
        Ok(())
    }

    async fn rebuild(&self, pool: &PgPool) -> Result<u64, OrderError> {
        let mark = self.barrier.mark().await.map_err(barrier_error)?;
        while !self.barrier.reached(&mark).await.map_err(barrier_error)? {
            tokio::time::sleep(LOG_POLL).await;
        }
        self.log_applied.send_replace(true);
        let retention_secs = i64::try_from(self.retention.as_secs()).unwrap_or(i64::MAX);
        let mut rows = sqlx::query(
            "SELECT o.user_id, o.idempotency_key, o.order_id, o.created_at, \
                    EXTRACT(EPOCH FROM (o.created_at + $1 * interval '1 second' - now()))::bigint \
                      AS remaining_secs, \
                    array_agg(i.sku) AS skus, array_agg(i.quantity) AS quantities \
             FROM orders o JOIN order_items i USING (order_id) \
             WHERE o.created_at > now() - $1 * interval '1 second' AND NOT o.voided \
             GROUP BY o.order_id",
        )
        .bind(retention_secs)
        .fetch(pool);
        let mut redis = self.redis.clone();
        // Redis may lose its data again while the rebuild runs: then this token is gone too,
        // and the marker must stay unset (the claims restored before the loss are gone).
        let token = Uuid::new_v4().to_string();
        let rebuild_key = self.keys.key(&["idempotency-rebuild"]);
        let () = redis.set(&rebuild_key, &token).await?;
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
                // A placed claim is never resumed, so its event id is never published again.
                event_id: Uuid::nil(),
            };
            let remaining: i64 = row.try_get("remaining_secs")?;
            pipe.cmd("SET")
                .arg(self.keys(&user_id, &key).0)
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
        let finished: i64 = self
            .finish_rebuild
            .key(rebuild_key)
            .key(self.memory_key())
            .arg(token)
            .invoke_async(&mut redis)
            .await?;
        if finished == 0 {
            return Err(OrderError::Internal(
                "Redis lost its data while idempotency keys were rebuilt; rebuilding again".into(),
            ));
        }
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

    /// Adds to `pipe` the commands of [`Claims::mark_placed`] (the lease is no longer needed).
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
        let (claim_key, lease_key) = self.keys(user_id, idempotency_key);
        pipe.set_ex(claim_key, placed.encode(), self.retention_secs())
            .ignore()
            .del(lease_key)
            .ignore();
    }

    /// The Redis connection the claims live on (the cache's as well).
    pub fn redis(&self) -> RedisConnection {
        self.redis.clone()
    }

    /// Frees the key, if `lease` still holds it for `record`: its order was never sent to the
    /// broker, so a retry may place a new one.
    pub async fn abandon(
        &self,
        user_id: &str,
        idempotency_key: &str,
        record: &ClaimRecord,
        lease: &Lease,
    ) -> Result<(), OrderError> {
        let (claim_key, lease_key) = self.keys(user_id, idempotency_key);
        let _: i64 = self
            .abandon
            .key(claim_key)
            .key(lease_key)
            .arg(record.encode())
            .arg(&lease.0)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(())
    }

    /// Binds the key to `fresh` instead of `record`, if `lease` still holds it: `record`'s
    /// order is known not to exist (its stock was given back). `false`: someone else holds it.
    pub async fn rebind(
        &self,
        user_id: &str,
        idempotency_key: &str,
        record: &ClaimRecord,
        fresh: &ClaimRecord,
        lease: &Lease,
    ) -> Result<bool, OrderError> {
        let (claim_key, lease_key) = self.keys(user_id, idempotency_key);
        let rebound: i64 = self
            .rebind
            .key(claim_key)
            .key(lease_key)
            .arg(record.encode())
            .arg(fresh.encode())
            .arg(&lease.0)
            .arg(self.retention_secs())
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(rebound == 1)
    }

    /// Ends this attempt's lease early, keeping the key bound to its order (which may exist):
    /// a retry resumes it at once instead of waiting for the lease to run out.
    pub async fn release_lease(
        &self,
        user_id: &str,
        idempotency_key: &str,
        lease: &Lease,
    ) -> Result<(), OrderError> {
        let (_, lease_key) = self.keys(user_id, idempotency_key);
        let _: i64 = self
            .release_lease
            .key(lease_key)
            .arg(&lease.0)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(())
    }
}

/// How often the rebuild asks whether consumer-worker applied the log.
const LOG_POLL: Duration = Duration::from_millis(200);

fn barrier_error(error: orderflow_kafka::log_barrier::BarrierError) -> OrderError {
    OrderError::BrokerUnavailable(error.to_string())
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
        let record = ClaimRecord::new("00ff".into());
        assert_eq!(ClaimRecord::decode(&record.encode()), Some(record.clone()));
        assert!(record.encode().starts_with("placing|00ff|"));
        let placed = ClaimRecord {
            state: ClaimState::Placed,
            ..record
        };
        assert_eq!(ClaimRecord::decode(&placed.encode()), Some(placed));
        assert_eq!(ClaimRecord::decode("placed|x|not-a-uuid|1"), None);
        assert_eq!(ClaimRecord::decode("other|x|y|1"), None);
        // Written before claims carried their event id.
        let legacy = ClaimRecord::decode(&format!("placed|x|{}|1", Uuid::nil())).unwrap();
        assert_eq!(legacy.event_id, Uuid::nil());
    }
}

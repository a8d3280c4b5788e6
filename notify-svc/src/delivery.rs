//! Delivers stored notifications through the sink, at least once, from every notify-svc
//! process: each round claims a batch of due `pending` rows with `FOR UPDATE SKIP LOCKED` (so
//! replicas never deliver the same row at the same time), delivers them, and records each
//! outcome in the same transaction: `delivered`; or, after a failed attempt, the next attempt
//! with capped exponential backoff; or, after the last allowed attempt, `failed` with the error.
//! A crash between a delivery and its record delivers it again later: receivers deduplicate.
//!
//! Rounds run when the consumer stored a batch (woken), every `--delivery-interval-ms` (for
//! retries that fell due), and back to back while full batches are due.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{PgPool, Row};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::sink::Sink;
use crate::store::Stored;

/// Most notifications claimed by one round.
const ROUND_BATCH: i64 = 64;
/// Most deliveries of one round in flight at once.
const CONCURRENCY: usize = 16;

/// How failed attempts are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retries {
    /// Attempts before a notification is marked `failed` (at least 1).
    pub max_attempts: u32,
    /// Pause after the first failure; doubles after each further one.
    pub min_backoff: Duration,
    /// Longest pause.
    pub max_backoff: Duration,
}

impl Retries {
    /// After `attempts` attempts that all failed: the pause before the next one, or `None` if
    /// that was the last allowed.
    pub fn after_failures(&self, attempts: u32) -> Option<Duration> {
        if attempts >= self.max_attempts {
            return None;
        }
        let doublings = attempts.saturating_sub(1).min(31);
        let pause = self
            .min_backoff
            .checked_mul(1_u32 << doublings)
            .unwrap_or(self.max_backoff);
        Some(pause.min(self.max_backoff))
    }
}

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Delivered,
    Retry { after: Duration, error: String },
    Failed { error: String },
}

pub struct Delivery {
    pub pool: PgPool,
    pub sink: Sink,
    pub retries: Retries,
    pub interval: Duration,
    /// Wakes the task for a round now.
    pub wake: Arc<Notify>,
}

impl Delivery {
    /// Delivers due notifications until `shutdown` (a round in flight finishes first: it is
    /// bounded by the sink's timeout).
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(sink = self.sink.name(), "delivering notifications");
        loop {
            loop {
                match self.round().await {
                    Ok(claimed) if claimed == ROUND_BATCH as usize && !shutdown.is_cancelled() => {
                        continue
                    }
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(%error, "notification delivery round failed; retrying later");
                        break;
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// Claims, delivers and records up to a batch; answers how many were claimed.
    async fn round(&self) -> Result<usize, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "SELECT notification_id, event_id, user_id, order_id, event_type, text, created_at, \
                    delivery_attempts \
             FROM notifications \
             WHERE delivery_state = 'pending' AND next_delivery_at <= now() \
             ORDER BY next_delivery_at LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(ROUND_BATCH)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut due = Vec::with_capacity(rows.len());
        for row in &rows {
            let attempts: i32 = row.try_get("delivery_attempts")?;
            due.push((Stored::from_row(row)?, u32::try_from(attempts).unwrap_or(0)));
        }
        let mut outcomes = Vec::with_capacity(due.len());
        for chunk in due.chunks(CONCURRENCY) {
            let attempts = chunk
                .iter()
                .map(|(notification, attempts)| self.attempt(notification, attempts + 1));
            outcomes.extend(futures::future::join_all(attempts).await);
        }

        let mut ids: Vec<Uuid> = Vec::with_capacity(due.len());
        let mut states: Vec<&str> = Vec::with_capacity(due.len());
        let mut retry_after_ms: Vec<Option<i64>> = Vec::with_capacity(due.len());
        let mut errors: Vec<Option<String>> = Vec::with_capacity(due.len());
        for ((notification, _), outcome) in due.iter().zip(outcomes) {
            ids.push(notification.notification_id);
            let (state, after, error) = match outcome {
                Outcome::Delivered => ("delivered", None, None),
                Outcome::Retry { after, error } => (
                    "pending",
                    Some(i64::try_from(after.as_millis()).unwrap_or(i64::MAX)),
                    Some(error),
                ),
                Outcome::Failed { error } => ("failed", None, Some(error)),
            };
            states.push(state);
            retry_after_ms.push(after);
            errors.push(error);
        }
        sqlx::query(
            "UPDATE notifications AS n SET \
                 delivery_attempts = n.delivery_attempts + 1, \
                 delivery_state = o.state, \
                 delivered_at = CASE WHEN o.state = 'delivered' THEN clock_timestamp() END, \
                 next_delivery_at = CASE WHEN o.state = 'pending' \
                     THEN clock_timestamp() + o.retry_after_ms * interval '1 millisecond' \
                     ELSE n.next_delivery_at END, \
                 last_delivery_error = COALESCE(o.error, n.last_delivery_error) \
             FROM UNNEST($1::uuid[], $2::text[], $3::bigint[], $4::text[]) \
                 AS o(notification_id, state, retry_after_ms, error) \
             WHERE n.notification_id = o.notification_id",
        )
        .bind(&ids)
        .bind(&states)
        .bind(&retry_after_ms)
        .bind(&errors)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(due.len())
    }

    /// The `attempt`-th attempt (1-based) to deliver `notification`.
    async fn attempt(&self, notification: &Stored, attempt: u32) -> Outcome {
        let error = match self.sink.deliver(notification).await {
            Ok(()) => return Outcome::Delivered,
            Err(error) => error,
        };
        let notification_id = notification.notification_id;
        match self.retries.after_failures(attempt) {
            Some(after) => {
                tracing::warn!(%notification_id, attempt, ?after, %error, "notification delivery failed; will retry");
                Outcome::Retry { after, error }
            }
            None => {
                tracing::error!(
                    %notification_id,
                    user_id = %notification.user_id,
                    attempt,
                    %error,
                    "notification delivery failed for the last time; giving up (delivery_state = 'failed')"
                );
                Outcome::Failed { error }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_stops_at_the_last_attempt() {
        let retries = Retries {
            max_attempts: 5,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_millis(3_000),
        };
        let pauses: Vec<Option<Duration>> = (1..=6).map(|n| retries.after_failures(n)).collect();
        assert_eq!(
            pauses,
            [
                Some(Duration::from_millis(500)),
                Some(Duration::from_millis(1_000)),
                Some(Duration::from_millis(2_000)),
                Some(Duration::from_millis(3_000)),
                None,
                None,
            ]
        );
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let retries = Retries {
            max_attempts: u32::MAX,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
        };
        assert_eq!(retries.after_failures(1_000), Some(Duration::from_secs(30)));
        assert_eq!(retries.after_failures(0), Some(Duration::from_secs(1)));
    }

    #[test]
    fn one_attempt_means_no_retry() {
        let retries = Retries {
            max_attempts: 1,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(1),
        };
        assert_eq!(retries.after_failures(1), None);
    }
}

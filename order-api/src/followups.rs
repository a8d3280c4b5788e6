//! What a status change leaves to do after its commit, kept in PostgreSQL until done:
//! - the event in `order_outbox`, published to Kafka and deleted once the broker acknowledged
//!   it (consumers deduplicate on the event id, so publishing twice after a crash is harmless);
//! - the stock in `stock_settlements`, committed or released in inventory-svc (both idempotent
//!   there) and deleted once inventory-svc answered.
//!
//! The request that made the change settles its stock at once and wakes the relay; a
//! background task in every order-api process retries whatever is left. Rows are claimed with
//! `FOR UPDATE SKIP LOCKED`, so several replicas never work on the same one.

use std::sync::Arc;
use std::time::Duration;

use orderflow_proto::inventory::v1::{CommitRequest, ReleaseRequest};
use orderflow_proto::topics;
use sqlx::{PgPool, Row};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tracing::Instrument;
use uuid::Uuid;

use crate::deadline::CallDeadline;
use crate::error::OrderError;
use crate::events::{Event, Publisher};
use crate::lifecycle::StockSettlement;
use crate::InventoryClient;

/// The background task leaves a new settlement to its request for this long.
pub const SETTLE_GRACE_MS: i64 = 5_000;
/// Most outbox events published in one round.
const RELAY_BATCH: i64 = 256;
/// Time budget of one background round's calls.
const ROUND_LIMIT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Followups {
    pool: PgPool,
    inventory: InventoryClient,
    publisher: Arc<Publisher>,
    wake: Arc<Notify>,
}

impl Followups {
    pub fn new(pool: PgPool, inventory: InventoryClient, publisher: Arc<Publisher>) -> Self {
        Self {
            pool,
            inventory,
            publisher,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Right after a change committed: settles its stock within the caller's budget, and wakes
    /// the relay for its event. Failures are left to the background task.
    pub async fn after_change(&self, order_id: Uuid, has_stock: bool, deadline: CallDeadline) {
        if has_stock {
            if let Err(error) = self.settle(order_id, deadline).await {
                tracing::warn!(%order_id, %error, "stock settlement left to the background task");
            }
        }
        self.wake.notify_one();
    }

    /// Commits or releases the order's stock if a settlement is due and nobody else holds it.
    async fn settle(&self, order_id: Uuid, deadline: CallDeadline) -> Result<(), OrderError> {
        let mut tx = deadline
            .run("starting a PostgreSQL transaction", self.pool.begin())
            .await??;
        let pending = sqlx::query(
            "SELECT action, reason, attempts FROM stock_settlements WHERE order_id = $1 \
             FOR UPDATE SKIP LOCKED",
        )
        .bind(order_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(pending) = pending else {
            return Ok(());
        };
        let action: String = pending.try_get("action")?;
        let action = StockSettlement::from_db(&action)
            .ok_or_else(|| OrderError::Internal(format!("unknown stock settlement {action:?}")))?;
        let reason: String = pending.try_get("reason")?;
        let attempts: i32 = pending.try_get("attempts")?;
        let mut inventory = self.inventory.clone();
        let id = order_id.to_string();
        let answer = match action {
            StockSettlement::Commit => {
                let call = inventory.commit(deadline.request(CommitRequest { order_id: id }));
                deadline
                    .run("committing stock in inventory-svc", call)
                    .await?
                    .map(drop)
            }
            StockSettlement::Release => {
                let call = inventory.release(deadline.request(ReleaseRequest {
                    order_id: id,
                    reason,
                }));
                deadline
                    .run("releasing stock in inventory-svc", call)
                    .await?
                    .map(drop)
            }
        };
        let status = match answer {
            Ok(()) => None,
            // A release of a reservation inventory-svc never had has nothing to give back.
            Err(status)
                if status.code() == Code::NotFound && action == StockSettlement::Release =>
            {
                None
            }
            Err(status) => Some(status),
        };
        if let Some(status) = status {
            // Refused: the reservation is in the other final state. No retry can change that,
            // an operator must (e.g. refund a payment whose stock was released), so the row is
            // parked (no next attempt). Anything else is retried with capped backoff.
            let refused = matches!(status.code(), Code::FailedPrecondition | Code::NotFound);
            let retry_after_ms = (!refused).then(|| 1_000_i64 << attempts.clamp(0, 6));
            if refused {
                tracing::error!(%order_id, action = action.as_db(), %status, "stock settlement refused; left for an operator in stock_settlements");
            }
            sqlx::query(
                "UPDATE stock_settlements SET attempts = attempts + 1, last_error = $2, \
                        next_attempt_at = CASE WHEN $3::bigint IS NULL THEN 'infinity' \
                                          ELSE now() + $3 * interval '1 millisecond' END \
                 WHERE order_id = $1",
            )
            .bind(order_id)
            .bind(status.message())
            .bind(retry_after_ms)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return if refused {
                Ok(())
            } else {
                Err(OrderError::from_inventory(status))
            };
        }
        sqlx::query("DELETE FROM stock_settlements WHERE order_id = $1")
            .bind(order_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Publishes what the outbox holds and settles due stock, every `interval` or when a change
    /// wakes it, until `shutdown`.
    pub async fn run(self, interval: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(interval) => {}
            }
            loop {
                match self.relay_round().await {
                    Ok(published) if published == RELAY_BATCH as usize => continue,
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(%error, "outbox relay round failed; retrying later");
                        break;
                    }
                }
            }
            if let Err(error) = self.settle_due().await {
                tracing::warn!(%error, "stock settlement round failed; retrying later");
            }
        }
    }

    /// Publishes up to a batch of outbox events at once; answers how many were acknowledged.
    async fn relay_round(&self) -> Result<usize, OrderError> {
        let deadline = CallDeadline::within(ROUND_LIMIT);
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "SELECT id, order_id, topic, event_type, payload, trace_parent FROM order_outbox \
             ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(RELAY_BATCH)
        .fetch_all(&mut *tx)
        .await?;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            let topic: String = row.try_get("topic")?;
            let Some(topic) = topics::ALL.iter().copied().find(|known| *known == topic) else {
                return Err(OrderError::Internal(format!(
                    "outbox holds unknown topic {topic:?}"
                )));
            };
            let id: i64 = row.try_get("id")?;
            let order_id: Uuid = row.try_get("order_id")?;
            let trace_parent: Option<String> = row.try_get("trace_parent")?;
            events.push((
                id,
                Event {
                    topic,
                    event_type: row.try_get("event_type")?,
                    order_id: order_id.to_string(),
                    payload: row.try_get("payload")?,
                },
                trace_parent,
            ));
        }
        // Sent together: the producer batches them, and keeps each partition's order. Each in
        // the trace of the change that wrote it.
        let outcomes = futures::future::join_all(events.iter().map(|(_, event, trace_parent)| {
            let span = tracing::info_span!("outbox relay", order_id = %event.order_id);
            if let Some(trace_parent) = trace_parent {
                orderflow_telemetry::trace_context::set_parent(
                    &span,
                    orderflow_telemetry::trace_context::from_traceparent(trace_parent),
                );
            }
            self.publisher.publish(event, deadline.at).instrument(span)
        }))
        .await;
        let mut published = Vec::new();
        let mut failed = Vec::new();
        for ((id, _, _), outcome) in events.iter().zip(outcomes) {
            match outcome {
                Ok(()) => published.push(*id),
                Err(error) => failed.push((*id, error.to_string())),
            }
        }
        sqlx::query("DELETE FROM order_outbox WHERE id = ANY($1)")
            .bind(&published)
            .execute(&mut *tx)
            .await?;
        if let Some((_, error)) = failed.first() {
            let ids: Vec<i64> = failed.iter().map(|(id, _)| *id).collect();
            sqlx::query(
                "UPDATE order_outbox SET attempts = attempts + 1, last_error = $2 \
                 WHERE id = ANY($1)",
            )
            .bind(&ids)
            .bind(error)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(published.len())
    }

    async fn settle_due(&self) -> Result<(), OrderError> {
        let due: Vec<Uuid> = sqlx::query_scalar(
            "SELECT order_id FROM stock_settlements WHERE next_attempt_at <= now() \
             ORDER BY next_attempt_at LIMIT 256",
        )
        .fetch_all(&self.pool)
        .await?;
        for order_id in due {
            if let Err(error) = self
                .settle(order_id, CallDeadline::within(ROUND_LIMIT))
                .await
            {
                tracing::warn!(%order_id, %error, "stock settlement failed; retrying later");
            }
        }
        Ok(())
    }
}

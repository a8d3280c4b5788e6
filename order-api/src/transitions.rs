//! Status changes, each decided in one PostgreSQL transaction: lock the order's row (the
//! compare-and-set: concurrent changes of one order queue here, and each sees the status the
//! previous one left), ask the state machine, then write the new status, its history row, the
//! event to publish (outbox) and the stock to settle, and notify watchers, all committing
//! together. After the commit the cache gets the new version and the follow-ups (stock, event)
//! run at once; whatever they could not finish, the background follow-up task retries.
//!
//! An order consumer-worker has not persisted yet is persisted here first, from the cache,
//! in the same transaction: every change works right after CreateOrder answered. Like the
//! worker, it first confirms the order's reservation with inventory-svc (`order_rows`).
//!
//! Deadlines are compared on PostgreSQL's clock (the transaction's `now()`), the one the expiry
//! task selects due orders by, never on this process's.

use orderflow_order_rows::{self as order_rows, OrderRow};
use orderflow_proto::order::v1::Order;
use orderflow_proto::order_status;
use orderflow_runtime::timestamp;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::cache::OrderCache;
use crate::deadline::CallDeadline;
use crate::error::OrderError;
use crate::events::Event;
use crate::followups::{Followups, SETTLE_GRACE_MS};
use crate::lifecycle::{self, Action, Change, Decision};
use crate::store::{self, OrderStore};

/// Longest wait for inventory-svc to confirm the reservation of a cached order being persisted.
const CONFIRM_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// PostgreSQL `NOTIFY` channel announcing `order_id` after each committed status change.
pub const CHANGES_CHANNEL: &str = "orderflow_order_changes";

/// How a change waits for an order another transaction is changing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locking {
    /// Queue behind it (requests: each must get its answer).
    Wait,
    /// Pass it by (the expiry task: whoever holds it is already dealing with it).
    Skip,
}

#[derive(Clone)]
pub struct Transitions {
    pub store: OrderStore,
    pub cache: OrderCache,
    pub inventory: crate::InventoryClient,
    pub followups: Followups,
}

impl Transitions {
    /// Performs `action` on the order and answers the order after it (or as it is, for a
    /// repeat).
    pub async fn perform(
        &self,
        order_id: Uuid,
        action: Action,
        deadline: CallDeadline,
    ) -> Result<Order, OrderError> {
        self.perform_with(order_id, action, deadline, Locking::Wait)
            .await?
            .ok_or_else(|| OrderError::OrderNotFound(order_id.to_string()))
    }

    /// `None` when the order is unknown, or skipped under [`Locking::Skip`].
    pub async fn perform_with(
        &self,
        order_id: Uuid,
        action: Action,
        deadline: CallDeadline,
        locking: Locking,
    ) -> Result<Option<Order>, OrderError> {
        let (mut tx, locked) = self.begin_locked(order_id, deadline, locking).await?;
        let current = match locked {
            Some(locked) => locked,
            None if locking == Locking::Skip => return Ok(None),
            None => {
                // One connection at a time per change: holding this transaction open while
                // persisting in another could exhaust the pool with changes waiting on each other.
                drop(tx);
                let persisted = deadline
                    .run(
                        "persisting the order from the cache",
                        self.persist_placed(order_id, deadline),
                    )
                    .await??;
                if !persisted {
                    return Ok(None);
                }
                let (again, locked) = self.begin_locked(order_id, deadline, locking).await?;
                tx = again;
                match locked {
                    Some(locked) => locked,
                    None => return Ok(None),
                }
            }
        };
        let store::Locked {
            order: current,
            now,
        } = current;
        let change = match lifecycle::decide(&current, &action, now)? {
            Decision::Apply(change) => *change,
            // Nothing to write: the transaction rolls back as it is dropped.
            Decision::AlreadyDone | Decision::NotDue => return Ok(Some(current)),
        };
        deadline
            .run(
                "marking the order as changing in Redis",
                self.cache.mark_changing(order_id, change.order.version),
            )
            .await??;
        deadline
            .run(
                "writing the status change to PostgreSQL",
                write(&mut tx, order_id, &change),
            )
            .await??;
        // Not cut short by the deadline: once sent, the commit either happens or not, and
        // both leave a consistent order; the caller just may not hear which.
        tx.commit().await?;
        tracing::info!(%order_id, status = order_status::to_db(change.order.status()), version = change.order.version, "order status changed");

        let cached = deadline
            .run(
                "caching the new status",
                self.cache.put_if_newer(&change.order),
            )
            .await;
        if let Err(error) = cached.and_then(std::convert::identity) {
            // The cache still says a change is in flight, so readers ask PostgreSQL.
            tracing::warn!(%order_id, %error, "could not cache an order's new status");
        }
        self.followups
            .after_change(order_id, change.stock.is_some(), deadline)
            .await;
        Ok(Some(change.order))
    }

    /// A transaction with the order's row locked (`None`: no such row, or skipped).
    async fn begin_locked(
        &self,
        order_id: Uuid,
        deadline: CallDeadline,
        locking: Locking,
    ) -> Result<
        (
            sqlx::Transaction<'static, sqlx::Postgres>,
            Option<store::Locked>,
        ),
        OrderError,
    > {
        let mut tx = deadline
            .run(
                "starting a PostgreSQL transaction",
                self.store.pool().begin(),
            )
            .await??;
        let locked = deadline
            .run(
                "locking the order in PostgreSQL",
                store::lock(&mut tx, order_id, locking == Locking::Skip),
            )
            .await??;
        Ok((tx, locked))
    }

    /// Persists an order only the cache has (consumer-worker has not written it yet), in a
    /// transaction of its own: it stands whatever the change then decides. Voided if
    /// inventory-svc no longer holds its stock (and then dropped from the cache, whose pending
    /// copy is no longer true). `false` if the cache does not have it either, or another live
    /// order holds its idempotency key.
    async fn persist_placed(
        &self,
        order_id: Uuid,
        deadline: CallDeadline,
    ) -> Result<bool, OrderError> {
        let Some((order, idempotency_key)) = self.cache.placed(order_id).await? else {
            return Ok(false);
        };
        let row = OrderRow::from_order(&order, &idempotency_key).map_err(|reason| {
            OrderError::Internal(format!(
                "cached order {order_id} cannot be persisted: {reason}"
            ))
        })?;
        let mut tx = self.store.pool().begin().await?;
        order_rows::lock_keys(&mut tx, [(row.user_id.as_str(), idempotency_key.as_str())]).await?;
        // Briefly: without an answer the change goes on (below).
        let held = order_rows::stock_held(
            &mut self.inventory.clone(),
            &[order_id],
            (deadline.remaining() / 4).min(CONFIRM_WAIT),
        )
        .await;
        let voided = match held {
            Ok(held) => !held.contains(&order_id),
            // The order was acknowledged, so its event is in the log: its stock stays held
            // until consumer-worker confirms it as it applies that event. Persisting it live
            // without inventory-svc is safe, and the change need not wait for inventory-svc.
            Err(status) => {
                tracing::warn!(%order_id, %status, "persisting a cached order without confirming its reservation");
                false
            }
        };
        // Not inserted: consumer-worker just did, or another order holds the key.
        let inserted = order_rows::insert(&mut tx, &row, voided).await?;
        tx.commit().await?;
        if inserted && voided {
            tracing::warn!(%order_id, "cached order persisted voided: its stock was given back");
            self.cache.remove(order_id).await?;
        }
        Ok(true)
    }
}

/// Writes the change and everything that commits with it, in one statement, if the order is
/// still at the version the change was decided on.
async fn write(conn: &mut PgConnection, order_id: Uuid, change: &Change) -> Result<(), OrderError> {
    let order = &change.order;
    let event = Event::status_changed(order, change.reason.as_deref()).ok_or_else(|| {
        OrderError::Internal(format!("no event announces status {:?}", order.status()))
    })?;
    let updated_at = order
        .updated_at
        .as_ref()
        .and_then(timestamp::from_proto)
        .ok_or_else(|| OrderError::Internal("a change without a time".into()))?;
    let settlement_reason = match change.stock {
        Some(lifecycle::StockSettlement::Commit) => format!("order paid ({})", order.payment_id),
        _ => change.reason.clone().unwrap_or_default(),
    };
    let non_empty = |text: &str| (!text.is_empty()).then(|| text.to_owned());
    let written = sqlx::query(
        "WITH updated AS ( \
           UPDATE orders SET status = $2, version = $3, updated_at = $4, payment_id = $5, \
                             tracking_number = $6, cancel_reason = $7 \
           WHERE order_id = $1 AND version = $3 - 1 RETURNING order_id), \
         history AS ( \
           INSERT INTO order_status_history (order_id, version, status, reason, changed_at) \
           SELECT order_id, $3, $2, $8, $4 FROM updated), \
         outbox AS ( \
           INSERT INTO order_outbox (order_id, topic, event_type, payload, trace_parent) \
           SELECT order_id, $9, $10, $11, $16 FROM updated), \
         settlement AS ( \
           INSERT INTO stock_settlements (order_id, action, reason, next_attempt_at) \
           SELECT order_id, $12, $13, now() + $14 * interval '1 millisecond' \
           FROM updated WHERE $12::text IS NOT NULL) \
         SELECT pg_notify($15, order_id::text) FROM updated",
    )
    .bind(order_id)
    .bind(order_status::to_db(order.status()))
    .bind(order.version)
    .bind(updated_at)
    .bind(non_empty(&order.payment_id))
    .bind(non_empty(&order.tracking_number))
    .bind(non_empty(&order.cancel_reason))
    .bind(change.reason.as_deref())
    .bind(event.topic)
    .bind(&event.event_type)
    .bind(&event.payload)
    .bind(change.stock.map(lifecycle::StockSettlement::as_db))
    .bind(settlement_reason)
    .bind(SETTLE_GRACE_MS)
    .bind(CHANGES_CHANNEL)
    .bind(orderflow_telemetry::trace_context::current_traceparent())
    .fetch_optional(conn)
    .await?;
    // The row lock makes this impossible; the version check makes it a compare-and-set even so.
    match written {
        Some(_) => Ok(()),
        None => Err(OrderError::Internal(format!(
            "order {order_id} changed under a status change (expected version {})",
            order.version - 1
        ))),
    }
}

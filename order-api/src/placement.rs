//! The CreateOrder and GetOrder flows, composed from the adapters.
//!
//! Placing an order: claim the idempotency key → reserve stock (inventory-svc) → publish
//! `order-created` and wait for the ack → cache the pending order and mark the key placed (one
//! Redis round trip) → answer.
//! If any step fails, the steps before it are undone (reservation released, cache entry and
//! claim removed) and the caller gets an error: an order is either acknowledged and on its way
//! to PostgreSQL, or it left nothing behind.
//!
//! The placement runs in its own task, bounded by the create timeout, so a caller that hangs up
//! cannot interrupt it between two steps and leave half of it done.

use std::sync::Arc;
use std::time::Duration;

use orderflow_proto::events::v1::OrderCreated;
use orderflow_proto::inventory::v1::{ReleaseRequest, ReserveItem, ReserveRequest};
use orderflow_proto::order::v1::{CreateOrderRequest, Order};
use orderflow_runtime::timestamp;
use tracing::Instrument;
use uuid::Uuid;

use crate::cache::OrderCache;
use crate::deadline::CallDeadline;
use crate::error::OrderError;
use crate::events::Publisher;
use crate::idempotency::{Claim, ClaimRecord, ClaimState, Claims};
use crate::order::{self, NewOrder};
use crate::rate_limit::RateLimit;
use crate::reads::Reads;
use crate::InventoryClient;

/// Everything a placement needs, built once at start-up.
pub struct Parts {
    pub inventory: InventoryClient,
    /// `None`: no per-user limit.
    pub rate_limit: Option<RateLimit>,
    pub cache: OrderCache,
    pub claims: Claims,
    pub publisher: Arc<Publisher>,
    pub reads: Reads,
    pub currency: String,
    pub payment_window: Duration,
    /// When a placement failed without knowing whether its Reserve took effect, its
    /// reservation is released once more this long after the undo (see `place_or_undo`).
    pub late_release_after: Duration,
}

const RESERVE_STEP: &str = "reserving stock in inventory-svc";

/// What a failed placement may hold in inventory-svc, so its undo knows whether to release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reserved {
    /// inventory-svc refused the reservation: all-or-nothing, so nothing is held.
    Nothing,
    /// It may hold the order's units (reserved, or the outcome is unknown).
    Maybe,
}

#[derive(Clone)]
pub struct Placement {
    parts: Arc<Parts>,
}

impl Placement {
    pub fn new(parts: Parts) -> Self {
        Self {
            parts: Arc::new(parts),
        }
    }

    /// Places the order within `deadline`, which starts before the claim: the claim's lease,
    /// twice what is left of the budget, then outlives every step this placement may still
    /// take (so no retry can claim the key while it runs), and a caller with a short deadline
    /// does not lock its key for longer than that.
    pub async fn create(
        &self,
        request: CreateOrderRequest,
        deadline: CallDeadline,
    ) -> Result<Order, OrderError> {
        let new_order = NewOrder::validate(request)?;
        if let Some(limit) = &self.parts.rate_limit {
            deadline
                .run(
                    "checking the rate limit in Redis",
                    limit.take(&new_order.user_id),
                )
                .await??;
        }
        let record = ClaimRecord {
            state: ClaimState::Placing,
            fingerprint: new_order.fingerprint(),
            order_id: Uuid::now_v7(),
            created_at: timestamp::now(),
        };
        let claims = &self.parts.claims;
        let claim = deadline
            .run(
                "claiming the idempotency key in Redis",
                claims.claim(
                    &new_order.user_id,
                    &new_order.idempotency_key,
                    &record,
                    deadline.remaining() * 2,
                ),
            )
            .await??;
        match claim {
            Claim::Claimed { memory_complete } => {
                if !memory_complete {
                    if let Some(earlier) = self.placed_before(&new_order, &record).await? {
                        return Ok(earlier);
                    }
                }
                let parts = Arc::clone(&self.parts);
                // In this call's span: the placement's steps belong to its trace.
                tokio::spawn(place_or_undo(parts, new_order, record, deadline).in_current_span())
                    .await
                    .map_err(|error| OrderError::Internal(format!("placement task: {error}")))?
            }
            Claim::Taken(existing) if existing.fingerprint != record.fingerprint => {
                Err(OrderError::IdempotencyKeyReused)
            }
            Claim::Taken(existing) => match existing.state {
                ClaimState::Placing => Err(OrderError::InProgress),
                // Placed, so acknowledged: it is cached or, once persisted, in PostgreSQL.
                ClaimState::Placed => self
                    .parts
                    .reads
                    .find(existing.order_id)
                    .await?
                    .ok_or(OrderError::InProgress),
            },
        }
    }

    /// While Redis may have forgotten keys: the order PostgreSQL has under this key, which the
    /// claim `record` (just taken) is turned into; or the key's refusal if that order differs.
    async fn placed_before(
        &self,
        new_order: &NewOrder,
        record: &ClaimRecord,
    ) -> Result<Option<Order>, OrderError> {
        let claims = &self.parts.claims;
        let store = &self.parts.reads.store;
        claims.rebuild_in_background(store.pool().clone());
        let Some(earlier) = store
            .by_idempotency_key(&new_order.user_id, &new_order.idempotency_key)
            .await?
        else {
            return Ok(None);
        };
        if order::order_fingerprint(&earlier) != record.fingerprint {
            claims
                .abandon(&new_order.user_id, &new_order.idempotency_key, record)
                .await?;
            return Err(OrderError::IdempotencyKeyReused);
        }
        let placed = ClaimRecord {
            order_id: Uuid::try_parse(&earlier.order_id)
                .map_err(|error| OrderError::Internal(error.to_string()))?,
            ..record.clone()
        };
        claims
            .mark_placed(&new_order.user_id, &new_order.idempotency_key, &placed)
            .await?;
        Ok(Some(earlier))
    }
}

/// Places the order; if that fails, undoes what was done. The caller hears the outcome once the
/// undo finished or its deadline passed, whichever comes first: a dependency slow to undo (a
/// stalled inventory-svc) must not make the caller miss its deadline, and the undo goes on.
async fn place_or_undo(
    parts: Arc<Parts>,
    new_order: NewOrder,
    record: ClaimRecord,
    deadline: CallDeadline,
) -> Result<Order, OrderError> {
    let placed = parts.place(&new_order, &record, deadline).await;
    if let Err(error) = &placed {
        // A Reserve we stopped waiting for may still reach inventory-svc after the undo's
        // release (a stalled network delivers it late) and hold its units until the
        // reservation expires. Its order id is this placement's alone, so releasing it once
        // more later cannot touch anyone else's stock.
        let outcome_unknown = matches!(error, OrderError::InventoryUnavailable(_))
            || matches!(error, OrderError::Timeout { step, .. } if *step == RESERVE_STEP);
        // A Reserve inventory-svc refused (sold out, unknown SKU) holds nothing: no release, so
        // a sold-out answer costs no PostgreSQL transaction.
        let reserved = if matches!(error, OrderError::InventoryRefused(_)) {
            Reserved::Nothing
        } else {
            Reserved::Maybe
        };
        let undo = tokio::spawn(async move {
            parts.undo(&new_order, &record, reserved).await;
            if outcome_unknown {
                parts.release_late(record.order_id);
            }
        });
        // Elapsed: the undo goes on in its task.
        let _ = tokio::time::timeout_at(deadline.at, undo).await;
    }
    placed
}

impl Parts {
    fn release_late(&self, order_id: Uuid) {
        let (inventory, delay) = (self.inventory.clone(), self.late_release_after);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Err(status) = release(inventory, &order_id.to_string()).await {
                tracing::error!(%order_id, %status, "could not release the reservation of a failed order");
            }
        });
    }

    async fn place(
        &self,
        new_order: &NewOrder,
        record: &ClaimRecord,
        deadline: CallDeadline,
    ) -> Result<Order, OrderError> {
        let order_id = record.order_id.to_string();
        let mut inventory = self.inventory.clone();
        let reserve = inventory.reserve(
            deadline.request(ReserveRequest {
                order_id: order_id.clone(),
                items: new_order
                    .lines
                    .iter()
                    .map(|line| ReserveItem {
                        sku: line.sku.clone(),
                        quantity: line.quantity,
                    })
                    .collect(),
            }),
        );
        let reservation = deadline
            .run(RESERVE_STEP, reserve)
            .await?
            .map_err(OrderError::from_inventory)?
            .into_inner()
            .reservation
            .ok_or_else(|| OrderError::Internal("inventory answered no reservation".into()))?;

        let order = order::pending_order(
            record.order_id,
            new_order,
            &reservation.items,
            &self.currency,
            record.created_at,
            self.payment_window,
        )
        .map_err(|error| OrderError::Internal(error.to_string()))?;

        let event = OrderCreated {
            event_id: Uuid::now_v7().to_string(),
            order_id: order_id.clone(),
            occurred_at: order.created_at,
            order: Some(order.clone()),
            idempotency_key: new_order.idempotency_key.clone(),
        };
        // The publisher bounds its own wait by the deadline: it must purge what it gives up on.
        self.publisher.order_created(&event, deadline.at).await?;
        // Acknowledged: cache the order and mark its key placed, atomically and in one round
        // trip. Nobody can ask for the order before this answer names it, so caching it only now
        // loses nothing, and a failure here is undone like any other step.
        let mut pipe = redis::pipe();
        pipe.atomic();
        self.cache
            .put_placed(&mut pipe, &order, &new_order.idempotency_key);
        self.claims.mark_placed_in(
            &mut pipe,
            &new_order.user_id,
            &new_order.idempotency_key,
            record,
        );
        let mut redis = self.claims.redis();
        deadline
            .run(
                "caching the order and marking its key placed in Redis",
                pipe.query_async::<()>(&mut redis),
            )
            .await?
            .map_err(OrderError::from)?;
        tracing::info!(%order_id, user_id = %new_order.user_id, total_cents = order.total_cents, "order placed");
        Ok(order)
    }

    /// Best effort: each step is idempotent, and what fails here is logged for an operator.
    async fn undo(&self, new_order: &NewOrder, record: &ClaimRecord, reserved: Reserved) {
        let order_id = record.order_id.to_string();
        if reserved == Reserved::Maybe {
            if let Err(status) = release(self.inventory.clone(), &order_id).await {
                tracing::error!(%order_id, %status, "could not release the reservation of a failed order");
            }
        }
        if let Err(error) = self.cache.remove(&order_id).await {
            tracing::error!(%order_id, %error, "could not remove a failed order from the cache");
        }
        if let Err(error) = self
            .claims
            .abandon(&new_order.user_id, &new_order.idempotency_key, record)
            .await
        {
            tracing::error!(%order_id, %error, "could not free the idempotency key of a failed order");
        }
    }
}

/// Releases the reservation of a failed placement, if it has one.
async fn release(mut inventory: InventoryClient, order_id: &str) -> Result<(), tonic::Status> {
    let released = inventory
        .release(ReleaseRequest {
            order_id: order_id.to_owned(),
            reason: "order placement failed".into(),
        })
        .await;
    match released {
        Err(status) if status.code() != tonic::Code::NotFound => Err(status),
        _ => Ok(()),
    }
}

//! The CreateOrder and GetOrder flows, composed from the adapters.
//!
//! Placing an order: claim the idempotency key → reserve stock (inventory-svc) → cache the
//! pending order → publish `order-created` and wait for the ack → mark the key placed → answer.
//! If any step fails, the steps before it are undone (reservation released, cache entry and
//! claim removed) and the caller gets an error: an order is either acknowledged and on its way
//! to PostgreSQL, or it left nothing behind.
//!
//! The placement runs in its own task, bounded by the create timeout, so a caller that hangs up
//! cannot interrupt it between two steps and leave half of it done.

use std::sync::Arc;
use std::time::Duration;

use orderflow_proto::events::v1::OrderCreated;
use orderflow_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use orderflow_proto::inventory::v1::{ReleaseRequest, ReserveItem, ReserveRequest};
use orderflow_proto::order::v1::{CreateOrderRequest, Order};
use orderflow_runtime::{timestamp, validate};
use tonic::transport::Channel;
use uuid::Uuid;

use crate::cache::OrderCache;
use crate::error::OrderError;
use crate::events::Publisher;
use crate::idempotency::{Claim, ClaimRecord, ClaimState, Claims};
use crate::order::{self, NewOrder};
use crate::store::OrderStore;

/// Everything a placement needs, built once at start-up.
pub struct Parts {
    pub inventory: InventoryServiceClient<Channel>,
    pub cache: OrderCache,
    pub claims: Claims,
    pub publisher: Publisher,
    pub store: OrderStore,
    pub currency: String,
    pub create_timeout: Duration,
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

    pub async fn create(&self, request: CreateOrderRequest) -> Result<Order, OrderError> {
        // Starts before the claim, whose lease (twice the create timeout) thus outlives every
        // step this placement may still take: no retry can claim the key while it runs.
        let deadline = Deadline {
            at: tokio::time::Instant::now() + self.parts.create_timeout,
            total: self.parts.create_timeout,
        };
        let new_order = NewOrder::validate(request)?;
        let record = ClaimRecord {
            state: ClaimState::Placing,
            fingerprint: new_order.fingerprint(),
            order_id: Uuid::now_v7(),
            created_at: timestamp::now(),
        };
        let claim = self
            .parts
            .claims
            .claim(&new_order.user_id, &new_order.idempotency_key, &record)
            .await?;
        match claim {
            Claim::Claimed => {
                let parts = Arc::clone(&self.parts);
                tokio::spawn(async move { parts.place_or_undo(new_order, record, deadline).await })
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
                    .find(existing.order_id)
                    .await?
                    .ok_or(OrderError::InProgress),
            },
        }
    }

    pub async fn get(&self, order_id: &str) -> Result<Order, OrderError> {
        let id = validate::uuid("order_id", order_id)?;
        self.parts
            .find(id)
            .await?
            .ok_or_else(|| OrderError::OrderNotFound(order_id.to_owned()))
    }
}

/// The end of a placement's time budget, shared by its steps, so a timeout names the step
/// that was slow.
#[derive(Clone, Copy)]
struct Deadline {
    at: tokio::time::Instant,
    total: Duration,
}

impl Deadline {
    async fn run<T>(
        self,
        step: &'static str,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, OrderError> {
        tokio::time::timeout_at(self.at, work)
            .await
            .map_err(|_| OrderError::Timeout {
                step,
                after: self.total,
            })
    }
}

impl Parts {
    /// The cached order, else the persisted one (which then refills the cache). A cache that
    /// cannot be read is passed over: PostgreSQL still answers.
    async fn find(&self, order_id: Uuid) -> Result<Option<Order>, OrderError> {
        let key = order_id.to_string();
        match self.cache.get(&key).await {
            Ok(Some(order)) => return Ok(Some(order)),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, order_id = %key, "order cache unreadable; reading PostgreSQL")
            }
        }
        let Some(order) = self.store.get(order_id).await? else {
            return Ok(None);
        };
        // The reader has its answer; refilling the cache need not delay it.
        let cache = self.cache.clone();
        let cached = order.clone();
        tokio::spawn(async move {
            if let Err(error) = cache.put(&cached).await {
                tracing::warn!(%error, order_id = %key, "could not refill the order cache");
            }
        });
        Ok(Some(order))
    }

    async fn place_or_undo(
        &self,
        new_order: NewOrder,
        record: ClaimRecord,
        deadline: Deadline,
    ) -> Result<Order, OrderError> {
        let placed = self.place(&new_order, &record, deadline).await;
        if placed.is_err() {
            self.undo(&new_order, &record).await;
        }
        placed
    }

    async fn place(
        &self,
        new_order: &NewOrder,
        record: &ClaimRecord,
        deadline: Deadline,
    ) -> Result<Order, OrderError> {
        let order_id = record.order_id.to_string();
        let mut inventory = self.inventory.clone();
        let reserve = inventory.reserve(ReserveRequest {
            order_id: order_id.clone(),
            items: new_order
                .lines
                .iter()
                .map(|line| ReserveItem {
                    sku: line.sku.clone(),
                    quantity: line.quantity,
                })
                .collect(),
        });
        let reservation = deadline
            .run("reserving stock in inventory-svc", reserve)
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
        )
        .map_err(|error| OrderError::Internal(error.to_string()))?;

        deadline
            .run("caching the order in Redis", self.cache.put(&order))
            .await??;
        let event = OrderCreated {
            event_id: Uuid::now_v7().to_string(),
            order_id: order_id.clone(),
            occurred_at: order.created_at,
            order: Some(order.clone()),
            idempotency_key: new_order.idempotency_key.clone(),
        };
        // The publisher bounds its own wait by the deadline: it must purge what it gives up on.
        self.publisher.order_created(&event, deadline.at).await?;
        deadline
            .run(
                "marking the idempotency key placed in Redis",
                self.claims
                    .mark_placed(&new_order.user_id, &new_order.idempotency_key, record),
            )
            .await??;
        tracing::info!(%order_id, user_id = %new_order.user_id, total_cents = order.total_cents, "order placed");
        Ok(order)
    }

    /// Best effort: each step is idempotent, and what fails here is logged for an operator.
    async fn undo(&self, new_order: &NewOrder, record: &ClaimRecord) {
        let order_id = record.order_id.to_string();
        let released = self
            .inventory
            .clone()
            .release(ReleaseRequest {
                order_id: order_id.clone(),
                reason: "order placement failed".into(),
            })
            .await;
        match released {
            Ok(_) => {}
            Err(status) if status.code() == tonic::Code::NotFound => {}
            Err(status) => {
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

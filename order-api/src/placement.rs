//! CreateOrder: claim the idempotency key → reserve stock (inventory-svc) → publish
//! `order-created` and wait for the ack → cache the pending order and mark the key placed (one
//! Redis round trip) → answer.
//!
//! The rule everything here keeps: **once the broker may have the order's event, that order
//! may exist**, so nothing undoes it. A placement that failed before it sent its event frees the
//! key (its reservation, if any, is an orphan that inventory-svc returns within seconds). One
//! that failed after (no ack, Redis failing after the ack) or whose process died keeps the key
//! bound to its order: the client's retry resumes that same order — it answers it if it was
//! persisted, or publishes the same event again — and a second order is never placed for the
//! key. Stock is never released from here: inventory-svc returns the stock of a reservation no
//! order confirmed, once the order log is known to hold no order for it.
//!
//! The placement runs in its own task, bounded by the create timeout, so a caller that hangs up
//! cannot interrupt it between two steps.

use std::sync::Arc;
use std::time::{Duration, Instant};

use orderflow_proto::events::v1::OrderCreated;
use orderflow_proto::inventory::v1::{Reservation, ReservationState, ReserveItem, ReserveRequest};
use orderflow_proto::order::v1::{CreateOrderRequest, Order};
use tracing::Instrument;
use uuid::Uuid;

use crate::cache::OrderCache;
use crate::deadline::CallDeadline;
use crate::error::OrderError;
use crate::events::Publisher;
use crate::idempotency::{Claim, ClaimRecord, ClaimState, Claims, Lease};
use crate::order::{self, NewOrder};
use crate::rate_limit::RateLimit;
use crate::reads::Reads;
use crate::sold_out::SoldOutMemo;
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
    /// The SKUs inventory-svc reported short moments ago.
    pub sold_out: SoldOutMemo,
    /// Faults injected by the tests (see `fault`).
    pub faults: crate::fault::Faults,
}

/// How long the clean-up after a failed placement may take, after the caller was answered.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct Placement {
    parts: Arc<Parts>,
}

/// One placement attempt: the order its key is bound to, the lease it holds, and whether that
/// order's event may be in the log already.
struct Attempt {
    new_order: NewOrder,
    record: ClaimRecord,
    lease: Lease,
    may_be_published: bool,
}

impl Placement {
    pub fn new(parts: Parts) -> Self {
        Self {
            parts: Arc::new(parts),
        }
    }

    /// Places the order within `deadline`, which starts before the claim: the lease, twice
    /// what is left of the budget, then outlives every step this placement may still take (so
    /// no retry resumes the order while it runs), and a caller with a short deadline does not
    /// lock its key for longer than that.
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
        let claims = &self.parts.claims;
        if let Some(refusal) = self.sold_out_unclaimed(&new_order, deadline).await? {
            return Err(refusal);
        }
        let record = ClaimRecord::new(new_order.fingerprint());
        let lease = Lease::new();
        let claim = deadline
            .run(
                "claiming the idempotency key in Redis",
                claims.claim(
                    &new_order.user_id,
                    &new_order.idempotency_key,
                    &record,
                    &lease,
                    deadline.remaining() * 2,
                ),
            )
            .await??;
        let attempt = match claim {
            Claim::Claimed { memory_complete } => {
                if !memory_complete {
                    let placed_before = self.placed_before(&new_order, &record, &lease, deadline);
                    if let Some(earlier) = placed_before.await? {
                        return Ok(earlier);
                    }
                }
                Attempt {
                    new_order,
                    record,
                    lease,
                    may_be_published: false,
                }
            }
            Claim::Resumed(earlier) => {
                orderflow_telemetry::metrics::metrics()
                    .placements_resumed
                    .inc();
                tracing::info!(order_id = %earlier.order_id, "resuming the placement of an order whose last attempt ended without an answer");
                // The first attempt may have been acknowledged, and its order persisted.
                if let Some(order) = self.parts.reads.find(earlier.order_id).await? {
                    claims
                        .mark_placed(&new_order.user_id, &new_order.idempotency_key, &earlier)
                        .await?;
                    return Ok(order);
                }
                Attempt {
                    new_order,
                    record: earlier,
                    lease,
                    may_be_published: true,
                }
            }
            Claim::Taken(existing) if existing.fingerprint != record.fingerprint => {
                return Err(OrderError::IdempotencyKeyReused)
            }
            Claim::Taken(existing) => {
                return match existing.state {
                    ClaimState::Placing => Err(OrderError::InProgress),
                    // Placed, so acknowledged: it is cached or, once persisted, in PostgreSQL.
                    ClaimState::Placed => self
                        .parts
                        .reads
                        .find(existing.order_id)
                        .await?
                        .ok_or(OrderError::InProgress),
                };
            }
        };
        let parts = Arc::clone(&self.parts);
        // In this call's span: the placement's steps belong to its trace.
        tokio::spawn(place_or_leave(parts, attempt, deadline).in_current_span())
            .await
            .map_err(|error| OrderError::Internal(format!("placement task: {error}")))?
    }

    /// The memo's refusal of an order for a SKU inventory-svc reported short moments ago, if
    /// its key is bound to no order: a retry of a placed or placing order goes on to its claim
    /// and gets that order, whatever the memo says. One read instead of a claim and its release.
    async fn sold_out_unclaimed(
        &self,
        new_order: &NewOrder,
        deadline: CallDeadline,
    ) -> Result<Option<OrderError>, OrderError> {
        let requested = new_order
            .lines
            .iter()
            .map(|line| (line.sku.as_str(), line.quantity));
        let Some(shortage) = self.parts.sold_out.shortage(requested, Instant::now()) else {
            return Ok(None);
        };
        let unbound = deadline
            .run(
                "looking up the idempotency key in Redis",
                self.parts
                    .claims
                    .unbound(&new_order.user_id, &new_order.idempotency_key),
            )
            .await??;
        if !unbound {
            return Ok(None);
        }
        orderflow_telemetry::metrics::metrics()
            .sold_out_from_memo
            .inc();
        Ok(Some(OrderError::InsufficientStock(shortage)))
    }

    /// While Redis may have forgotten keys: the order PostgreSQL has under this key, which the
    /// claim `record` (just taken) is turned into; or the key's refusal if that order differs.
    async fn placed_before(
        &self,
        new_order: &NewOrder,
        record: &ClaimRecord,
        lease: &Lease,
        deadline: CallDeadline,
    ) -> Result<Option<Order>, OrderError> {
        let claims = &self.parts.claims;
        let store = &self.parts.reads.store;
        claims.rebuild_in_background(store.pool().clone());
        let earlier = store
            .by_idempotency_key(&new_order.user_id, &new_order.idempotency_key)
            .await?;
        let earlier = match earlier {
            Some(earlier) if order::order_fingerprint(&earlier) == record.fingerprint => earlier,
            other => {
                let refusal = match other {
                    Some(_) => OrderError::IdempotencyKeyReused,
                    None if claims.log_applied(deadline.remaining() / 4).await => return Ok(None),
                    // The key's order may be acknowledged and still only in the log: wait.
                    None => OrderError::KeysRestoring,
                };
                claims
                    .abandon(
                        &new_order.user_id,
                        &new_order.idempotency_key,
                        record,
                        lease,
                    )
                    .await?;
                return Err(refusal);
            }
        };
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

/// Places the order; if that fails, leaves the key as the failure allows (see the module
/// comment). The caller hears the outcome once that is done or its deadline passed, whichever
/// comes first: a Redis slow to answer must not make the caller miss its deadline.
async fn place_or_leave(
    parts: Arc<Parts>,
    mut attempt: Attempt,
    deadline: CallDeadline,
) -> Result<Order, OrderError> {
    let placed = parts.place(&mut attempt, deadline).await;
    if placed.is_err() {
        let cleanup = tokio::spawn(async move {
            let left = tokio::time::timeout(CLEANUP_TIMEOUT, parts.leave(&attempt)).await;
            if !matches!(left, Ok(Ok(()))) {
                let error = left.map_or_else(|_| "timed out".to_owned(), |e| format!("{e:?}"));
                // The lease runs out by itself: a retry resumes the order (or, if its claim was
                // to be freed, finds no order and places it anew) a little later.
                tracing::warn!(order_id = %attempt.record.order_id, %error, "could not release the idempotency key of a failed placement");
            }
        });
        // Elapsed: the clean-up goes on in its task.
        let _ = tokio::time::timeout_at(deadline.at, cleanup).await;
    }
    placed
}

impl Parts {
    async fn place(
        &self,
        attempt: &mut Attempt,
        deadline: CallDeadline,
    ) -> Result<Order, OrderError> {
        let mut reservation = self.reserve(attempt, deadline).await?;
        if reservation.state() == ReservationState::Released {
            // A resumed order whose stock inventory-svc already gave back: no order exists for
            // it (it returns stock only once the order log holds none), so the key is bound to a
            // new order and that one is placed instead.
            let fresh = ClaimRecord::new(attempt.record.fingerprint.clone());
            let new_order = &attempt.new_order;
            let rebound = deadline
                .run(
                    "binding the idempotency key to a new order in Redis",
                    self.claims.rebind(
                        &new_order.user_id,
                        &new_order.idempotency_key,
                        &attempt.record,
                        &fresh,
                        &attempt.lease,
                    ),
                )
                .await??;
            if !rebound {
                return Err(OrderError::InProgress);
            }
            tracing::info!(given_up = %attempt.record.order_id, order_id = %fresh.order_id, "the key's earlier order was never placed; placing a new one");
            attempt.record = fresh;
            attempt.may_be_published = false;
            reservation = self.reserve(attempt, deadline).await?;
        }
        if reservation.state() != ReservationState::Reserved {
            // Committed: the order exists and was paid, though it was not found a moment ago.
            return Err(OrderError::InProgress);
        }

        let record = &attempt.record;
        let new_order = &attempt.new_order;
        let order_id = record.order_id.to_string();
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
            event_id: record.event_id.to_string(),
            order_id: order_id.clone(),
            occurred_at: order.created_at,
            order: Some(order.clone()),
            idempotency_key: new_order.idempotency_key.clone(),
        };
        self.faults.before_publish().await;
        // From here on the event may reach the log whatever we hear back.
        attempt.may_be_published = true;
        // The publisher bounds its own wait by the deadline: it must purge what it gives up on.
        self.publisher.order_created(&event, deadline.at).await?;
        self.faults.after_ack().await;
        // Acknowledged: the order exists. Cache it and mark its key placed, atomically and in
        // one round trip. If Redis fails now, the order stands all the same: it is answered,
        // reads find it in PostgreSQL once consumer-worker persisted it, and a retry of its key
        // resumes it once the lease ran out and finds it there.
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
        let cached = deadline
            .run(
                "caching the order and marking its key placed in Redis",
                pipe.query_async::<()>(&mut redis),
            )
            .await;
        let failed = match cached {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(error) => Some(error.to_string()),
        };
        if let Some(error) = failed {
            orderflow_telemetry::metrics::metrics()
                .placed_not_cached
                .inc();
            tracing::warn!(%order_id, %error, "order placed, but not cached in Redis");
        }
        tracing::info!(%order_id, user_id = %new_order.user_id, total_cents = order.total_cents, "order placed");
        Ok(order)
    }

    /// Reserves the attempt's order's stock (a resumed order's reservation is answered as it
    /// is, and held for this attempt too). A fresh order for a SKU inventory-svc reported short
    /// moments ago gets that refusal again without asking; a resumed one always asks, since its
    /// order may exist.
    async fn reserve(
        &self,
        attempt: &Attempt,
        deadline: CallDeadline,
    ) -> Result<Reservation, OrderError> {
        let lines = &attempt.new_order.lines;
        let skus = || lines.iter().map(|line| line.sku.as_str());
        if !attempt.may_be_published {
            let requested = lines.iter().map(|line| (line.sku.as_str(), line.quantity));
            if let Some(shortage) = self.sold_out.shortage(requested, Instant::now()) {
                orderflow_telemetry::metrics::metrics()
                    .sold_out_from_memo
                    .inc();
                return Err(OrderError::InsufficientStock(shortage));
            }
        }
        let mut inventory = self.inventory.clone();
        let reserve = inventory.reserve(
            deadline.request(ReserveRequest {
                order_id: attempt.record.order_id.to_string(),
                items: lines
                    .iter()
                    .map(|line| ReserveItem {
                        sku: line.sku.clone(),
                        quantity: line.quantity,
                    })
                    .collect(),
            }),
        );
        let answer = deadline
            .run("reserving stock in inventory-svc", reserve)
            .await?
            .map_err(OrderError::from_inventory);
        match answer {
            Err(OrderError::InsufficientStock(shortage)) => {
                self.sold_out.remember(&shortage, Instant::now());
                Err(OrderError::InsufficientStock(shortage))
            }
            Err(error) => Err(error),
            Ok(answer) => {
                self.sold_out.forget(skus());
                answer
                    .into_inner()
                    .reservation
                    .ok_or_else(|| OrderError::Internal("inventory answered no reservation".into()))
            }
        }
    }

    /// After a failure: frees the key if the order's event was never sent (a retry places a new
    /// order); otherwise keeps the key bound to the order, which may exist, and ends the lease
    /// so a retry resumes it at once. The reservation stays: inventory-svc returns its stock if
    /// no order confirms it.
    async fn leave(&self, attempt: &Attempt) -> Result<(), OrderError> {
        let new_order = &attempt.new_order;
        if attempt.may_be_published {
            self.claims
                .release_lease(
                    &new_order.user_id,
                    &new_order.idempotency_key,
                    &attempt.lease,
                )
                .await
        } else {
            self.claims
                .abandon(
                    &new_order.user_id,
                    &new_order.idempotency_key,
                    &attempt.record,
                    &attempt.lease,
                )
                .await
        }
    }
}

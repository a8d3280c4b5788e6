//! Background repairs, once per sweep interval:
//!
//! - **Orphans**: a reservation held for a placement that no order confirmed (the placement
//!   failed, or its order-api died) returns its stock once its placement's deadline and the
//!   grace period have passed — but only once the order log is known to hold no order for it.
//!   An order acknowledged by the broker must keep its stock even if consumer-worker has not
//!   applied it yet, so the sweep takes PostgreSQL's time T, then marks the `order-created`
//!   log ([`LogBarrier`]), and releases reservations due by T only after consumer-worker's
//!   group has committed past the mark. Every placement that could publish an order for such a
//!   reservation ended before T, so its event, if any, was below the mark and has been applied,
//!   confirming the reservation first. While the log or the worker is unreachable, nothing is
//!   released. PostgreSQL picks the orphans with `FOR UPDATE SKIP LOCKED`, so replicas sweep
//!   together without releasing anything twice; Redis then mirrors each release.
//!   A confirmed reservation never expires here: its order's payment, cancellation or expiry
//!   settles it.
//! - Admissions Redis made but nobody confirmed PostgreSQL recorded (the admitting process died
//!   in between) are settled after a grace period: confirmed if PostgreSQL has them, else their
//!   units go back to Redis's `available`. Without this, a crash mid-sale would strand those
//!   units until their Redis records aged out.

use std::time::Duration;

use orderflow_kafka::log_barrier::{LogBarrier, Mark};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::counters::{Counters, Undo};
use crate::error::InventoryError;
use crate::ledger::Ledger;
use crate::stock::Settlement;

/// Reservations released, or admissions settled, per step.
const SWEEP_BATCH: usize = 500;

pub struct Sweeper {
    pub ledger: Ledger,
    pub counters: Counters,
    /// On `order-created`, for consumer-worker's group.
    pub barrier: LogBarrier,
    pub interval: Duration,
    /// How old an unconfirmed admission must be before it is settled; far longer than any
    /// PostgreSQL batch takes.
    pub unrecorded_grace: Duration,
}

/// An orphan sweep waiting for the order log's consumers: reservations due by `cutoff` are
/// released once the group has committed past `mark`, which was taken after `cutoff`.
struct Pending {
    cutoff: OffsetDateTime,
    mark: Mark,
}

impl Sweeper {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pending = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            match self.release_orphans(pending.take()).await {
                Ok(waiting) => pending = waiting,
                Err(error) => tracing::warn!(%error, "orphan sweep failed; retrying next tick"),
            }
            if let Err(error) = self.settle_unrecorded().await {
                tracing::warn!(%error, "settling unrecorded admissions failed; retrying next tick");
            }
        }
    }

    /// One step of the orphan sweep: starts a barrier when orphans are due, or releases them
    /// once the barrier started earlier is reached. Returns the barrier still waited for.
    async fn release_orphans(
        &self,
        pending: Option<Pending>,
    ) -> Result<Option<Pending>, InventoryError> {
        let pending = match pending {
            Some(pending) => pending,
            None => {
                let Some(cutoff) = self.ledger.orphans_due().await? else {
                    return Ok(None);
                };
                let mark = self.barrier.mark().await.map_err(barrier_error)?;
                Pending { cutoff, mark }
            }
        };
        if !self
            .barrier
            .reached(&pending.mark)
            .await
            .map_err(barrier_error)?
        {
            return Ok(Some(pending));
        }
        loop {
            let released = self
                .ledger
                .release_orphans(pending.cutoff, SWEEP_BATCH)
                .await?;
            for (order_id, reservation) in &released {
                tracing::info!(%order_id, "no order confirmed the reservation; stock returned");
                let order_id = order_id.to_string();
                if let Err(error) = self
                    .counters
                    .settle(&order_id, &reservation.lines, Settlement::Release)
                    .await
                {
                    // PostgreSQL has the units back; Redis keeps them counted as reserved (it
                    // runs behind, never ahead) until its counters are rebuilt.
                    tracing::warn!(%order_id, %error, "could not return orphaned units in Redis");
                }
            }
            orderflow_telemetry::metrics::metrics()
                .orphans_released
                .inc_by(u64::try_from(released.len()).unwrap_or(u64::MAX));
            if released.len() < SWEEP_BATCH {
                return Ok(None);
            }
        }
    }

    async fn settle_unrecorded(&self) -> Result<(), InventoryError> {
        for order_id in self
            .counters
            .unrecorded_for(self.unrecorded_grace, SWEEP_BATCH)
            .await?
        {
            let recorded = match uuid::Uuid::parse_str(&order_id) {
                Ok(uuid) => self.ledger.reservation(uuid).await?.is_some(),
                Err(_) => false,
            };
            if recorded {
                self.counters
                    .confirm(std::slice::from_ref(&order_id))
                    .await?;
            } else {
                let lines = self.counters.reserved_lines(&order_id).await?;
                tracing::warn!(%order_id, "an admission was never recorded; its units return");
                self.counters
                    .undo(&order_id, &lines, Undo::GiveBack)
                    .await?;
            }
        }
        Ok(())
    }
}

fn barrier_error(error: orderflow_kafka::log_barrier::BarrierError) -> InventoryError {
    InventoryError::Barrier(error.to_string())
}

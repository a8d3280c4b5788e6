//! Background repairs, once per sweep interval:
//!
//! - Reservations neither committed nor released in time (an order never paid, an order-api
//!   that crashed mid-placement) return their stock. PostgreSQL picks the due reservations with
//!   `FOR UPDATE SKIP LOCKED`, so several inventory-svc replicas sweep together without
//!   releasing anything twice; Redis then mirrors each release.
//! - Admissions Redis made but nobody confirmed PostgreSQL recorded (the admitting process died
//!   in between) are settled after a grace period: confirmed if PostgreSQL has them, else their
//!   units go back to Redis's `available`. Without this, a crash mid-sale would strand those
//!   units until their Redis records aged out.

use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::counters::{Counters, Undo};
use crate::error::InventoryError;
use crate::ledger::Ledger;
use crate::stock::Settlement;

/// Reservations released, or admissions settled, per step.
const SWEEP_BATCH: usize = 500;

#[derive(Clone)]
pub struct Sweeper {
    pub ledger: Ledger,
    pub counters: Counters,
    pub interval: Duration,
    /// How old an unconfirmed admission must be before it is settled; far longer than any
    /// PostgreSQL batch takes.
    pub unrecorded_grace: Duration,
}

impl Sweeper {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if let Err(error) = self.release_expired().await {
                tracing::warn!(%error, "expiry sweep failed; retrying next tick");
            }
            if let Err(error) = self.settle_unrecorded().await {
                tracing::warn!(%error, "settling unrecorded admissions failed; retrying next tick");
            }
        }
    }

    async fn release_expired(&self) -> Result<(), InventoryError> {
        loop {
            let released = self.ledger.release_expired(SWEEP_BATCH).await?;
            for (order_id, reservation) in &released {
                tracing::info!(%order_id, "reservation expired; stock returned");
                let order_id = order_id.to_string();
                if let Err(error) = self
                    .counters
                    .settle(&order_id, &reservation.lines, Settlement::Release)
                    .await
                {
                    // PostgreSQL has the units back; Redis keeps them counted as reserved (it
                    // runs behind, never ahead) until its counters are rebuilt.
                    tracing::warn!(%order_id, %error, "could not return expired units in Redis");
                }
            }
            if released.len() < SWEEP_BATCH {
                return Ok(());
            }
        }
    }

    async fn settle_unrecorded(&self) -> Result<(), InventoryError> {
        let cutoff = OffsetDateTime::now_utc() - self.unrecorded_grace;
        for order_id in self.counters.unrecorded_before(cutoff, SWEEP_BATCH).await? {
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

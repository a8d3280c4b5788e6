//! Returns the stock of reservations that were neither committed nor released in time (an
//! order never paid, or an order-api that crashed mid-placement). PostgreSQL picks the due
//! reservations with `FOR UPDATE SKIP LOCKED`, so several inventory-svc replicas sweep together
//! without releasing anything twice; Redis then mirrors each release.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::counters::Counters;
use crate::ledger::Ledger;
use crate::stock::Settlement;

/// Reservations released per transaction.
const SWEEP_BATCH: i64 = 500;

pub async fn sweep(
    ledger: Ledger,
    counters: Counters,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        loop {
            let released = match ledger.release_expired(SWEEP_BATCH).await {
                Ok(released) => released,
                Err(error) => {
                    tracing::warn!(%error, "expiry sweep failed; retrying next tick");
                    break;
                }
            };
            for (order_id, reservation) in &released {
                tracing::info!(%order_id, "reservation expired; stock returned");
                let order_id = order_id.to_string();
                if let Err(error) = counters
                    .settle(&order_id, &reservation.lines, Settlement::Release)
                    .await
                {
                    // PostgreSQL has the units back; Redis keeps them counted as reserved (it
                    // runs behind, never ahead) until its counters are rebuilt.
                    tracing::warn!(%order_id, %error, "could not return expired units in Redis");
                }
            }
            if released.len() < usize::try_from(SWEEP_BATCH).unwrap_or(usize::MAX) {
                break;
            }
        }
    }
}

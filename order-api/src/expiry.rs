//! Expires unpaid orders: every interval, each order-api process looks for PENDING orders past
//! their payment deadline and applies `Expire` to each, which releases its stock and publishes
//! `order-cancelled` (reason `expired`) like any other change. Replicas skip an order another
//! one is changing (`SKIP LOCKED`), and one that already expired is a no-op, so nothing is done
//! twice; the work lives in PostgreSQL, so a restart loses none of it.

use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::deadline::CallDeadline;
use crate::lifecycle::Action;
use crate::transitions::{Locking, Transitions};

/// Most orders one round expires.
const ROUND_SIZE: i64 = 256;
/// Time budget of expiring one order.
const EXPIRE_LIMIT: Duration = Duration::from_secs(10);

/// Expires due orders every `interval`, `concurrency` at a time (each holds a PostgreSQL
/// connection meanwhile), until `shutdown`.
pub async fn run(
    transitions: Transitions,
    interval: Duration,
    concurrency: usize,
    shutdown: CancellationToken,
) {
    let mut pause = interval;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        // A full round means more are due (a flash sale's unpaid orders expire together): the
        // next round starts at once.
        pause = match expire_round(&transitions, concurrency).await {
            Ok(expired) if expired == ROUND_SIZE as usize => Duration::ZERO,
            Ok(_) => interval,
            Err(error) => {
                tracing::warn!(%error, "could not look for expired orders; retrying later");
                interval
            }
        };
    }
}

/// Expires up to a round of due orders, several at a time; answers how many were due.
async fn expire_round(transitions: &Transitions, concurrency: usize) -> Result<usize, sqlx::Error> {
    let due: Vec<Uuid> = sqlx::query_scalar(
        "SELECT order_id FROM orders WHERE status = 'PENDING' AND expires_at <= now() \
         ORDER BY expires_at LIMIT $1",
    )
    .bind(ROUND_SIZE)
    .fetch_all(transitions.store.pool())
    .await?;
    let count = due.len();
    futures::stream::iter(due)
        .for_each_concurrent(concurrency, |order_id| async move {
            let expired = transitions
                .perform_with(
                    order_id,
                    Action::Expire,
                    CallDeadline::within(EXPIRE_LIMIT),
                    Locking::Skip,
                )
                .await;
            if let Err(error) = expired {
                tracing::warn!(%order_id, %error, "could not expire an order; retrying later");
            }
        })
        .await;
    Ok(count)
}

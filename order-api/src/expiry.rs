//! Expires unpaid orders: every interval, each order-api process looks for PENDING orders past
//! their payment deadline and applies `Expire` to each, which releases its stock and publishes
//! `order-cancelled` (reason `expired`) like any other change. Replicas skip an order another
//! one is changing (`SKIP LOCKED`), and one that already expired is a no-op, so nothing is done
//! twice; the work lives in PostgreSQL, so a restart loses none of it.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::deadline::CallDeadline;
use crate::lifecycle::Action;
use crate::transitions::{Locking, Transitions};

/// Most orders one round expires.
const ROUND_SIZE: i64 = 256;
/// Time budget of expiring one order.
const EXPIRE_LIMIT: Duration = Duration::from_secs(10);

pub async fn run(transitions: Transitions, interval: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let due: Result<Vec<Uuid>, sqlx::Error> = sqlx::query_scalar(
            "SELECT order_id FROM orders WHERE status = 'PENDING' AND expires_at <= now() \
             ORDER BY expires_at LIMIT $1",
        )
        .bind(ROUND_SIZE)
        .fetch_all(transitions.store.pool())
        .await;
        let due = match due {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(%error, "could not look for expired orders; retrying later");
                continue;
            }
        };
        for order_id in due {
            let expired = transitions
                .apply_with(
                    order_id,
                    Action::Expire,
                    CallDeadline::within(EXPIRE_LIMIT),
                    Locking::Skip,
                )
                .await;
            if let Err(error) = expired {
                tracing::warn!(%order_id, %error, "could not expire an order; retrying later");
            }
        }
    }
}

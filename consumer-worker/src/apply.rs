//! Applies events to PostgreSQL, each exactly once: the effect and the event id commit in one
//! transaction, and an event id already recorded makes the whole event a no-op.

use sqlx::PgPool;

use orderflow_runtime::order_rows;

use crate::record::{self, Created};

#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// The order was written.
    Inserted,
    /// The order was written as `CANCELLED`: its stock was no longer held when it arrived.
    InsertedCancelled,
    /// This event was applied before (a redelivery).
    DuplicateEvent,
    /// The order is already there: another event wrote it (the API published it twice), or
    /// order-api did, at the order's first status change.
    OrderExists,
    /// Another order already holds this user's idempotency key; this one was not written.
    IdempotencyKeyTaken,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The database refused the data itself (a constraint): retrying cannot help.
    #[error("PostgreSQL refused the event: {0}")]
    Refused(sqlx::Error),
    /// PostgreSQL is unreachable or failed for a passing reason: retry later.
    #[error("PostgreSQL unavailable: {0}")]
    Unavailable(sqlx::Error),
}

impl From<sqlx::Error> for ApplyError {
    fn from(error: sqlx::Error) -> Self {
        // SQLSTATE class 22 (data exception) and 23 (integrity constraint violation) are about
        // the data; everything else (connections, timeouts, shutdowns) may pass.
        let refused = error
            .as_database_error()
            .and_then(|db| db.code())
            .is_some_and(|code| code.starts_with("22") || code.starts_with("23"));
        if refused {
            Self::Refused(error)
        } else {
            Self::Unavailable(error)
        }
    }
}

pub async fn order_created(
    pool: &PgPool,
    topic: &str,
    created: &Created,
) -> Result<Applied, ApplyError> {
    let row = &created.row;
    let mut tx = pool.begin().await?;
    let first_time = sqlx::query(
        "INSERT INTO processed_events (event_id, topic, order_id) VALUES ($1, $2, $3) \
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(created.event_id)
    .bind(topic)
    .bind(row.order_id)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !first_time {
        tx.commit().await?;
        return Ok(Applied::DuplicateEvent);
    }

    // Locked so the reservation cannot be released between this check and the commit.
    let reservation_state: Option<String> =
        sqlx::query_scalar("SELECT state FROM reservations WHERE order_id = $1 FOR SHARE")
            .bind(row.order_id)
            .fetch_optional(&mut *tx)
            .await?;
    let cancel = record::arrival_cancel(reservation_state.as_deref());
    let cancelled = cancel.is_some();
    let applied = if order_rows::insert(&mut tx, row, cancel).await? {
        if cancelled {
            Applied::InsertedCancelled
        } else {
            Applied::Inserted
        }
    } else {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM orders WHERE order_id = $1)")
                .bind(row.order_id)
                .fetch_one(&mut *tx)
                .await?;
        if exists {
            Applied::OrderExists
        } else {
            Applied::IdempotencyKeyTaken
        }
    };
    tx.commit().await?;
    Ok(applied)
}

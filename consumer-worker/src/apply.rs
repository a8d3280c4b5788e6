//! Applies events to PostgreSQL, each exactly once: the effect and the event id commit in one
//! transaction, and an event id already recorded makes the whole event a no-op.

use sqlx::PgPool;

use crate::record::{self, OrderRow};

#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// The order was written.
    Inserted,
    /// The order was written as `CANCELLED`: its stock was no longer held when it arrived.
    InsertedCancelled,
    /// This event was applied before (a redelivery).
    DuplicateEvent,
    /// Another event already wrote this order (the API published it twice).
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
    row: &OrderRow,
) -> Result<Applied, ApplyError> {
    let mut tx = pool.begin().await?;
    let first_time = sqlx::query(
        "INSERT INTO processed_events (event_id, topic, order_id) VALUES ($1, $2, $3) \
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(row.event_id)
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
    let (status, cancel_reason) = record::arrival_status(row.status, reservation_state.as_deref());
    let inserted = sqlx::query(
        "INSERT INTO orders (order_id, user_id, idempotency_key, status, cancel_reason, \
                             total_cents, currency, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
    )
    .bind(row.order_id)
    .bind(&row.user_id)
    .bind(&row.idempotency_key)
    .bind(status)
    .bind(cancel_reason)
    .bind(row.total_cents)
    .bind(&row.currency)
    .bind(row.created_at)
    .bind(row.updated_at)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;

    let applied = if inserted {
        let line_numbers: Vec<i32> = (0..).take(row.items.len()).collect();
        let skus: Vec<&str> = row.items.iter().map(|item| item.sku.as_str()).collect();
        let quantities: Vec<i64> = row.items.iter().map(|item| item.quantity).collect();
        let prices: Vec<i64> = row.items.iter().map(|item| item.unit_price_cents).collect();
        sqlx::query(
            "INSERT INTO order_items (order_id, line_no, sku, quantity, unit_price_cents) \
             SELECT $1, * FROM UNNEST($2::int[], $3::text[], $4::bigint[], $5::bigint[])",
        )
        .bind(row.order_id)
        .bind(line_numbers)
        .bind(skus)
        .bind(quantities)
        .bind(prices)
        .execute(&mut *tx)
        .await?;
        if cancel_reason.is_some() {
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

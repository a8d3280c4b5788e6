//! Orders in PostgreSQL: reads (one statement for any number of orders, with their items),
//! keyset pages of one user's orders, and the locked read a status change starts with.

use orderflow_page_token::Cursor;
use orderflow_proto::order::v1::{Order, OrderItem, OrderStatus};
use orderflow_proto::order_status;
use orderflow_runtime::timestamp;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::OrderError;

/// The columns of an order and its items aggregated in line order, from `orders o`.
const ORDER_COLUMNS: &str = "o.order_id, o.user_id, o.status, o.total_cents, o.currency, \
     o.payment_id, o.tracking_number, o.cancel_reason, o.created_at, o.updated_at, \
     o.expires_at, o.version, i.skus, i.quantities, i.prices";
const ITEMS_JOIN: &str = "CROSS JOIN LATERAL ( \
       SELECT array_agg(sku ORDER BY line_no) AS skus, \
              array_agg(quantity ORDER BY line_no) AS quantities, \
              array_agg(unit_price_cents ORDER BY line_no) AS prices \
       FROM order_items WHERE order_id = o.order_id) i";

#[derive(Clone)]
pub struct OrderStore {
    pool: PgPool,
}

impl OrderStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The persisted orders among `order_ids`, in no particular order.
    pub async fn get_many(&self, order_ids: &[Uuid]) -> Result<Vec<Order>, OrderError> {
        let mut conn = self.pool.acquire().await?;
        fetch(&mut conn, order_ids).await
    }

    /// The order the user placed with `idempotency_key`, if it was persisted (an order recorded
    /// voided does not hold its key).
    pub async fn by_idempotency_key(
        &self,
        user_id: &str,
        idempotency_key: &str,
    ) -> Result<Option<Order>, OrderError> {
        let order_id: Option<Uuid> = sqlx::query_scalar(
            "SELECT order_id FROM orders WHERE user_id = $1 AND idempotency_key = $2 \
               AND NOT voided",
        )
        .bind(user_id)
        .bind(idempotency_key)
        .fetch_optional(&self.pool)
        .await?;
        match order_id {
            Some(order_id) => Ok(self.get_many(&[order_id]).await?.pop()),
            None => Ok(None),
        }
    }

    /// The order's history between two versions (both excluded), oldest first: (version,
    /// status, time of the change).
    pub async fn history_between(
        &self,
        order_id: Uuid,
        after: i64,
        before: i64,
    ) -> Result<Vec<(i64, OrderStatus, OffsetDateTime)>, OrderError> {
        let rows: Vec<(i64, String, OffsetDateTime)> = sqlx::query_as(
            "SELECT version, status, changed_at FROM order_status_history \
             WHERE order_id = $1 AND version > $2 AND version < $3 ORDER BY version",
        )
        .bind(order_id)
        .bind(after)
        .bind(before)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(version, status, at)| Ok((version, status_from_db(order_id, &status)?, at)))
            .collect()
    }

    /// Up to `limit` of the user's orders, newest first, after `cursor`.
    pub async fn page(
        &self,
        user_id: &str,
        cursor: Option<Cursor>,
        limit: i64,
    ) -> Result<Vec<Order>, OrderError> {
        let order = "ORDER BY o.created_at DESC, o.order_id DESC";
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM ( \
               SELECT * FROM orders o WHERE o.user_id = $1 \
                 AND ($2::timestamptz IS NULL OR (o.created_at, o.order_id) < ($2, $3)) \
               {order} LIMIT $4) o {ITEMS_JOIN} {order}"
        );
        sqlx::query(&sql)
            .bind(user_id)
            .bind(cursor.map(|cursor| cursor.created_at))
            .bind(cursor.map(|cursor| cursor.id))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(order_from_row)
            .collect()
    }
}

/// Locks the order's row for a status change and reads it; `None` if it is not persisted, or,
/// with `skip_locked`, if another transaction holds it.
pub async fn lock(
    conn: &mut PgConnection,
    order_id: Uuid,
    skip_locked: bool,
) -> Result<Option<Locked>, OrderError> {
    let sql = if skip_locked {
        "SELECT now() FROM orders WHERE order_id = $1 FOR UPDATE SKIP LOCKED"
    } else {
        "SELECT now() FROM orders WHERE order_id = $1 FOR UPDATE"
    };
    let locked: Option<OffsetDateTime> = sqlx::query_scalar(sql)
        .bind(order_id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(now) = locked else {
        return Ok(None);
    };
    Ok(fetch(conn, &[order_id])
        .await?
        .pop()
        .map(|order| Locked { order, now }))
}

/// An order locked for a change, and PostgreSQL's time: the clock its deadlines are compared on.
pub struct Locked {
    pub order: Order,
    pub now: OffsetDateTime,
}

async fn fetch(conn: &mut PgConnection, order_ids: &[Uuid]) -> Result<Vec<Order>, OrderError> {
    let sql =
        format!("SELECT {ORDER_COLUMNS} FROM orders o {ITEMS_JOIN} WHERE o.order_id = ANY($1)");
    sqlx::query(&sql)
        .bind(order_ids)
        .fetch_all(conn)
        .await?
        .iter()
        .map(order_from_row)
        .collect()
}

fn order_from_row(row: &PgRow) -> Result<Order, OrderError> {
    let order_id: Uuid = row.try_get("order_id")?;
    let status = status_from_db(order_id, &row.try_get::<String, _>("status")?)?;
    let skus: Vec<String> = row.try_get::<Option<_>, _>("skus")?.unwrap_or_default();
    let quantities: Vec<i64> = row
        .try_get::<Option<_>, _>("quantities")?
        .unwrap_or_default();
    let prices: Vec<i64> = row.try_get::<Option<_>, _>("prices")?.unwrap_or_default();
    let items = skus
        .into_iter()
        .zip(quantities)
        .zip(prices)
        .map(|((sku, quantity), unit_price_cents)| OrderItem {
            sku,
            quantity,
            unit_price_cents,
        })
        .collect();
    let at = |column: &str| -> Result<_, sqlx::Error> {
        Ok(row
            .try_get::<Option<OffsetDateTime>, _>(column)?
            .map(timestamp::to_proto))
    };
    let text = |column: &str| -> Result<String, sqlx::Error> {
        Ok(row
            .try_get::<Option<String>, _>(column)?
            .unwrap_or_default())
    };
    Ok(Order {
        order_id: order_id.to_string(),
        user_id: row.try_get("user_id")?,
        items,
        total_cents: row.try_get("total_cents")?,
        currency: row.try_get("currency")?,
        status: status.into(),
        created_at: at("created_at")?,
        updated_at: at("updated_at")?,
        payment_id: text("payment_id")?,
        tracking_number: text("tracking_number")?,
        cancel_reason: text("cancel_reason")?,
        expires_at: at("expires_at")?,
        version: row.try_get("version")?,
    })
}

fn status_from_db(order_id: Uuid, status: &str) -> Result<OrderStatus, OrderError> {
    order_status::from_db(status).ok_or_else(|| {
        OrderError::Internal(format!("order {order_id} has unknown status {status:?}"))
    })
}

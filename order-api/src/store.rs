//! Reads persisted orders from PostgreSQL (consumer-worker writes them).

use orderflow_proto::order::v1::{Order, OrderItem};
use orderflow_proto::order_status;
use orderflow_runtime::timestamp;
use sqlx::{PgPool, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::OrderError;

#[derive(Clone)]
pub struct OrderStore {
    pool: PgPool,
}

impl OrderStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub async fn get(&self, order_id: Uuid) -> Result<Option<Order>, OrderError> {
        let Some(row) = sqlx::query(
            "SELECT user_id, status, total_cents, currency, payment_id, tracking_number, \
                    cancel_reason, created_at, updated_at, expires_at \
             FROM orders WHERE order_id = $1",
        )
        .bind(order_id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let items = sqlx::query(
            "SELECT sku, quantity, unit_price_cents FROM order_items \
             WHERE order_id = $1 ORDER BY line_no",
        )
        .bind(order_id)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|item| {
            Ok(OrderItem {
                sku: item.try_get("sku")?,
                quantity: item.try_get("quantity")?,
                unit_price_cents: item.try_get("unit_price_cents")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;

        let status: String = row.try_get("status")?;
        let status = order_status::from_db(&status).ok_or_else(|| {
            OrderError::Internal(format!("order {order_id} has unknown status {status:?}"))
        })?;
        let at = |column: &str| -> Result<_, sqlx::Error> {
            Ok(row
                .try_get::<Option<OffsetDateTime>, _>(column)?
                .map(timestamp::to_proto))
        };
        Ok(Some(Order {
            order_id: order_id.to_string(),
            user_id: row.try_get("user_id")?,
            items,
            total_cents: row.try_get("total_cents")?,
            currency: row.try_get("currency")?,
            status: status.into(),
            created_at: at("created_at")?,
            updated_at: at("updated_at")?,
            payment_id: row
                .try_get::<Option<String>, _>("payment_id")?
                .unwrap_or_default(),
            tracking_number: row
                .try_get::<Option<String>, _>("tracking_number")?
                .unwrap_or_default(),
            cancel_reason: row
                .try_get::<Option<String>, _>("cancel_reason")?
                .unwrap_or_default(),
            expires_at: at("expires_at")?,
        }))
    }
}

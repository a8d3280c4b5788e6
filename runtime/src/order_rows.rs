//! The rows of a newly placed order, written by whichever process persists it first:
//! consumer-worker (from `order-created`) or order-api (the first status change of an order the
//! worker has not persisted yet). Both go through here, so the two writes cannot drift apart,
//! and whichever comes second finds the order there and writes nothing.

use orderflow_proto::order::v1::{Order, OrderStatus};
use orderflow_proto::order_status;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::timestamp;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRow {
    pub order_id: Uuid,
    pub user_id: String,
    pub idempotency_key: String,
    pub status: &'static str,
    pub total_cents: i64,
    pub currency: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    pub items: Vec<ItemRow>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRow {
    pub sku: String,
    pub quantity: i64,
    pub unit_price_cents: i64,
}

impl OrderRow {
    /// The rows of a placed `order`; `Err` names what the order lacks (such an order can never
    /// be written).
    pub fn from_order(order: &Order, idempotency_key: &str) -> Result<Self, String> {
        let order_id = Uuid::try_parse(&order.order_id)
            .map_err(|_| format!("bad order_id {:?}", order.order_id))?;
        let status = order_status::from_db(order_status::to_db(order.status()))
            .map(order_status::to_db)
            .ok_or_else(|| format!("order has no valid status ({})", order.status))?;
        if order.items.is_empty() {
            return Err("order has no items".into());
        }
        let at = |field: &str, value: &Option<prost_types::Timestamp>| {
            value
                .as_ref()
                .and_then(timestamp::from_proto)
                .ok_or_else(|| format!("order has no valid {field}"))
        };
        Ok(Self {
            order_id,
            user_id: order.user_id.clone(),
            idempotency_key: idempotency_key.to_owned(),
            status,
            total_cents: order.total_cents,
            currency: order.currency.clone(),
            created_at: at("created_at", &order.created_at)?,
            updated_at: at("updated_at", &order.updated_at)?,
            // Orders placed before payment deadlines existed carry none: they never expire.
            expires_at: order.expires_at.as_ref().and_then(timestamp::from_proto),
            items: order
                .items
                .iter()
                .map(|item| ItemRow {
                    sku: item.sku.clone(),
                    quantity: item.quantity,
                    unit_price_cents: item.unit_price_cents,
                })
                .collect(),
        })
    }
}

/// Why an order was recorded `CANCELLED` on arrival, when it is not simply written as placed.
pub struct ArrivalCancel {
    pub reason: &'static str,
}

/// Inserts the order (version 1), its items and its first history row; `false` when another
/// order with this id or idempotency key is already there, and then nothing was written.
/// `cancelled` records it as `CANCELLED` with that reason instead of its own status.
pub async fn insert(
    conn: &mut PgConnection,
    row: &OrderRow,
    cancelled: Option<ArrivalCancel>,
) -> Result<bool, sqlx::Error> {
    let (status, reason) = match &cancelled {
        Some(cancel) => (
            order_status::to_db(OrderStatus::Cancelled),
            Some(cancel.reason),
        ),
        None => (row.status, None),
    };
    let inserted = sqlx::query(
        "INSERT INTO orders (order_id, user_id, idempotency_key, status, cancel_reason, \
                             total_cents, currency, created_at, updated_at, expires_at, version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 1) ON CONFLICT DO NOTHING",
    )
    .bind(row.order_id)
    .bind(&row.user_id)
    .bind(&row.idempotency_key)
    .bind(status)
    .bind(reason)
    .bind(row.total_cents)
    .bind(&row.currency)
    .bind(row.created_at)
    .bind(row.updated_at)
    .bind(row.expires_at)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if !inserted {
        return Ok(false);
    }
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
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO order_status_history (order_id, version, status, reason, changed_at) \
         VALUES ($1, 1, $2, $3, $4)",
    )
    .bind(row.order_id)
    .bind(status)
    .bind(reason)
    .bind(row.created_at)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use orderflow_proto::order::v1::OrderItem;

    use super::*;

    fn order() -> Order {
        let now = Some(timestamp::to_proto(timestamp::now()));
        Order {
            order_id: Uuid::now_v7().to_string(),
            user_id: "u".into(),
            items: vec![OrderItem {
                sku: "a".into(),
                quantity: 2,
                unit_price_cents: 100,
            }],
            total_cents: 200,
            currency: "CNY".into(),
            status: OrderStatus::Pending.into(),
            created_at: now,
            updated_at: now,
            expires_at: now,
            version: 1,
            ..Order::default()
        }
    }

    #[test]
    fn a_complete_order_becomes_rows() {
        let row = OrderRow::from_order(&order(), "k").unwrap();
        assert_eq!(row.status, "PENDING");
        assert_eq!(row.items.len(), 1);
        assert_eq!(row.total_cents, 200);
        assert!(row.expires_at.is_some());
    }

    #[test]
    fn incomplete_orders_cannot_become_rows() {
        let mut bad_id = order();
        bad_id.order_id = "x".into();
        let mut no_status = order();
        no_status.status = 0;
        let mut no_items = order();
        no_items.items.clear();
        let mut no_time = order();
        no_time.created_at = None;
        for bad in [bad_id, no_status, no_items, no_time] {
            assert!(OrderRow::from_order(&bad, "k").is_err(), "{bad:?}");
        }
    }
}

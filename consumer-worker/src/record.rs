//! Turns an `order-created` event into the rows it writes, checking everything a row needs:
//! an event that fails here can never be applied and is skipped as poison, not retried.

use orderflow_proto::events::v1::OrderCreated;
use orderflow_proto::order::v1::OrderStatus;
use orderflow_proto::order_status;
use orderflow_runtime::timestamp;
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRow {
    pub event_id: Uuid,
    pub order_id: Uuid,
    pub user_id: String,
    pub idempotency_key: String,
    pub status: &'static str,
    pub total_cents: i64,
    pub currency: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub items: Vec<ItemRow>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRow {
    pub sku: String,
    pub quantity: i64,
    pub unit_price_cents: i64,
}

/// Why an order is recorded `CANCELLED` when it arrives without stock held for it: its
/// reservation was released (or never made) before the order was recorded, and no stock was
/// taken. Such an order does not hold its idempotency key (see the migrations).
pub const STOCK_NOT_HELD: &str = "stock_not_held";

/// The status an arriving order is recorded with, given its reservation's state in PostgreSQL
/// (`None`: no reservation). Normally the reservation is held and the order keeps its status.
/// If the stock was already given back (the API heard no broker acknowledgement and undid the
/// placement, yet the event arrived), recording it as placed would sell units someone else may
/// now hold: it is recorded `CANCELLED` with a reason instead, and no stock moves.
pub fn arrival_status(
    status: &'static str,
    reservation_state: Option<&str>,
) -> (&'static str, Option<&'static str>) {
    match reservation_state {
        Some("reserved" | "committed") => (status, None),
        _ => (
            order_status::to_db(OrderStatus::Cancelled),
            Some(STOCK_NOT_HELD),
        ),
    }
}

pub fn order_created(event: &OrderCreated) -> Result<OrderRow, String> {
    let event_id = Uuid::try_parse(&event.event_id)
        .map_err(|_| format!("bad event_id {:?}", event.event_id))?;
    let order = event.order.as_ref().ok_or("event carries no order")?;
    let order_id = Uuid::try_parse(&order.order_id)
        .map_err(|_| format!("bad order_id {:?}", order.order_id))?;
    if event.order_id != order.order_id {
        return Err(format!(
            "event order_id {:?} differs from its order's {:?}",
            event.order_id, order.order_id
        ));
    }
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
    Ok(OrderRow {
        event_id,
        order_id,
        user_id: order.user_id.clone(),
        idempotency_key: event.idempotency_key.clone(),
        status,
        total_cents: order.total_cents,
        currency: order.currency.clone(),
        created_at: at("created_at", &order.created_at)?,
        updated_at: at("updated_at", &order.updated_at)?,
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

#[cfg(test)]
mod tests {
    use orderflow_proto::order::v1::{Order, OrderItem};

    use super::*;

    #[test]
    fn an_order_without_held_stock_arrives_cancelled() {
        for held in ["reserved", "committed"] {
            assert_eq!(arrival_status("PENDING", Some(held)), ("PENDING", None));
        }
        for gone in [Some("released"), None] {
            assert_eq!(
                arrival_status("PENDING", gone),
                ("CANCELLED", Some(STOCK_NOT_HELD))
            );
        }
    }

    fn event() -> OrderCreated {
        let order_id = Uuid::now_v7().to_string();
        let now = Some(timestamp::to_proto(timestamp::now()));
        OrderCreated {
            event_id: Uuid::now_v7().to_string(),
            order_id: order_id.clone(),
            occurred_at: now,
            order: Some(Order {
                order_id,
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
                ..Order::default()
            }),
            idempotency_key: "k".into(),
        }
    }

    #[test]
    fn a_complete_event_becomes_rows() {
        let row = order_created(&event()).unwrap();
        assert_eq!(row.status, "PENDING");
        assert_eq!(row.items.len(), 1);
        assert_eq!(row.total_cents, 200);
    }

    #[test]
    fn incomplete_events_are_poison() {
        let mut no_order = event();
        no_order.order = None;
        let mut bad_id = event();
        bad_id.event_id = "x".into();
        let mut mismatch = event();
        mismatch.order_id = Uuid::now_v7().to_string();
        let mut no_status = event();
        if let Some(order) = no_status.order.as_mut() {
            order.status = 0;
        }
        let mut no_items = event();
        if let Some(order) = no_items.order.as_mut() {
            order.items.clear();
        }
        let mut no_time = event();
        if let Some(order) = no_time.order.as_mut() {
            order.created_at = None;
        }
        for bad in [no_order, bad_id, mismatch, no_status, no_items, no_time] {
            assert!(order_created(&bad).is_err(), "{bad:?}");
        }
    }
}

//! Turns an `order-created` event into the rows it writes, checking everything a row needs:
//! an event that fails here can never be applied and is skipped as poison, not retried.

use orderflow_proto::events::v1::OrderCreated;
use orderflow_runtime::order_rows::{ArrivalCancel, OrderRow};
use uuid::Uuid;

/// An `order-created` event that can be applied: its id and the rows of its order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub event_id: Uuid,
    pub row: OrderRow,
}

/// Why an order is recorded `CANCELLED` when it arrives without stock held for it: its
/// reservation was released (or never made) before the order was recorded, and no stock was
/// taken. Such an order does not hold its idempotency key (see the migrations).
pub const STOCK_NOT_HELD: &str = "stock_not_held";

/// Whether an arriving order is recorded `CANCELLED`, given its reservation's state in
/// PostgreSQL (`None`: no reservation). Normally the reservation is held and the order is
/// recorded as placed. If the stock was already given back (the API heard no broker
/// acknowledgement and undid the placement, yet the event arrived), recording it as placed
/// would sell units someone else may now hold: it is recorded `CANCELLED` with a reason
/// instead, and no stock moves.
pub fn arrival_cancel(reservation_state: Option<&str>) -> Option<ArrivalCancel> {
    match reservation_state {
        Some("reserved" | "committed") => None,
        _ => Some(ArrivalCancel {
            reason: STOCK_NOT_HELD,
        }),
    }
}

pub fn order_created(event: &OrderCreated) -> Result<Created, String> {
    let event_id = Uuid::try_parse(&event.event_id)
        .map_err(|_| format!("bad event_id {:?}", event.event_id))?;
    let order = event.order.as_ref().ok_or("event carries no order")?;
    if event.order_id != order.order_id {
        return Err(format!(
            "event order_id {:?} differs from its order's {:?}",
            event.order_id, order.order_id
        ));
    }
    Ok(Created {
        event_id,
        row: OrderRow::from_order(order, &event.idempotency_key)?,
    })
}

#[cfg(test)]
mod tests {
    use orderflow_proto::order::v1::{Order, OrderItem, OrderStatus};
    use orderflow_runtime::timestamp;

    use super::*;

    #[test]
    fn an_order_without_held_stock_arrives_cancelled() {
        for held in ["reserved", "committed"] {
            assert!(arrival_cancel(Some(held)).is_none());
        }
        for gone in [Some("released"), None] {
            assert_eq!(
                arrival_cancel(gone).map(|cancel| cancel.reason),
                Some(STOCK_NOT_HELD)
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
        let created = order_created(&event()).unwrap();
        assert_eq!(created.row.status, "PENDING");
        assert_eq!(created.row.idempotency_key, "k");
    }

    #[test]
    fn incomplete_events_are_poison() {
        let mut no_order = event();
        no_order.order = None;
        let mut bad_id = event();
        bad_id.event_id = "x".into();
        let mut mismatch = event();
        mismatch.order_id = Uuid::now_v7().to_string();
        let mut no_items = event();
        if let Some(order) = no_items.order.as_mut() {
            order.items.clear();
        }
        for bad in [no_order, bad_id, mismatch, no_items] {
            assert!(order_created(&bad).is_err(), "{bad:?}");
        }
    }
}

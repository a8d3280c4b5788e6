//! From a consumed order event to the notification to store, or the reason it can never be one
//! (then the consume loop dead-letters it). Every event type shares fields 1-4 (event id, order
//! id, time, order snapshot), so the common part is read as `OrderCompleted`; the topic says
//! which extra field (reason, tracking number, amount) the text needs.

use orderflow_kafka::consume::Received;
use orderflow_proto::events::v1::{
    OrderCancelled, OrderCompleted, OrderCreated, OrderPaid, OrderShipped,
};
use orderflow_proto::limits::MAX_ID_LEN;
use orderflow_proto::order::v1::{Order, OrderStatus};
use orderflow_proto::topics;
use orderflow_runtime::validate;
use prost::Message;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::text::{self, Happened};

/// A notification made from an event, not stored yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    pub notification_id: Uuid,
    pub event_id: Uuid,
    pub user_id: String,
    pub order_id: Uuid,
    /// The unprefixed topic, e.g. `order-paid`.
    pub event_type: &'static str,
    pub text: String,
    /// When the event happened and the order's version after it: a batch is stored in this
    /// order, so a user's notifications list in the order things happened even when their
    /// events arrived in one batch from different topics.
    pub happened: (OffsetDateTime, i64),
}

/// The notification `message` (consumed from `message.topic`) turns into, or why it cannot.
pub fn notification(message: &Received) -> Result<NewNotification, String> {
    let payload = message.payload.as_slice();
    let common = OrderCompleted::decode(payload)
        .map_err(|error| format!("not a protobuf order event: {error}"))?;
    let event_id = validate::uuid("event_id", &common.event_id).map_err(|e| e.to_string())?;
    let order = common
        .order
        .as_ref()
        .ok_or("order: missing (every event carries the order snapshot)")?;
    let order_id = if common.order_id.is_empty() {
        &order.order_id
    } else {
        &common.order_id
    };
    let order_id = validate::uuid("order_id", order_id).map_err(|e| e.to_string())?;
    validate::identifier("order.user_id", &order.user_id, MAX_ID_LEN).map_err(|e| e.to_string())?;
    let status = OrderStatus::try_from(order.status)
        .ok()
        .filter(|status| *status != OrderStatus::Unspecified)
        .ok_or_else(|| format!("order.status: unknown status {}", order.status))?;
    let order_id_text = order_id.to_string();
    let decode_error =
        |error: prost::DecodeError| format!("not a {} event: {error}", message.topic);
    let text = match message.topic {
        topics::ORDER_CREATED => {
            OrderCreated::decode(payload).map_err(decode_error)?;
            text::render(&order_id_text, &placed(order))
        }
        topics::ORDER_PAID => {
            let paid = OrderPaid::decode(payload).map_err(decode_error)?;
            let amount_cents = if paid.amount_cents > 0 {
                paid.amount_cents
            } else {
                order.total_cents
            };
            let happened = Happened::Paid {
                units: units(order),
                amount_cents,
                currency: &order.currency,
            };
            text::render(&order_id_text, &happened)
        }
        topics::ORDER_CANCELLED => {
            let cancelled = OrderCancelled::decode(payload).map_err(decode_error)?;
            let happened = if status == OrderStatus::Expired {
                Happened::Expired
            } else if cancelled.reason.is_empty() {
                Happened::Cancelled {
                    reason: &order.cancel_reason,
                }
            } else {
                Happened::Cancelled {
                    reason: &cancelled.reason,
                }
            };
            text::render(&order_id_text, &happened)
        }
        topics::ORDER_SHIPPED => {
            let shipped = OrderShipped::decode(payload).map_err(decode_error)?;
            let tracking_number = if shipped.tracking_number.is_empty() {
                &order.tracking_number
            } else {
                &shipped.tracking_number
            };
            text::render(&order_id_text, &Happened::Shipped { tracking_number })
        }
        topics::ORDER_COMPLETED => text::render(&order_id_text, &Happened::Completed),
        other => return Err(format!("no notification for topic {other:?}")),
    };
    Ok(NewNotification {
        notification_id: Uuid::now_v7(),
        event_id,
        user_id: order.user_id.clone(),
        order_id,
        event_type: message.topic,
        text,
        happened: (
            order
                .updated_at
                .as_ref()
                .and_then(orderflow_runtime::timestamp::from_proto)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            order.version,
        ),
    })
}

fn placed(order: &Order) -> Happened<'_> {
    Happened::Placed {
        units: units(order),
        total_cents: order.total_cents,
        currency: &order.currency,
    }
}

fn units(order: &Order) -> i64 {
    text::units(order.items.iter().map(|item| item.quantity))
}

#[cfg(test)]
mod tests {
    use orderflow_proto::order::v1::OrderItem;

    use super::*;

    fn order(status: OrderStatus) -> Order {
        Order {
            order_id: Uuid::now_v7().to_string(),
            user_id: "alice".into(),
            items: vec![OrderItem {
                sku: "SKU-1".into(),
                quantity: 2,
                unit_price_cents: 9_950,
            }],
            total_cents: 19_900,
            currency: "CNY".into(),
            status: status.into(),
            ..Order::default()
        }
    }

    fn received(topic: &'static str, payload: Vec<u8>) -> Received {
        Received {
            topic,
            partition: 0,
            offset: 0,
            key: None,
            payload,
            headers: Vec::new(),
        }
    }

    #[test]
    fn paid_event() {
        let order = order(OrderStatus::Paid);
        let event = OrderPaid {
            event_id: Uuid::now_v7().to_string(),
            order_id: order.order_id.clone(),
            order: Some(order.clone()),
            payment_id: "p-1".into(),
            amount_cents: 19_900,
            ..OrderPaid::default()
        };
        let made = notification(&received(topics::ORDER_PAID, event.encode_to_vec())).unwrap();
        assert_eq!(made.event_id.to_string(), event.event_id);
        assert_eq!(made.order_id.to_string(), order.order_id);
        assert_eq!(made.user_id, "alice");
        assert_eq!(made.event_type, "order-paid");
        assert_eq!(
            made.text,
            format!("Order {} paid: 2 items, ¥199.00", order.order_id)
        );
    }

    #[test]
    fn an_expiry_reads_as_expired() {
        let order = order(OrderStatus::Expired);
        let event = OrderCancelled {
            event_id: Uuid::now_v7().to_string(),
            order_id: order.order_id.clone(),
            order: Some(order.clone()),
            reason: "expired".into(),
            ..OrderCancelled::default()
        };
        let made = notification(&received(topics::ORDER_CANCELLED, event.encode_to_vec())).unwrap();
        assert_eq!(
            made.text,
            format!("Order {} expired: it was not paid in time", order.order_id)
        );
        assert_eq!(made.event_type, "order-cancelled");
    }

    #[test]
    fn invalid_events_are_refused_with_the_reason() {
        let good = || OrderCreated {
            event_id: Uuid::now_v7().to_string(),
            order_id: Uuid::now_v7().to_string(),
            order: Some(order(OrderStatus::Pending)),
            ..OrderCreated::default()
        };
        let reason = |event: OrderCreated| {
            notification(&received(topics::ORDER_CREATED, event.encode_to_vec())).unwrap_err()
        };
        assert!(notification(&received(topics::ORDER_CREATED, good().encode_to_vec())).is_ok());
        assert!(
            notification(&received(topics::ORDER_CREATED, vec![0xff, 0xff, 0xff]))
                .unwrap_err()
                .starts_with("not a protobuf order event")
        );
        let mut bad = good();
        bad.event_id = "nope".into();
        assert!(reason(bad).starts_with("event_id:"));
        let mut bad = good();
        bad.order = None;
        assert!(reason(bad).starts_with("order: missing"));
        let mut bad = good();
        bad.order_id = "42".into();
        assert!(reason(bad).starts_with("order_id:"));
        let mut bad = good();
        if let Some(order) = bad.order.as_mut() {
            order.user_id.clear();
        }
        assert!(reason(bad).starts_with("order.user_id:"));
        let mut bad = good();
        if let Some(order) = bad.order.as_mut() {
            order.status = 42;
        }
        assert!(reason(bad).starts_with("order.status:"));
    }
}

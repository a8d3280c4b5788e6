//! Turns a consumed message into the effect it has on PostgreSQL, checking everything the effect
//! needs. Plain Rust, no I/O: a message that fails here can never be applied and is
//! dead-lettered, not retried.
//!
//! Every event carries the whole order as it was after the event (fields 1-4 are the same in
//! every event type, `order.version` counts its changes), so a status change can be applied
//! without the changes before it: the order's row takes the snapshot with the highest version,
//! and each event adds the history row of its own version. That is what makes the final state
//! independent of the order in which events arrive.

use orderflow_order_rows::OrderRow;
use orderflow_proto::events::v1::{OrderCompleted, OrderCreated};
use orderflow_proto::order::v1::{Order, OrderStatus};
use orderflow_proto::{order_status, topics};
use orderflow_runtime::timestamp;
use prost::Message;
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderEvent {
    /// `order-created`: the order's rows.
    Created { event_id: Uuid, row: OrderRow },
    /// Any later event: the order as it became.
    Changed(Change),
}

impl OrderEvent {
    pub fn event_id(&self) -> Uuid {
        match self {
            Self::Created { event_id, .. } => *event_id,
            Self::Changed(change) => change.event_id,
        }
    }

    pub fn order_id(&self) -> Uuid {
        match self {
            Self::Created { row, .. } => row.order_id,
            Self::Changed(change) => change.order_id,
        }
    }
}

/// An order's state after a status change, and the history row of that change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub event_id: Uuid,
    pub order_id: Uuid,
    pub version: i64,
    pub status: &'static str,
    pub updated_at: OffsetDateTime,
    pub payment_id: Option<String>,
    pub tracking_number: Option<String>,
    pub cancel_reason: Option<String>,
}

impl Change {
    /// The reason the history row of this change carries (as order-api writes it): the cancel
    /// reason of a cancellation or expiry, nothing otherwise.
    pub fn history_reason(&self) -> Option<&str> {
        self.cancel_reason.as_deref()
    }
}

/// The protobuf type each topic carries, as order-api names it in the `event-type` header.
fn event_type(topic: &str) -> Option<&'static str> {
    Some(match topic {
        topics::ORDER_CREATED => "orderflow.events.v1.OrderCreated",
        topics::ORDER_PAID => "orderflow.events.v1.OrderPaid",
        topics::ORDER_CANCELLED => "orderflow.events.v1.OrderCancelled",
        topics::ORDER_SHIPPED => "orderflow.events.v1.OrderShipped",
        topics::ORDER_COMPLETED => "orderflow.events.v1.OrderCompleted",
        _ => return None,
    })
}

/// Whether an order in `status` may be announced on `topic`.
fn status_fits(topic: &str, status: OrderStatus) -> bool {
    matches!(
        (topic, status),
        (topics::ORDER_CREATED, OrderStatus::Pending)
            | (topics::ORDER_PAID, OrderStatus::Paid)
            | (
                topics::ORDER_CANCELLED,
                OrderStatus::Cancelled | OrderStatus::Expired
            )
            | (topics::ORDER_SHIPPED, OrderStatus::Shipped)
            | (topics::ORDER_COMPLETED, OrderStatus::Completed)
    )
}

/// Decodes the message consumed from `topic` (unprefixed) with its `event-type` header, if any.
pub fn decode(
    topic: &str,
    payload: &[u8],
    event_type_header: Option<&[u8]>,
) -> Result<OrderEvent, String> {
    let expected = event_type(topic).ok_or_else(|| format!("no events on topic {topic:?}"))?;
    if let Some(header) = event_type_header {
        if header != expected.as_bytes() {
            return Err(format!(
                "event-type header {:?} does not belong on {topic} (expected {expected})",
                String::from_utf8_lossy(header)
            ));
        }
    }
    if topic == topics::ORDER_CREATED {
        let event =
            OrderCreated::decode(payload).map_err(|error| format!("undecodable: {error}"))?;
        let (event_id, order) = common(
            topic,
            &event.event_id,
            &event.order_id,
            event.order.as_ref(),
        )?;
        return Ok(OrderEvent::Created {
            event_id,
            row: OrderRow::from_order(order, &event.idempotency_key)?,
        });
    }
    // Fields 1-4 are the same in every event type: read as the type that has only those.
    let event = OrderCompleted::decode(payload).map_err(|error| format!("undecodable: {error}"))?;
    let (event_id, order) = common(
        topic,
        &event.event_id,
        &event.order_id,
        event.order.as_ref(),
    )?;
    let order_id = Uuid::try_parse(&order.order_id)
        .map_err(|_| format!("bad order_id {:?}", order.order_id))?;
    if order.version < 2 {
        return Err(format!(
            "a status change must have version 2 or more, not {}",
            order.version
        ));
    }
    let updated_at = order
        .updated_at
        .as_ref()
        .and_then(timestamp::from_proto)
        .ok_or("order has no valid updated_at")?;
    let non_empty = |text: &str| (!text.is_empty()).then(|| text.to_owned());
    Ok(OrderEvent::Changed(Change {
        event_id,
        order_id,
        version: order.version,
        status: order_status::to_db(order.status()),
        updated_at,
        payment_id: non_empty(&order.payment_id),
        tracking_number: non_empty(&order.tracking_number),
        cancel_reason: non_empty(&order.cancel_reason),
    }))
}

/// The event id and the order of any event, after the checks every event needs.
fn common<'a>(
    topic: &str,
    event_id: &str,
    order_id: &str,
    order: Option<&'a Order>,
) -> Result<(Uuid, &'a Order), String> {
    let event_id = Uuid::try_parse(event_id).map_err(|_| format!("bad event_id {event_id:?}"))?;
    let order = order.ok_or("event carries no order")?;
    if order_id != order.order_id {
        return Err(format!(
            "event order_id {order_id:?} differs from its order's {:?}",
            order.order_id
        ));
    }
    if !status_fits(topic, order.status()) {
        return Err(format!(
            "an order with status {} does not belong on {topic}",
            order.status().as_str_name()
        ));
    }
    Ok((event_id, order))
}

#[cfg(test)]
mod tests {
    use orderflow_proto::events::v1::{OrderCancelled, OrderPaid};
    use orderflow_proto::order::v1::OrderItem;

    use super::*;

    fn order(status: OrderStatus, version: i64) -> Order {
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
            status: status.into(),
            created_at: now,
            updated_at: now,
            version,
            ..Order::default()
        }
    }

    fn created() -> OrderCreated {
        let order = order(OrderStatus::Pending, 1);
        OrderCreated {
            event_id: Uuid::now_v7().to_string(),
            order_id: order.order_id.clone(),
            occurred_at: order.created_at,
            order: Some(order),
            idempotency_key: "k".into(),
        }
    }

    fn cancelled(reason: &str) -> OrderCancelled {
        let mut order = order(OrderStatus::Cancelled, 2);
        order.cancel_reason = reason.into();
        OrderCancelled {
            event_id: Uuid::now_v7().to_string(),
            order_id: order.order_id.clone(),
            occurred_at: order.updated_at,
            order: Some(order),
            reason: reason.into(),
        }
    }

    #[test]
    fn a_complete_created_event_becomes_rows() {
        let event = decode(topics::ORDER_CREATED, &created().encode_to_vec(), None).unwrap();
        let OrderEvent::Created { row, .. } = event else {
            panic!("not a created event: {event:?}");
        };
        assert_eq!(row.status, "PENDING");
        assert_eq!(row.idempotency_key, "k");
    }

    #[test]
    fn a_change_carries_the_order_as_it_became() {
        let bytes = cancelled("changed my mind").encode_to_vec();
        let header = Some(b"orderflow.events.v1.OrderCancelled".as_slice());
        let OrderEvent::Changed(change) = decode(topics::ORDER_CANCELLED, &bytes, header).unwrap()
        else {
            panic!("not a change");
        };
        assert_eq!(change.status, "CANCELLED");
        assert_eq!(change.version, 2);
        assert_eq!(change.history_reason(), Some("changed my mind"));
        assert_eq!(change.payment_id, None);
    }

    #[test]
    fn incomplete_or_misplaced_events_are_poison() {
        let mut no_order = created();
        no_order.order = None;
        let mut bad_id = created();
        bad_id.event_id = "x".into();
        let mut mismatch = created();
        mismatch.order_id = Uuid::now_v7().to_string();
        let mut no_items = created();
        if let Some(order) = no_items.order.as_mut() {
            order.items.clear();
        }
        for bad in [no_order, bad_id, mismatch, no_items] {
            assert!(
                decode(topics::ORDER_CREATED, &bad.encode_to_vec(), None).is_err(),
                "{bad:?}"
            );
        }
        // A created event on the paid topic, and a paid event claiming version 1.
        assert!(decode(topics::ORDER_PAID, &created().encode_to_vec(), None).is_err());
        let paid = OrderPaid {
            event_id: Uuid::now_v7().to_string(),
            order: Some(order(OrderStatus::Paid, 1)),
            ..OrderPaid::default()
        };
        let mut paid = paid;
        paid.order_id = paid
            .order
            .as_ref()
            .map(|o| o.order_id.clone())
            .unwrap_or_default();
        assert!(decode(topics::ORDER_PAID, &paid.encode_to_vec(), None).is_err());
        // Bytes that are no protobuf, a wrong header, an unknown topic.
        assert!(decode(topics::ORDER_PAID, b"\xff\xff\xff", None).is_err());
        let bytes = cancelled("x").encode_to_vec();
        assert!(decode(
            topics::ORDER_CANCELLED,
            &bytes,
            Some(b"orderflow.events.v1.OrderPaid")
        )
        .is_err());
        assert!(decode("order-refunded", &bytes, None).is_err());
    }
}

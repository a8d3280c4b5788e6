//! Kafka topic names. A deployment may put a prefix in front of each (tests do, to isolate
//! themselves); the names below are the suffixes every consumer and producer agrees on.

pub const ORDER_CREATED: &str = "order-created";
pub const ORDER_PAID: &str = "order-paid";
pub const ORDER_CANCELLED: &str = "order-cancelled";
pub const ORDER_SHIPPED: &str = "order-shipped";
pub const ORDER_COMPLETED: &str = "order-completed";

/// Every order event topic, in lifecycle order.
pub const ALL: &[&str] = &[
    ORDER_CREATED,
    ORDER_PAID,
    ORDER_CANCELLED,
    ORDER_SHIPPED,
    ORDER_COMPLETED,
];

/// Kafka message header naming the protobuf type of the value, e.g.
/// `orderflow.events.v1.OrderCreated`, so tools can decode a message without knowing its topic.
pub const EVENT_TYPE_HEADER: &str = "event-type";

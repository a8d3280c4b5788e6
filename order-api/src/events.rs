//! Publishes order events to Kafka and waits for the broker's acknowledgement, and builds the
//! event each status change publishes.
//!
//! A failed send replaces its producer with a fresh one: an idempotent producer whose messages
//! timed out, or whose broker restarted, can stay broken for good (librdkafka asks for a new
//! producer after such errors; tansu 0.6 answers "Unknown broker error" to every later send),
//! and a fresh producer costs one InitProducerId round trip.
//!
//! When we stop waiting before librdkafka gave up on the message, the old producer is also
//! purged, so nothing it still holds can be delivered after the caller was told the order failed
//! (an order nobody reserved stock for). When librdkafka itself reported the failure, that
//! message is finished and no purge is needed: other requests' sends on the old producer may
//! still complete normally.

use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use orderflow_kafka::KafkaArgs;
use orderflow_proto::events::v1::{
    OrderCancelled, OrderCompleted, OrderCreated, OrderPaid, OrderShipped,
};
use orderflow_proto::order::v1::Order;
use orderflow_proto::topics;
use orderflow_runtime::RuntimeError;
use orderflow_telemetry::metrics::{metrics, TopicOutcome};
use prost::Message;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer, PurgeConfig};
use tokio::time::Instant;
use tracing::Instrument;

use crate::error::OrderError;

pub struct Publisher {
    kafka: KafkaArgs,
    current: RwLock<Generation>,
    ack_timeout: Duration,
}

/// The producer in use, numbered so that concurrent failures replace it only once.
struct Generation {
    number: u64,
    producer: FutureProducer,
}

impl Publisher {
    pub fn new(kafka: &KafkaArgs) -> Result<Self, RuntimeError> {
        Ok(Self {
            current: RwLock::new(Generation {
                number: 0,
                producer: orderflow_kafka::client::producer(kafka)?,
            }),
            ack_timeout: Duration::from_millis(kafka.kafka_ack_timeout_ms),
            kafka: kafka.clone(),
        })
    }

    /// Publishes `order-created` (see [`Publisher::publish`]).
    pub async fn order_created(
        &self,
        event: &OrderCreated,
        deadline: Instant,
    ) -> Result<(), OrderError> {
        self.publish(&Event::order_created(event), deadline).await
    }

    /// Resolves once the broker acknowledged the event (`acks=all`). Fails after the ack timeout
    /// or at `deadline`, whichever comes first, and then nothing of it is left to be sent: the
    /// caller undoes its work or tries again later. (An ack lost on the wire after the broker
    /// wrote the event cannot be told apart from a lost event; consumers deduplicate on the
    /// event id, see README.)
    pub async fn publish(&self, event: &Event, deadline: Instant) -> Result<(), OrderError> {
        let topic = self.kafka.topic(event.topic);
        let span = orderflow_kafka::client::send_span(&topic, &event.order_id);
        self.publish_to(&topic, event, deadline)
            .instrument(span)
            .await
    }

    async fn publish_to(
        &self,
        topic: &str,
        event: &Event,
        deadline: Instant,
    ) -> Result<(), OrderError> {
        let headers = OwnedHeaders::new().insert(Header {
            key: topics::EVENT_TYPE_HEADER,
            value: Some(event.event_type.as_str()),
        });
        let record = FutureRecord::to(topic)
            .key(event.order_id.as_bytes())
            .payload(&event.payload)
            .headers(orderflow_kafka::with_trace_context(headers));
        let (number, producer) = {
            let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
            (current.number, current.producer.clone())
        };
        let budget = self
            .ack_timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        let started = Instant::now();
        let sent = tokio::time::timeout(budget, producer.send(record, budget)).await;
        let outcome = TopicOutcome {
            topic: event.topic.to_owned(),
            outcome: if matches!(sent, Ok(Ok(_))) {
                "acked"
            } else {
                "failed"
            },
        };
        let metrics = metrics();
        metrics.kafka_produced.get_or_create(&outcome).inc();
        metrics
            .kafka_produce_duration
            .get_or_create(&outcome)
            .observe(started.elapsed().as_secs_f64());
        let (failure, still_queued) = match sent {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err((error, _))) => (error.to_string(), false),
            Err(_) => (format!("no acknowledgement within {budget:?}"), true),
        };
        self.retire(number, still_queued);
        Err(OrderError::BrokerUnavailable(failure))
    }

    /// Replaces producer `failed` with a fresh one, unless another failure already did; with
    /// `purge`, also fails everything the old producer still holds.
    fn retire(&self, failed: u64, purge: bool) {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if current.number != failed {
            return;
        }
        match orderflow_kafka::client::producer(&self.kafka) {
            Ok(fresh) => {
                let old = std::mem::replace(&mut current.producer, fresh);
                current.number += 1;
                if purge {
                    // Fails every send still waiting on it, so each caller undoes its own order.
                    old.purge(PurgeConfig::default().queue().inflight());
                }
                tracing::warn!(
                    generation = current.number,
                    "Kafka producer replaced after a failed delivery"
                );
                // Dropping a producer joins its polling thread: keep that off the async workers.
                tokio::task::spawn_blocking(move || drop(old));
            }
            Err(error) => tracing::error!(%error, "could not create a new Kafka producer"),
        }
    }
}

/// One encoded event, ready to publish (or to keep in the outbox until it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Unprefixed topic name, one of `orderflow_proto::topics`.
    pub topic: &'static str,
    /// Fully qualified protobuf type, sent in the `event-type` header.
    pub event_type: String,
    pub order_id: String,
    pub payload: Vec<u8>,
}

impl Event {
    fn new(
        topic: &'static str,
        message_name: &str,
        order_id: &str,
        message: &impl Message,
    ) -> Self {
        Self {
            topic,
            event_type: format!("orderflow.events.v1.{message_name}"),
            order_id: order_id.to_owned(),
            payload: message.encode_to_vec(),
        }
    }

    pub fn order_created(event: &OrderCreated) -> Self {
        Self::new(
            topics::ORDER_CREATED,
            "OrderCreated",
            &event.order_id,
            event,
        )
    }

    /// The event announcing that `order` reached its current status (`reason` for a
    /// cancellation or expiry).
    pub fn status_changed(order: &Order, reason: Option<&str>) -> Option<Self> {
        use orderflow_proto::order::v1::OrderStatus;
        let event_id = uuid::Uuid::now_v7().to_string();
        let order_id = order.order_id.clone();
        let occurred_at = order.updated_at;
        let snapshot = Some(order.clone());
        Some(match order.status() {
            OrderStatus::Paid => Self::new(
                topics::ORDER_PAID,
                "OrderPaid",
                &order_id,
                &OrderPaid {
                    event_id,
                    order_id: order_id.clone(),
                    occurred_at,
                    order: snapshot,
                    payment_id: order.payment_id.clone(),
                    amount_cents: order.total_cents,
                },
            ),
            OrderStatus::Cancelled | OrderStatus::Expired => Self::new(
                topics::ORDER_CANCELLED,
                "OrderCancelled",
                &order_id,
                &OrderCancelled {
                    event_id,
                    order_id: order_id.clone(),
                    occurred_at,
                    order: snapshot,
                    reason: reason.unwrap_or_default().to_owned(),
                },
            ),
            OrderStatus::Shipped => Self::new(
                topics::ORDER_SHIPPED,
                "OrderShipped",
                &order_id,
                &OrderShipped {
                    event_id,
                    order_id: order_id.clone(),
                    occurred_at,
                    order: snapshot,
                    tracking_number: order.tracking_number.clone(),
                },
            ),
            OrderStatus::Completed => Self::new(
                topics::ORDER_COMPLETED,
                "OrderCompleted",
                &order_id,
                &OrderCompleted {
                    event_id,
                    order_id: order_id.clone(),
                    occurred_at,
                    order: snapshot,
                },
            ),
            OrderStatus::Pending | OrderStatus::Unspecified => return None,
        })
    }
}

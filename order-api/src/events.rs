//! Publishes order events to Kafka and waits for the broker's acknowledgement.
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

use orderflow_proto::events::v1::OrderCreated;
use orderflow_proto::topics;
use orderflow_runtime::config::KafkaArgs;
use orderflow_runtime::RuntimeError;
use prost::Message;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer, PurgeConfig};
use tokio::time::Instant;

use crate::error::OrderError;

pub struct Publisher {
    kafka: KafkaArgs,
    current: RwLock<Generation>,
    order_created_topic: String,
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
                producer: orderflow_runtime::kafka::producer(kafka)?,
            }),
            order_created_topic: kafka.topic(topics::ORDER_CREATED),
            ack_timeout: Duration::from_millis(kafka.kafka_ack_timeout_ms),
            kafka: kafka.clone(),
        })
    }

    /// Resolves once the broker acknowledged the event (`acks=all`). Fails after the ack timeout
    /// or at `deadline`, whichever comes first, and then nothing of it is left to be sent: the
    /// caller undoes its work. (An ack lost on the wire after the broker wrote the event cannot
    /// be told apart from a lost event; the consumers decide on such an order, see README.)
    pub async fn order_created(
        &self,
        event: &OrderCreated,
        deadline: Instant,
    ) -> Result<(), OrderError> {
        let payload = event.encode_to_vec();
        let record = FutureRecord::to(&self.order_created_topic)
            .key(event.order_id.as_bytes())
            .payload(&payload)
            .headers(OwnedHeaders::new().insert(Header {
                key: topics::EVENT_TYPE_HEADER,
                value: Some("orderflow.events.v1.OrderCreated"),
            }));
        let (number, producer) = {
            let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
            (current.number, current.producer.clone())
        };
        let budget = self
            .ack_timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        let (failure, still_queued) =
            match tokio::time::timeout(budget, producer.send(record, budget)).await {
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
        match orderflow_runtime::kafka::producer(&self.kafka) {
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

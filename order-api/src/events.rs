//! Publishes order events to Kafka and waits for the broker's acknowledgement.

use std::time::Duration;

use orderflow_proto::events::v1::OrderCreated;
use orderflow_proto::topics;
use orderflow_runtime::config::KafkaArgs;
use prost::Message;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::error::OrderError;

#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
    order_created_topic: String,
    queue_timeout: Duration,
}

impl Publisher {
    pub fn new(producer: FutureProducer, kafka: &KafkaArgs) -> Self {
        Self {
            producer,
            order_created_topic: kafka.topic(topics::ORDER_CREATED),
            queue_timeout: Duration::from_millis(kafka.kafka_ack_timeout_ms),
        }
    }

    /// Resolves once the broker acknowledged the event (`acks=all`), or fails after the ack
    /// timeout: then the event may or may not have been written, and the caller undoes its work.
    pub async fn order_created(&self, event: &OrderCreated) -> Result<(), OrderError> {
        let payload = event.encode_to_vec();
        let record = FutureRecord::to(&self.order_created_topic)
            .key(event.order_id.as_bytes())
            .payload(&payload)
            .headers(OwnedHeaders::new().insert(Header {
                key: topics::EVENT_TYPE_HEADER,
                value: Some("orderflow.events.v1.OrderCreated"),
            }));
        self.producer
            .send(record, self.queue_timeout)
            .await
            .map(|_| ())
            .map_err(|(error, _)| OrderError::BrokerUnavailable(error.to_string()))
    }
}

//! Dead-letter topics: a message that can never be applied is copied, key, value and headers
//! unchanged, to `<topic>.dlq`, with headers saying where it came from and why it failed, so an
//! operator can inspect it, fix what is wrong and replay it. The consumer moves on only once the
//! broker acknowledged the copy; a crash in between may copy it twice (harmless: replaying a
//! message whose effect is already there changes nothing).

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Received;
use crate::args::KafkaArgs;
use orderflow_runtime::backoff::Backoff;
use orderflow_runtime::RuntimeError;

/// Why the message could not be applied.
pub const REASON_HEADER: &str = "dlq-reason";
/// Topic, partition and offset the message was consumed from.
pub const TOPIC_HEADER: &str = "dlq-original-topic";
pub const PARTITION_HEADER: &str = "dlq-original-partition";
pub const OFFSET_HEADER: &str = "dlq-original-offset";
/// The consumer group that gave up on it.
pub const GROUP_HEADER: &str = "dlq-consumer-group";
/// When it was dead-lettered (RFC 3339).
pub const FAILED_AT_HEADER: &str = "dlq-failed-at";

/// The dead-letter topic of `topic` (full name, prefix included).
pub fn topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

pub struct DeadLetters {
    kafka: KafkaArgs,
    group_id: String,
    producer: FutureProducer,
}

/// The loop was shut down before the copy was acknowledged.
pub struct Stopped;

impl DeadLetters {
    pub fn new(kafka: &KafkaArgs, group_id: &str) -> Result<Self, RuntimeError> {
        Ok(Self {
            kafka: kafka.clone(),
            group_id: group_id.to_owned(),
            producer: crate::client::producer(kafka)?,
        })
    }

    /// Copies `message` (consumed from `full_topic`) to its dead-letter topic, retrying until the
    /// broker acknowledged it or `shutdown` is cancelled.
    pub async fn send(
        &self,
        full_topic: &str,
        message: &Received,
        reason: &str,
        shutdown: &CancellationToken,
    ) -> Result<(), Stopped> {
        let dead_letter_topic = topic(full_topic);
        let partition = message.partition.to_string();
        let offset = message.offset.to_string();
        let failed_at = orderflow_runtime::timestamp::now()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let mut headers = OwnedHeaders::new();
            for (key, value) in &message.headers {
                headers = headers.insert(Header {
                    key,
                    value: value.as_deref(),
                });
            }
            let ours = [
                (REASON_HEADER, reason),
                (TOPIC_HEADER, full_topic),
                (PARTITION_HEADER, partition.as_str()),
                (OFFSET_HEADER, offset.as_str()),
                (GROUP_HEADER, self.group_id.as_str()),
                (FAILED_AT_HEADER, failed_at.as_str()),
            ];
            for (key, value) in ours {
                headers = headers.insert(Header {
                    key,
                    value: Some(value),
                });
            }
            let mut record = FutureRecord::to(&dead_letter_topic)
                .payload(&message.payload)
                .headers(headers);
            if let Some(key) = &message.key {
                record = record.key(key);
            }
            let timeout = Duration::from_millis(self.kafka.kafka_ack_timeout_ms);
            match self.producer.send(record, timeout).await {
                Ok(_) => return Ok(()),
                Err((error, _)) => {
                    tracing::warn!(%error, topic = %dead_letter_topic, pause = ?backoff.pause(), "dead-lettering failed; retrying");
                }
            }
            if !backoff.wait(shutdown).await {
                return Err(Stopped);
            }
        }
    }

    /// Waits for copies still in flight until `deadline` at most, then closes the producer; a
    /// producer still waiting for the broker then is abandoned ([`crate::blocking`]).
    pub async fn close(self, deadline: Instant) {
        let producer = self.producer;
        let flush_for = deadline.saturating_duration_since(Instant::now());
        let flushing =
            crate::blocking::until("flushing the dead-letter producer", deadline, move || {
                let flushed = producer.flush(flush_for);
                drop(producer);
                flushed
            });
        if let Some(Err(error)) = flushing.await {
            tracing::warn!(%error, "flushing the dead-letter producer failed");
        }
    }
}

//! A barrier on an event log: "has consumer group G applied everything topic T held at this
//! instant?"
//!
//! Some decisions need to know that an event is *not* in the log. inventory-svc may return the
//! units of a reservation that no order confirmed only if no `order-created` event for it can
//! still be applied. The log cannot be searched for one key, but it can answer this: the high
//! watermark of every partition, taken now, is above every message appended before now (with
//! `acks=all`, above every acknowledged one); once the group that applies the log has committed
//! offsets at or past those marks, every such message has been applied. A decision taken after
//! that, about events that could only have been appended before the mark, sees all of them.
//!
//! Plain Apache Kafka requests (metadata, list offsets, offset fetch): the same on any broker.
//! The client never joins the group, so it never takes a partition from its members.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::KafkaArgs;
use crate::RuntimeError;

/// How long one round of requests to the broker may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct LogBarrier {
    consumer: Arc<BaseConsumer>,
    topic: String,
}

/// The high watermark of every partition of the topic at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// (partition, low watermark, high watermark)
    partitions: Vec<(i32, i64, i64)>,
}

impl Mark {
    /// Whether `committed` (the group's next offset per partition; `None`: it never committed
    /// one) covers every message below the mark.
    pub fn covered_by(&self, committed: impl Fn(i32) -> Option<i64>) -> bool {
        self.partitions.iter().all(|&(partition, low, high)| {
            // A partition that holds nothing below the mark needs no commit.
            high <= low || committed(partition).is_some_and(|next| next >= high)
        })
    }
}

/// A barrier request failed (broker unreachable, topic metadata unavailable).
#[derive(Debug, thiserror::Error)]
#[error("order log barrier on {topic}: {source}")]
pub struct BarrierError {
    topic: String,
    #[source]
    source: KafkaError,
}

impl LogBarrier {
    /// A barrier on `topic` (full name) for the consumer group `group_id`.
    pub fn new(kafka: &KafkaArgs, group_id: &str, topic: String) -> Result<Self, RuntimeError> {
        let consumer: BaseConsumer = crate::kafka::consumer_config(kafka, group_id)?
            // It reads the group's offsets and must never commit any.
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|source| RuntimeError::Kafka {
                brokers: kafka.kafka_brokers.clone(),
                source,
            })?;
        Ok(Self {
            consumer: Arc::new(consumer),
            topic,
        })
    }

    /// Marks the log as it is now. A topic that does not exist yet has no partitions: nothing
    /// is below its mark.
    pub async fn mark(&self) -> Result<Mark, BarrierError> {
        let (consumer, topic) = (Arc::clone(&self.consumer), self.topic.clone());
        self.blocking(move || {
            let metadata = consumer.fetch_metadata(Some(&topic), REQUEST_TIMEOUT)?;
            let partitions: Vec<i32> = metadata
                .topics()
                .iter()
                .filter(|found| found.name() == topic && found.error().is_none())
                .flat_map(|found| found.partitions().iter().map(|p| p.id()))
                .collect();
            partitions
                .into_iter()
                .map(|partition| {
                    let (low, high) =
                        consumer.fetch_watermarks(&topic, partition, REQUEST_TIMEOUT)?;
                    Ok((partition, low, high))
                })
                .collect::<Result<Vec<_>, KafkaError>>()
                .map(|partitions| Mark { partitions })
        })
        .await
    }

    /// Whether the group has committed offsets at or past `mark` on every partition.
    pub async fn reached(&self, mark: &Mark) -> Result<bool, BarrierError> {
        if mark.covered_by(|_| None) {
            return Ok(true);
        }
        let (consumer, topic, wanted) =
            (Arc::clone(&self.consumer), self.topic.clone(), mark.clone());
        self.blocking(move || {
            let mut partitions = TopicPartitionList::new();
            for &(partition, ..) in &wanted.partitions {
                partitions.add_partition(&topic, partition);
            }
            let committed = consumer.committed_offsets(partitions, REQUEST_TIMEOUT)?;
            Ok(wanted.covered_by(|partition| {
                match committed
                    .find_partition(&topic, partition)
                    .map(|entry| entry.offset())
                {
                    Some(Offset::Offset(next)) => Some(next),
                    _ => None,
                }
            }))
        })
        .await
    }

    /// librdkafka's synchronous requests, off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        request: impl FnOnce() -> Result<T, KafkaError> + Send + 'static,
    ) -> Result<T, BarrierError> {
        let error = |source| BarrierError {
            topic: self.topic.clone(),
            source,
        };
        match tokio::task::spawn_blocking(request).await {
            Ok(result) => result.map_err(error),
            Err(_) => Err(error(KafkaError::Canceled)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_is_covered_once_every_partition_with_messages_is_committed_past_it() {
        let mark = Mark {
            partitions: vec![(0, 0, 10), (1, 5, 5), (2, 0, 0)],
        };
        assert!(!mark.covered_by(|_| None), "partition 0 holds messages");
        assert!(!mark.covered_by(|p| (p == 0).then_some(9)));
        assert!(mark.covered_by(|p| (p == 0).then_some(10)));
        assert!(mark.covered_by(|p| (p == 0).then_some(12)));
        assert!(Mark { partitions: vec![] }.covered_by(|_| None));
    }
}

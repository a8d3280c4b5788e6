//! Where a consumer group stands on some topics: per partition, its committed offset and the
//! watermarks. The consume loop's stall check (`consume::stall`) and the order log barrier
//! (`log_barrier`) both ask.
//!
//! It is read by a client of the group's own that never joins it: it takes no partition from the
//! members, and asked of a member's consumer instead, librdkafka would track every partition as
//! one the member wants, so the member's statistics (the lag it reports) would list partitions it
//! does not hold. Plain Kafka requests (metadata, offset fetch, list offsets): the same on any
//! broker. A read blocks for as long as the broker takes to answer (each request bounded by its
//! timeout), so run it through `crate::blocking`; the client is closed on a thread of its own
//! too, since closing a client whose broker is gone can block.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use crate::args::KafkaArgs;
use orderflow_runtime::RuntimeError;

/// One partition of a topic as the group sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset (the next message to apply), negative when it has none.
    pub committed: i64,
    pub low_watermark: i64,
    pub high_watermark: i64,
}

impl PartitionOffsets {
    /// Messages of the partition the group has not committed.
    pub fn lag(&self) -> i64 {
        lag(self.committed, self.low_watermark, self.high_watermark)
    }
}

/// Messages of a partition not yet committed. Without a committed offset the group starts at
/// the earliest message, so everything still on the partition counts. `-1`: not known yet
/// (librdkafka reports negative offsets until it has fetched them).
pub fn lag(committed: i64, low_watermark: i64, high_watermark: i64) -> i64 {
    match (committed >= 0, low_watermark >= 0, high_watermark >= 0) {
        (true, _, true) => (high_watermark - committed).max(0),
        (false, true, true) => high_watermark - low_watermark,
        _ => -1,
    }
}

/// A client of one group that reads its offsets and never joins it. Cheap to clone.
#[derive(Clone)]
pub struct GroupReader {
    client: Arc<Client>,
}

/// Closes the client off the dropping thread.
struct Client(Option<BaseConsumer>);

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            // Nobody waits for it: the process may exit first.
            let _ = crate::blocking::spawn("closing a group offsets reader", move || drop(client));
        }
    }
}

impl GroupReader {
    pub fn new(kafka: &KafkaArgs, group_id: &str) -> Result<Self, RuntimeError> {
        let client: BaseConsumer = crate::client::consumer_config(kafka, group_id)?
            // It reads the group's offsets and must never commit any.
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|source| RuntimeError::Kafka {
                brokers: kafka.kafka_brokers.clone(),
                source: source.into(),
            })?;
        Ok(Self {
            client: Arc::new(Client(Some(client))),
        })
    }

    /// The group's committed offset and the watermarks of every partition of `topics` (full
    /// names; a topic that does not exist has none). Blocks: each of its few requests waits up
    /// to `timeout`.
    pub fn read(
        &self,
        topics: &[String],
        timeout: Duration,
    ) -> Result<Vec<PartitionOffsets>, KafkaError> {
        let Some(client) = self.client.0.as_ref() else {
            return Ok(Vec::new());
        };
        let mut all = TopicPartitionList::new();
        for topic in topics {
            let metadata = client.fetch_metadata(Some(topic), timeout)?;
            for found in metadata.topics() {
                if found.error().is_some() {
                    continue;
                }
                for partition in found.partitions() {
                    all.add_partition(found.name(), partition.id());
                }
            }
        }
        if all.count() == 0 {
            return Ok(Vec::new());
        }
        let committed = client.committed_offsets(all.clone(), timeout)?;
        // ListOffsets with the special timestamps -2 (earliest) and -1 (latest): the watermarks
        // of every partition in one request per broker.
        let watermark = |which: Offset| {
            let mut list = all.clone();
            list.set_all_offsets(which)?;
            client.offsets_for_times(list, timeout)
        };
        let (low, high) = (watermark(Offset::Beginning)?, watermark(Offset::End)?);
        let offset_of = |list: &TopicPartitionList, topic: &str, partition: i32| {
            list.find_partition(topic, partition)
                .filter(|found| found.error().is_ok())
                .and_then(|found| found.offset().to_raw())
                .unwrap_or(-1)
        };
        Ok(all
            .elements()
            .iter()
            .map(|element| {
                let (topic, partition) = (element.topic(), element.partition());
                PartitionOffsets {
                    topic: topic.to_owned(),
                    partition,
                    committed: offset_of(&committed, topic, partition),
                    low_watermark: offset_of(&low, topic, partition),
                    high_watermark: offset_of(&high, topic, partition),
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::lag;

    #[test]
    fn lag_counts_what_is_not_committed() {
        assert_eq!(lag(7, 0, 10), 3);
        assert_eq!(lag(10, 0, 10), 0);
        // Nothing committed yet: everything still on the partition, none if it is empty.
        assert_eq!(lag(-1001, 4, 10), 6);
        assert_eq!(lag(-1001, 0, 0), 0);
        // Offsets not fetched yet.
        assert_eq!(lag(-1001, -1001, -1001), -1);
        assert_eq!(lag(5, 0, -1001), -1);
    }
}

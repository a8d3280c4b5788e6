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
//! The offsets come from a [`GroupReader`], which never joins the group, each read on a thread
//! of its own and abandoned after a bound ([`crate::blocking`]), so a dead broker never holds a
//! caller or the process's exit.

use std::time::Duration;

use tokio::time::Instant;

use crate::args::KafkaArgs;
use crate::group_offsets::{self, GroupReader};
use orderflow_runtime::RuntimeError;

/// How long each of a read's few requests to the broker may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole read may take before it is abandoned ([`crate::blocking`]).
const READ_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone)]
pub struct LogBarrier {
    reader: GroupReader,
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
            group_offsets::lag(committed(partition).unwrap_or(-1), low, high) == 0
        })
    }
}

/// A barrier read failed (broker unreachable, no answer in time).
#[derive(Debug, thiserror::Error)]
#[error("order log barrier on {topic}: {reason}")]
pub struct BarrierError {
    topic: String,
    reason: String,
}

impl LogBarrier {
    /// A barrier on `topic` (full name) for the consumer group `group_id`.
    pub fn new(kafka: &KafkaArgs, group_id: &str, topic: String) -> Result<Self, RuntimeError> {
        Ok(Self {
            reader: GroupReader::new(kafka, group_id)?,
            topic,
        })
    }

    /// Marks the log as it is now. A topic that does not exist yet has no partitions: nothing
    /// is below its mark.
    pub async fn mark(&self) -> Result<Mark, BarrierError> {
        let partitions = self
            .read()
            .await?
            .into_iter()
            .map(|offsets| {
                (
                    offsets.partition,
                    offsets.low_watermark,
                    offsets.high_watermark,
                )
            })
            .collect();
        Ok(Mark { partitions })
    }

    /// Whether the group has committed offsets at or past `mark` on every partition.
    pub async fn reached(&self, mark: &Mark) -> Result<bool, BarrierError> {
        if mark.covered_by(|_| None) {
            return Ok(true);
        }
        let committed: Vec<(i32, i64)> = self
            .read()
            .await?
            .into_iter()
            .map(|offsets| (offsets.partition, offsets.committed))
            .collect();
        Ok(mark.covered_by(|partition| {
            committed
                .iter()
                .find(|(found, _)| *found == partition)
                .map(|(_, next)| *next)
        }))
    }

    async fn read(&self) -> Result<Vec<group_offsets::PartitionOffsets>, BarrierError> {
        let (reader, topics) = (self.reader.clone(), vec![self.topic.clone()]);
        let error = |reason: String| BarrierError {
            topic: self.topic.clone(),
            reason,
        };
        crate::blocking::until(
            "reading the order log's offsets",
            Instant::now() + READ_TIMEOUT,
            move || reader.read(&topics, REQUEST_TIMEOUT),
        )
        .await
        .ok_or_else(|| error("no answer in time".into()))?
        .map_err(|kafka| error(kafka.to_string()))
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

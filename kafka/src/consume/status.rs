//! What a consumer reports about itself: its partitions' lag (from the Kafka client's periodic
//! statistics, so asking costs no broker round trip) and counts of what it applied. Logged at
//! each report while behind, and served as `orderflow.consumer.v1.ConsumerStatusService`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use orderflow_proto::consumer::v1::consumer_status_service_server::{
    ConsumerStatusService, ConsumerStatusServiceServer,
};
use orderflow_proto::consumer::v1::{
    GetConsumerStatusRequest, GetConsumerStatusResponse, PartitionStatus,
};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::statistics::Statistics;
use rdkafka::TopicPartitionList;
use time::OffsetDateTime;
use tonic::{Request, Response, Status};

use super::Received;
use orderflow_telemetry::metrics::{metrics, GroupPartition, GroupTopic};

#[derive(Clone)]
pub struct ConsumerStatus {
    inner: Arc<Inner>,
}

struct Inner {
    group_id: String,
    report: Mutex<Report>,
    messages_applied: AtomicI64,
    batches_applied: AtomicI64,
    messages_dead_lettered: AtomicI64,
    /// Rebalances this process's member went through, whichever consumer it was.
    rebalances: AtomicU64,
}

#[derive(Default)]
struct Report {
    reported_at: Option<OffsetDateTime>,
    partitions: Vec<PartitionStatus>,
}

impl ConsumerStatus {
    pub fn new(group_id: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                group_id: group_id.to_owned(),
                report: Mutex::new(Report::default()),
                messages_applied: AtomicI64::new(0),
                batches_applied: AtomicI64::new(0),
                messages_dead_lettered: AtomicI64::new(0),
                rebalances: AtomicU64::new(0),
            }),
        }
    }

    /// The gRPC service answering with this status.
    pub fn service(&self) -> ConsumerStatusServiceServer<Self> {
        ConsumerStatusServiceServer::new(self.clone())
    }

    pub(super) fn batch_applied(&self, batch: &[Received]) {
        let messages = i64::try_from(batch.len()).unwrap_or(i64::MAX);
        self.inner
            .messages_applied
            .fetch_add(messages, Ordering::Relaxed);
        self.inner.batches_applied.fetch_add(1, Ordering::Relaxed);
        for message in batch {
            metrics()
                .kafka_consumed
                .get_or_create(&self.group_topic(message.topic))
                .inc();
        }
    }

    pub(super) fn dead_lettered(&self, topic: &str) {
        self.inner
            .messages_dead_lettered
            .fetch_add(1, Ordering::Relaxed);
        metrics()
            .kafka_dead_lettered
            .get_or_create(&self.group_topic(topic))
            .inc();
    }

    fn group_topic(&self, topic: &str) -> GroupTopic {
        GroupTopic {
            group: self.inner.group_id.clone(),
            topic: topic.to_owned(),
        }
    }

    fn record(&self, statistics: &Statistics) {
        let mut partitions: Vec<PartitionStatus> = statistics
            .topics
            .values()
            .flat_map(|topic| {
                topic
                    .partitions
                    .values()
                    // -1 is librdkafka's internal "unassigned" partition; `desired` means ours.
                    .filter(|partition| partition.partition >= 0 && partition.desired)
                    .map(|partition| PartitionStatus {
                        topic: topic.topic.clone(),
                        partition: partition.partition,
                        committed_offset: partition.committed_offset.max(-1),
                        high_watermark: partition.hi_offset.max(-1),
                        lag: crate::group_offsets::lag(
                            partition.committed_offset,
                            partition.lo_offset,
                            partition.hi_offset,
                        ),
                    })
            })
            .collect();
        partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        let total = total_lag(&partitions);
        let lag = &metrics().kafka_consumer_lag;
        // Partitions taken away by a rebalance disappear from the gauge.
        lag.clear();
        for partition in &partitions {
            lag.get_or_create(&GroupPartition {
                group: self.inner.group_id.clone(),
                topic: partition.topic.clone(),
                partition: partition.partition,
            })
            .set(partition.lag);
        }
        let previous = {
            let mut report = self
                .inner
                .report
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let previous = total_lag(&report.partitions);
            *report = Report {
                reported_at: Some(OffsetDateTime::now_utc()),
                partitions: partitions.clone(),
            };
            previous
        };
        if total > 0 {
            let behind: Vec<String> = partitions
                .iter()
                .filter(|partition| partition.lag > 0)
                .map(|partition| {
                    format!(
                        "{}/{}={}",
                        partition.topic, partition.partition, partition.lag
                    )
                })
                .collect();
            tracing::info!(group = %self.inner.group_id, total_lag = total, partitions = ?behind, "consumer lag");
        } else if previous > 0 {
            tracing::info!(group = %self.inner.group_id, "consumer caught up (lag 0)");
        }
    }
}

/// -1 while any partition's lag is unknown: a partition not fetched yet must not pass for one
/// that is caught up.
fn total_lag(partitions: &[PartitionStatus]) -> i64 {
    if partitions.iter().any(|partition| partition.lag < 0) {
        return -1;
    }
    partitions.iter().map(|partition| partition.lag).sum()
}

#[tonic::async_trait]
impl ConsumerStatusService for ConsumerStatus {
    async fn get_consumer_status(
        &self,
        _request: Request<GetConsumerStatusRequest>,
    ) -> Result<Response<GetConsumerStatusResponse>, Status> {
        let inner = &self.inner;
        let (reported_at, partitions) = {
            let report = inner.report.lock().unwrap_or_else(PoisonError::into_inner);
            (report.reported_at, report.partitions.clone())
        };
        Ok(Response::new(GetConsumerStatusResponse {
            group_id: inner.group_id.clone(),
            total_lag: total_lag(&partitions),
            partitions,
            reported_at: reported_at.map(orderflow_runtime::timestamp::to_proto),
            messages_applied: inner.messages_applied.load(Ordering::Relaxed),
            batches_applied: inner.batches_applied.load(Ordering::Relaxed),
            messages_dead_lettered: inner.messages_dead_lettered.load(Ordering::Relaxed),
        }))
    }
}

/// The Kafka client context that hands its periodic statistics to the status.
pub struct LagContext {
    status: ConsumerStatus,
}

impl LagContext {
    pub fn new(status: ConsumerStatus) -> Self {
        Self { status }
    }

    /// How many rebalances the member has gone through: a change means partitions moved.
    pub(super) fn rebalances(&self) -> u64 {
        self.status.inner.rebalances.load(Ordering::Relaxed)
    }
}

impl ClientContext for LagContext {
    fn stats(&self, statistics: Statistics) {
        self.status.record(&statistics);
    }
}

/// Which partitions a rebalance gave or took: after a crash, the log shows when the group
/// noticed and who took the partitions over.
impl ConsumerContext for LagContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.status.inner.rebalances.fetch_add(1, Ordering::Relaxed);
        let group = &self.status.inner.group_id;
        match rebalance {
            Rebalance::Assign(partitions) => {
                tracing::info!(%group, partitions = ?names(partitions), "partitions assigned");
            }
            Rebalance::Revoke(partitions) => {
                tracing::info!(%group, partitions = ?names(partitions), "partitions revoked");
            }
            Rebalance::Error(error) => tracing::warn!(%group, %error, "rebalance failed"),
        }
    }
}

fn names(partitions: &TopicPartitionList) -> Vec<String> {
    partitions
        .elements()
        .iter()
        .map(|partition| format!("{}/{}", partition.topic(), partition.partition()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{total_lag, PartitionStatus};

    #[test]
    fn total_lag_is_unknown_while_any_partition_is() {
        let partition = |lag| PartitionStatus {
            lag,
            ..PartitionStatus::default()
        };
        assert_eq!(total_lag(&[partition(3), partition(4)]), 7);
        assert_eq!(total_lag(&[partition(0), partition(0)]), 0);
        assert_eq!(total_lag(&[partition(0), partition(-1)]), -1);
        assert_eq!(total_lag(&[]), 0);
    }
}

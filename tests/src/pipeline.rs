//! The asynchronous pipeline seen from outside: consumer-worker as a real process a test can
//! kill, its consumer status, and what landed on a dead-letter topic.

use std::net::SocketAddr;
use std::time::Duration;

use orderflow_proto::consumer::v1::consumer_status_service_client::ConsumerStatusServiceClient;
use orderflow_proto::consumer::v1::{GetConsumerStatusRequest, GetConsumerStatusResponse};

use crate::process::ServiceProcess;
use crate::stack::Stack;

/// The built `consumer-worker` binary running with a stack's worker configuration
/// (`Options::external_worker`).
pub struct WorkerProcess {
    process: ServiceProcess,
    pub address: SocketAddr,
    /// Where it serves `/metrics`.
    pub metrics_address: SocketAddr,
}

impl WorkerProcess {
    pub async fn start(stack: &Stack) -> Self {
        let free_address = || SocketAddr::from(([127, 0, 0, 1], crate::private::free_port()));
        let (address, metrics_address) = (free_address(), free_address());
        let mut config = stack.worker_config.clone();
        config.listen = address.to_string();
        config.metrics_listen = metrics_address.to_string();
        Self {
            process: ServiceProcess::start(config, &[]).await,
            address,
            metrics_address,
        }
    }

    /// SIGKILL, like a crash: nothing is committed or closed cleanly.
    pub async fn kill(mut self) {
        self.process.kill().await;
    }

    /// SIGTERM, as Kubernetes stops a pod; waits for the exit and returns whether it was clean.
    pub async fn terminate(self) -> bool {
        self.process.terminate().await
    }
}

/// The consumer status the worker at `address` serves.
pub async fn consumer_status(address: SocketAddr) -> GetConsumerStatusResponse {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .expect("a valid endpoint")
        .connect_lazy();
    ConsumerStatusServiceClient::new(channel)
        .get_consumer_status(GetConsumerStatusRequest {})
        .await
        .expect("GetConsumerStatus")
        .into_inner()
}

/// A message found on a dead-letter topic.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl DeadLetter {
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }
}

impl Stack {
    /// Waits until the dead-letter topic of `topic` (unprefixed) holds `count` messages from
    /// consumer group `group` (consumers of other groups dead-letter there too), and returns
    /// them.
    pub async fn dead_letters(&self, topic: &str, group: &str, count: usize) -> Vec<DeadLetter> {
        use rdkafka::consumer::{Consumer, StreamConsumer};
        use rdkafka::message::Headers;
        use rdkafka::Message;

        let full = orderflow_kafka::consume::dead_letter::topic(&self.topic(topic));
        let consumer: StreamConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", self.kafka_brokers())
            .set("group.id", format!("{full}-reader-{}", crate::unique_id()))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .expect("a Kafka consumer");
        consumer.subscribe(&[&full]).expect("subscribing");
        let mut found = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(60), async {
            while found.len() < count {
                let message = consumer.recv().await.expect("reading a dead letter");
                let headers = message
                    .headers()
                    .map(|headers| {
                        headers
                            .iter()
                            .map(|header| {
                                (
                                    header.key.to_owned(),
                                    String::from_utf8_lossy(header.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let letter = DeadLetter {
                    key: message.key().map(<[u8]>::to_vec),
                    payload: message.payload().unwrap_or_default().to_vec(),
                    headers,
                };
                if letter.header(orderflow_kafka::consume::dead_letter::GROUP_HEADER) == Some(group)
                {
                    found.push(letter);
                }
            }
        })
        .await;
        assert!(
            read.is_ok(),
            "{full} holds {} messages of {group} after 60 s, expected {count}",
            found.len()
        );
        found
    }
}

impl Stack {
    /// Publishes `(topic, key, payload)` messages (unprefixed topics) with one producer, as a
    /// producer outside orderflow would, and waits for every ack.
    pub async fn publish_all(&self, messages: &[(&str, String, Vec<u8>)]) {
        use rdkafka::producer::{FutureProducer, FutureRecord};
        let producer: FutureProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", self.kafka_brokers())
            .create()
            .expect("a Kafka producer");
        let topics: Vec<String> = messages
            .iter()
            .map(|(topic, ..)| self.topic(topic))
            .collect();
        let sends = messages
            .iter()
            .zip(&topics)
            .map(|((_, key, payload), topic)| {
                producer.send(
                    FutureRecord::to(topic).key(key).payload(payload),
                    Duration::from_secs(10),
                )
            });
        for sent in futures::future::join_all(sends).await {
            sent.map_err(|(error, _)| error)
                .expect("publishing an event");
        }
    }

    /// Waits until every one of `event_ids` is recorded as applied.
    pub async fn wait_for_events_applied(&self, event_ids: &[uuid::Uuid]) {
        crate::eventually(
            &format!("{} events to be applied", event_ids.len()),
            Duration::from_secs(60),
            || async {
                let applied: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM processed_events WHERE event_id = ANY($1)",
                )
                .bind(event_ids)
                .fetch_one(&self.db)
                .await
                .expect("counting applied events");
                (applied == i64::try_from(event_ids.len()).unwrap_or(i64::MAX)).then_some(())
            },
        )
        .await;
    }
}

//! The Kafka settings, as clap argument groups next to the clients they configure: the
//! connection and topics (`KafkaArgs`), how a process consumes (`ConsumerArgs`), and whose
//! progress on the order log a service waits for (`OrderLogArgs`). Credentials in client
//! properties are never shown.

use std::fmt;
use std::path::PathBuf;

use orderflow_config::secret_or_file;
use orderflow_runtime::RuntimeError;

#[derive(Clone, clap::Args, serde::Serialize)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, comma separated.
    #[arg(
        long,
        env = "ORDERFLOW_KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub kafka_brokers: String,

    /// Prefix put in front of every topic name (e.g. `staging.` gives `staging.order-created`).
    #[arg(long, env = "ORDERFLOW_KAFKA_TOPIC_PREFIX", default_value = "")]
    pub kafka_topic_prefix: String,

    /// Partitions of each topic created at start-up (existing topics are left as they are).
    #[arg(long, env = "ORDERFLOW_KAFKA_TOPIC_PARTITIONS", default_value_t = 3)]
    pub kafka_topic_partitions: i32,

    /// Replication factor of each topic created at start-up.
    #[arg(long, env = "ORDERFLOW_KAFKA_TOPIC_REPLICATION", default_value_t = 1)]
    pub kafka_topic_replication: i32,

    /// How long the producer waits to fill a batch before sending it (librdkafka `linger.ms`).
    /// Fewer, larger produce requests cost the broker and the client far less CPU per message
    /// under load; an idle system pays this much latency at most.
    #[arg(long, env = "ORDERFLOW_KAFKA_LINGER_MS", default_value_t = 5)]
    pub kafka_linger_ms: u64,

    /// How long a publish may wait for the broker's acknowledgement before it fails.
    #[arg(long, env = "ORDERFLOW_KAFKA_ACK_TIMEOUT_MS", default_value_t = 5000)]
    pub kafka_ack_timeout_ms: u64,

    /// Any librdkafka client property as `key=value`, repeatable (comma-separated in the
    /// environment variable), e.g. `security.protocol=SASL_SSL`, `sasl.mechanism=SCRAM-SHA-512`,
    /// `sasl.username=orderflow`, `ssl.ca.location=/etc/kafka/ca.pem`. Values of keys naming a
    /// password or secret are never logged.
    #[arg(
        long = "kafka-property",
        env = "ORDERFLOW_KAFKA_PROPERTIES",
        value_delimiter = ','
    )]
    pub kafka_properties: Vec<String>,

    /// File holding the SASL password (`sasl.password`), e.g. a mounted Secret.
    #[arg(long, env = "ORDERFLOW_KAFKA_SASL_PASSWORD_FILE")]
    pub kafka_sasl_password_file: Option<PathBuf>,
}

impl fmt::Debug for KafkaArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let properties: Vec<String> = self
            .kafka_properties
            .iter()
            .map(|property| match property.split_once('=') {
                Some((key, _)) if is_secret_key(key) => format!("{key}=***"),
                _ => property.clone(),
            })
            .collect();
        f.debug_struct("KafkaArgs")
            .field("kafka_brokers", &self.kafka_brokers)
            .field("kafka_topic_prefix", &self.kafka_topic_prefix)
            .field("kafka_topic_partitions", &self.kafka_topic_partitions)
            .field("kafka_topic_replication", &self.kafka_topic_replication)
            .field("kafka_linger_ms", &self.kafka_linger_ms)
            .field("kafka_ack_timeout_ms", &self.kafka_ack_timeout_ms)
            .field("kafka_properties", &properties)
            .field("kafka_sasl_password_file", &self.kafka_sasl_password_file)
            .finish()
    }
}

/// Whether a client property holds a credential (`sasl.password`, `ssl.key.password`, …).
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password") || key.contains("secret") || key.contains("sasl.oauthbearer.config")
}

impl KafkaArgs {
    /// `--kafka-property` pairs plus the password file's `sasl.password`, checked for shape.
    pub fn client_properties(&self) -> Result<Vec<(String, String)>, RuntimeError> {
        let mut properties = Vec::with_capacity(self.kafka_properties.len() + 1);
        for property in &self.kafka_properties {
            let (key, value) = property
                .split_once('=')
                .filter(|(key, _)| !key.trim().is_empty())
                .ok_or_else(|| {
                    RuntimeError::Config(format!(
                        "--kafka-property {:?}: expected key=value",
                        property.split('=').next().unwrap_or_default()
                    ))
                })?;
            properties.push((key.trim().to_owned(), value.to_owned()));
        }
        if let Some(path) = &self.kafka_sasl_password_file {
            let password = secret_or_file("", Some(path), "--kafka-sasl-password-file")?;
            properties.push(("sasl.password".to_owned(), password));
        }
        Ok(properties)
    }

    /// The deployment's full name of `topic` (one of `orderflow_proto::topics`).
    pub fn topic(&self, topic: &str) -> String {
        format!("{}{}", self.kafka_topic_prefix, topic)
    }
}

/// How a process consumes order events (see `consume`).
#[derive(Clone, Debug, clap::Args, serde::Serialize)]
pub struct ConsumerArgs {
    /// Most messages applied together in one PostgreSQL transaction; 1 turns batching off.
    #[arg(
        long,
        env = "ORDERFLOW_CONSUMER_BATCH_MAX_MESSAGES",
        default_value_t = 256
    )]
    pub batch_max_messages: usize,

    /// Longest wait for more messages once a batch has its first one.
    #[arg(
        long,
        env = "ORDERFLOW_CONSUMER_BATCH_MAX_WAIT_MS",
        default_value_t = 20
    )]
    pub batch_max_wait_ms: u64,

    /// Longest pause between two attempts to apply a batch while PostgreSQL is unavailable
    /// (the pause doubles from 100 ms up to this).
    #[arg(
        long,
        env = "ORDERFLOW_CONSUMER_MAX_BACKOFF_MS",
        default_value_t = 5_000
    )]
    pub max_backoff_ms: u64,

    /// How often the consumer's lag per partition is measured (and logged while behind).
    #[arg(
        long,
        env = "ORDERFLOW_CONSUMER_LAG_REPORT_INTERVAL_MS",
        default_value_t = 5_000
    )]
    pub lag_report_interval_ms: u64,

    /// How long the group waits for a silent member (crashed, partitioned) before its
    /// partitions go to the others. Shorter fails over faster; heartbeats go every third of it.
    #[arg(
        long,
        env = "ORDERFLOW_CONSUMER_SESSION_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub session_timeout_ms: u64,
}

/// The order log's applier: consumer-worker's consumer group, whose progress tells a service
/// that every `order-created` event the log held at some instant is applied (see
/// `log_barrier`). inventory-svc waits for it before returning an unconfirmed reservation's
/// stock; order-api before placing new keys while Redis restores the ones it lost.
#[derive(Clone, Debug, clap::Args, serde::Serialize)]
pub struct OrderLogArgs {
    /// consumer-worker's Kafka consumer group (its --group-id).
    #[arg(
        long,
        env = "ORDERFLOW_ORDERS_CONSUMER_GROUP",
        default_value = "orderflow-consumer-worker"
    )]
    pub orders_consumer_group: String,
}

impl OrderLogArgs {
    /// A barrier on this deployment's `order-created` topic for consumer-worker's group.
    pub fn barrier(
        &self,
        kafka: &KafkaArgs,
    ) -> Result<crate::log_barrier::LogBarrier, RuntimeError> {
        crate::log_barrier::LogBarrier::new(
            kafka,
            &self.orders_consumer_group,
            kafka.topic(orderflow_proto::topics::ORDER_CREATED),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_properties_parse_and_never_show_credentials() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            kafka: KafkaArgs,
        }
        let flags = Flags::parse_from([
            "x",
            "--kafka-property=security.protocol=SASL_SSL",
            "--kafka-property=sasl.password=hunter2",
        ]);
        assert_eq!(
            flags.kafka.client_properties().expect("valid properties"),
            [
                ("security.protocol".to_owned(), "SASL_SSL".to_owned()),
                ("sasl.password".to_owned(), "hunter2".to_owned())
            ]
        );
        let shown = format!("{:?}", flags.kafka);
        assert!(
            shown.contains("sasl.password=***") && !shown.contains("hunter2"),
            "{shown}"
        );
        let broken = Flags::parse_from(["x", "--kafka-property=acks"]);
        assert!(broken.kafka.client_properties().is_err());
    }
}

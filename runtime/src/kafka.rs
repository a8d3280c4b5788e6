//! Kafka client set-up. Every setting here is plain Apache Kafka configuration: the same code
//! runs against the local broker (tansu) and a production Kafka cluster.
//!
//! Producers are idempotent with `acks=all`, so a publish that succeeded is on every in-sync
//! replica and librdkafka's own retries never duplicate it. The broker offers no transactions;
//! consumers make their effects idempotent instead (see consumer-worker).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaArgs;
use crate::RuntimeError;

/// The brokers, then whatever `--kafka-property` adds (security protocol, SASL, TLS, …).
fn base_config(args: &KafkaArgs) -> Result<ClientConfig, RuntimeError> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &args.kafka_brokers);
    for (key, value) in args.client_properties()? {
        config.set(key, value);
    }
    Ok(config)
}

fn kafka_error(args: &KafkaArgs) -> impl FnOnce(KafkaError) -> RuntimeError + '_ {
    move |source| RuntimeError::Kafka {
        brokers: args.kafka_brokers.clone(),
        source,
    }
}

/// An idempotent producer whose sends fail after `kafka_ack_timeout_ms` without an ack.
pub fn producer(args: &KafkaArgs) -> Result<FutureProducer, RuntimeError> {
    let mut config = base_config(args)?;
    // Every placement waits for its own acknowledgement, so a produce request held back by
    // Nagle's algorithm is latency on the order path and wake-ups of librdkafka's broker thread
    // (docs/BENCHMARKS.md, optimisation 5). `--kafka-property socket.nagle.disable=false`
    // still turns it back on.
    if config.get("socket.nagle.disable").is_none() {
        config.set("socket.nagle.disable", "true");
    }
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", args.kafka_linger_ms.to_string())
        .set("message.timeout.ms", args.kafka_ack_timeout_ms.to_string())
        // A request already in flight is bounded by this, not by message.timeout.ms: without it
        // a send to a broker that just died waits the 30 s default.
        .set("request.timeout.ms", args.kafka_ack_timeout_ms.to_string())
        .create()
        .map_err(kafka_error(args))
}

/// The configuration of a consumer in `group_id` that starts from the earliest offset of a new
/// group and commits only the offsets the application stored explicitly (after it applied the
/// message).
pub fn consumer_config(args: &KafkaArgs, group_id: &str) -> Result<ClientConfig, RuntimeError> {
    let mut config = base_config(args)?;
    config
        .set("group.id", group_id)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    Ok(config)
}

/// The producer span of one publish to `topic` (full name) keyed by `key`: its context goes
/// into the message's headers ([`crate::trace_context::inject_kafka`]).
pub fn send_span(topic: &str, key: &str) -> tracing::Span {
    tracing::info_span!(
        "kafka send",
        "otel.name" = %format_args!("send {topic}"),
        "otel.kind" = "producer",
        "messaging.system" = "kafka",
        "messaging.operation.type" = "send",
        "messaging.destination.name" = topic,
        "messaging.kafka.message.key" = key,
    )
}

/// Creates each of `topics` (full names) that does not exist yet; existing ones are left alone.
pub async fn ensure_topics(args: &KafkaArgs, topics: &[String]) -> Result<(), RuntimeError> {
    let admin: AdminClient<DefaultClientContext> =
        base_config(args)?.create().map_err(kafka_error(args))?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|name| {
            NewTopic::new(
                name,
                args.kafka_topic_partitions,
                TopicReplication::Fixed(args.kafka_topic_replication),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .map_err(kafka_error(args))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(RuntimeError::CreateTopic {
                    topic,
                    reason: code.to_string(),
                })
            }
        }
    }
    tracing::info!(?topics, "Kafka topics ready");
    Ok(())
}

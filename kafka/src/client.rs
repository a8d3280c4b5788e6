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
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;

use crate::args::KafkaArgs;
use orderflow_runtime::RuntimeError;

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
        source: source.into(),
    }
}

/// An idempotent producer whose sends fail after `kafka_ack_timeout_ms` without an ack.
pub fn producer(args: &KafkaArgs) -> Result<FutureProducer, RuntimeError> {
    producer_config(args)?.create().map_err(kafka_error(args))
}

fn producer_config(args: &KafkaArgs) -> Result<ClientConfig, RuntimeError> {
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
        .set("request.timeout.ms", args.kafka_ack_timeout_ms.to_string());
    Ok(config)
}

/// The settings without connecting (`--check-config`): librdkafka accepts every property of the
/// producer and of a consumer in `group_id` (names and values), the files the properties name
/// hold PEM, and topics can be created as configured.
pub fn check(args: &KafkaArgs, group_id: &str) -> Result<(), RuntimeError> {
    if args.kafka_brokers.trim().is_empty() {
        return Err(RuntimeError::Config("--kafka-brokers is empty".into()));
    }
    if args.kafka_topic_partitions < 1 || args.kafka_topic_replication < 1 {
        return Err(RuntimeError::Config(
            "--kafka-topic-partitions and --kafka-topic-replication must be at least 1".into(),
        ));
    }
    for config in [producer_config(args)?, consumer_config(args, group_id)?] {
        config.create_native_config().map_err(|error| match error {
            // librdkafka's reason quotes the value: not shown for a credential.
            KafkaError::ClientConfig(_, _, key, _) if crate::args::is_secret_key(&key) => {
                RuntimeError::Config(format!("--kafka-property {key}: refused by librdkafka"))
            }
            KafkaError::ClientConfig(_, reason, key, _) => {
                RuntimeError::Config(format!("--kafka-property {key}: {reason}"))
            }
            other => RuntimeError::Config(format!("--kafka-property: {other}")),
        })?;
    }
    for (key, value) in args.client_properties()? {
        // `probe` asks librdkafka to search the system's usual CA locations.
        if PEM_FILE_PROPERTIES.contains(&key.as_str()) && value != "probe" {
            orderflow_config::read_pem_file(
                &format!("--kafka-property {key}"),
                std::path::Path::new(&value),
            )?;
        }
    }
    Ok(())
}

/// Properties naming PEM files librdkafka reads only when the client starts.
const PEM_FILE_PROPERTIES: [&str; 3] = [
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
];

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

/// `headers` plus the current span's trace context, for a message about to be published.
pub fn with_trace_context(headers: OwnedHeaders) -> OwnedHeaders {
    orderflow_telemetry::trace_context::current_fields()
        .iter()
        .fold(headers, |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(value.as_str()),
            })
        })
}

/// The producer span of one publish to `topic` (full name) keyed by `key`: its context goes
/// into the message's headers ([`with_trace_context`]).
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        kafka: KafkaArgs,
    }

    fn check_with(properties: &[&str]) -> Result<(), RuntimeError> {
        let mut argv = vec!["x".to_owned()];
        argv.extend(properties.iter().map(|p| format!("--kafka-property={p}")));
        check(&Flags::parse_from(argv).kafka, "group")
    }

    #[test]
    fn librdkafka_judges_every_property_without_a_broker() {
        assert!(check_with(&["security.protocol=SASL_PLAINTEXT", "sasl.password=x"]).is_ok());
        let unknown = check_with(&["no.such.property=1"]).expect_err("unknown property");
        assert!(
            unknown.to_string().contains("no.such.property"),
            "{unknown}"
        );
        let refused = check_with(&["security.protocol=SASL_TLS"]).expect_err("bad value");
        assert!(
            refused.to_string().contains("security.protocol"),
            "{refused}"
        );
    }

    #[test]
    fn files_named_by_properties_must_hold_pem() {
        let missing = check_with(&["ssl.ca.location=/nonexistent/ca.pem"]).expect_err("missing");
        assert!(missing.to_string().contains("ssl.ca.location"), "{missing}");
        assert!(check_with(&["ssl.ca.location=probe"]).is_ok());
    }
}

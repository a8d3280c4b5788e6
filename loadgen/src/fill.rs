//! `loadgen fill-broker`: stores many events on a broker, shaped like the ones orderflow
//! publishes (keyed by an order id, an event-type and a `traceparent` header, a small protobuf-sized
//! payload), in a topic no service reads. `make bench` measures CreateOrder on a broker filled
//! this way beside one with empty storage: a broker whose per-record cost grows with what it
//! holds shows up as the ratio of the two.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use orderflow_proto::topics;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use uuid::Uuid;

use crate::args::FillBrokerArgs;

/// Sends in flight at once: enough to keep every batch full, few enough to bound memory.
const IN_FLIGHT: usize = 20_000;

pub async fn run(args: FillBrokerArgs) -> anyhow::Result<bool> {
    let kafka = orderflow_kafka::KafkaArgs {
        kafka_brokers: args.kafka_brokers.clone(),
        kafka_topic_prefix: String::new(),
        kafka_topic_partitions: args.partitions,
        kafka_topic_replication: 1,
        kafka_linger_ms: 20,
        kafka_ack_timeout_ms: 60_000,
        kafka_properties: Vec::new(),
        kafka_sasl_password_file: None,
    };
    orderflow_kafka::client::ensure_topics(&kafka, std::slice::from_ref(&args.topic))
        .await
        .with_context(|| format!("creating topic {}", args.topic))?;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &args.kafka_brokers)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "100000")
        .create()
        .context("creating the producer")?;
    let payload = vec![0x2a_u8; args.payload_bytes];
    let started = Instant::now();
    let failures = futures::stream::iter(0..args.events)
        .map(|_| {
            let producer = &producer;
            let payload = &payload;
            let topic = &args.topic;
            async move {
                let key = Uuid::now_v7().to_string();
                let traceparent = format!("00-{}-{:016x}-01", Uuid::new_v4().simple(), rand_span());
                let headers = OwnedHeaders::new()
                    .insert(Header {
                        key: topics::EVENT_TYPE_HEADER,
                        value: Some("orderflow.events.v1.OrderCreated"),
                    })
                    .insert(Header {
                        key: "traceparent",
                        value: Some(traceparent.as_str()),
                    });
                let record = FutureRecord::to(topic)
                    .key(key.as_bytes())
                    .payload(payload.as_slice())
                    .headers(headers);
                producer
                    .send(record, Duration::from_secs(60))
                    .await
                    .is_err()
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let stored = args.events - failures;
    println!(
        "{}",
        json!({
            "scenario": "fill-broker",
            "topic": args.topic,
            "events": stored,
            "failed": failures,
            "seconds": elapsed,
            "events_per_second": stored as f64 / elapsed,
        })
    );
    Ok(failures == 0)
}

/// A span id for the `traceparent` header: only its size matters here.
fn rand_span() -> u64 {
    Uuid::new_v4().as_u64_pair().0
}

//! consumer-worker: consumes order events from Kafka and applies them to PostgreSQL.
//!
//! Each event's effect and the record of its `event_id` commit in one transaction (`apply`), and
//! the event's offset is stored for commit only after that (`worker`): a crash replays at most
//! the events whose offsets were not yet committed, and a replayed event changes nothing.

mod apply;
mod record;
mod worker;

use std::time::Duration;

use orderflow_runtime::config::{KafkaArgs, PostgresArgs, TelemetryArgs};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "consumer-worker", version, about = "orderflow consumer worker")]
pub struct Config {
    /// Kafka consumer group; every replica of the worker uses the same one.
    #[arg(
        long,
        env = "ORDERFLOW_WORKER_GROUP_ID",
        default_value = "orderflow-consumer-worker"
    )]
    pub group_id: String,

    /// Longest pause between two attempts to apply an event while PostgreSQL is unavailable.
    #[arg(long, env = "ORDERFLOW_WORKER_MAX_BACKOFF_MS", default_value_t = 5_000)]
    pub max_backoff_ms: u64,

    #[command(flatten)]
    pub postgres: PostgresArgs,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// Consumes and applies events until `shutdown` is cancelled, then commits what it applied.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), orderflow_runtime::RuntimeError> {
    let pool = orderflow_runtime::postgres::connect_and_migrate(&config.postgres).await?;
    let topic = config.kafka.topic(orderflow_proto::topics::ORDER_CREATED);
    orderflow_runtime::kafka::ensure_topics(&config.kafka, std::slice::from_ref(&topic)).await?;
    let consumer = orderflow_runtime::kafka::consumer(&config.kafka, &config.group_id)?;
    worker::Worker {
        consumer,
        pool,
        topic,
        max_backoff: Duration::from_millis(config.max_backoff_ms),
        brokers: config.kafka.kafka_brokers,
    }
    .run(shutdown)
    .await
}

//! consumer-worker: consumes the order events from Kafka and applies them to PostgreSQL.
//!
//! The consume loop (batches, offsets committed only after the effects, retries, dead letters,
//! lag, shutdown) is the shared one of `orderflow_kafka::consume`; this crate decodes the
//! events (`event`) and applies each batch in one transaction, every event exactly once
//! (`apply`), confirming new orders' reservations with inventory-svc through its API. It serves
//! its health and consumer status (lag per partition) over gRPC.

mod apply;
mod event;

use orderflow_grpc::InventoryClientArgs;
use orderflow_grpc::Services;
use orderflow_kafka::consume::{self, Subscription};
use orderflow_kafka::{ConsumerArgs, KafkaArgs};
use orderflow_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use orderflow_proto::topics;
use orderflow_runtime::config::ProcessArgs;
use orderflow_runtime::RuntimeError;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, clap::Parser, serde::Serialize)]
#[command(name = "consumer-worker", version, about = "orderflow consumer worker")]
pub struct Config {
    /// gRPC listen address of the health and consumer status services.
    #[arg(
        long,
        env = "ORDERFLOW_WORKER_LISTEN",
        default_value = "127.0.0.1:50054"
    )]
    pub listen: String,

    /// HTTP listen address of the Prometheus metrics (`GET /metrics`).
    #[arg(
        long,
        env = "ORDERFLOW_METRICS_LISTEN",
        default_value = "127.0.0.1:9104"
    )]
    pub metrics_listen: String,

    #[command(flatten)]
    pub process: ProcessArgs,

    /// Kafka consumer group; every replica of the worker uses the same one.
    #[arg(
        long,
        env = "ORDERFLOW_WORKER_GROUP_ID",
        default_value = "orderflow-consumer-worker"
    )]
    pub group_id: String,

    #[command(flatten)]
    pub inventory: InventoryClientArgs,

    /// Longest wait for inventory-svc to confirm a batch's new orders' reservations; past it
    /// the batch is tried again later (it holds the orders' key locks meanwhile, which an
    /// order-api persisting one of them waits for).
    #[arg(
        long,
        env = "ORDERFLOW_WORKER_CONFIRM_TIMEOUT_MS",
        default_value_t = 2_000
    )]
    pub confirm_timeout_ms: u64,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    #[command(flatten)]
    pub consumer: ConsumerArgs,
}

impl Config {
    /// Everything a start refuses before it connects to anything (`--check-config`; `run`
    /// begins with it).
    pub fn validate(&self) -> Result<(), RuntimeError> {
        self.process.validate(&self.listen, &self.metrics_listen)?;
        orderflow_kafka::client::check(&self.kafka, &self.group_id)?;
        orderflow_grpc::client::Outbound::to_inventory(&self.inventory)?;
        Ok(())
    }
}

/// Consumes and applies events until `shutdown` is cancelled, then commits what it applied,
/// leaves the group and stops serving.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RuntimeError> {
    config.validate()?;
    let Some(opened) = orderflow_runtime::process::open_pool(
        "consumer-worker",
        &config.process,
        &orderflow_order_rows::SCHEMA,
        &config.metrics_listen,
        &shutdown,
    )
    .await?
    else {
        return Ok(());
    };
    let pool = opened.pool.clone();
    let subscription = Subscription {
        kafka: config.kafka,
        group_id: config.group_id,
        topics: topics::ALL,
        consumer: config.consumer,
        drain_timeout: std::time::Duration::from_millis(config.process.serving.drain_timeout_ms),
    };
    let status = subscription.status();
    // Whichever stops first stops the other (a worker that cannot consume must not look
    // healthy), without stopping whatever else shares the caller's token.
    let shutdown = shutdown.child_token();
    let serving = orderflow_grpc::serve(
        Services::new(status.service()),
        listener,
        &config.process.serving,
        shutdown.clone().cancelled_owned(),
    );
    let inventory = InventoryServiceClient::new(orderflow_grpc::client::Outbound::to_inventory(
        &config.inventory,
    )?);
    let consuming = consume::run(
        subscription,
        apply::Applier {
            pool,
            inventory,
            confirm_timeout: std::time::Duration::from_millis(
                config.inventory.inventory_timeout_ms,
            ),
        },
        status,
        shutdown.clone(),
    );
    let (served, consumed) = tokio::join!(
        async {
            let served = serving.await;
            shutdown.cancel();
            served
        },
        async {
            let consumed = consuming.await;
            shutdown.cancel();
            consumed
        }
    );
    consumed.and(served.map_err(RuntimeError::from))
}

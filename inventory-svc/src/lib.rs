//! inventory-svc: owns the stock of every SKU and hands out reservations for orders.
//!
//! Redis holds the live counters and admits or refuses a reservation in one atomic Lua script
//! (`counters`); PostgreSQL holds the durable truth (`ledger`) and records every admitted
//! reservation before it is acknowledged (`recorder`, in group commits), refusing any that
//! Redis admitted beyond what exists. Changes that write absolute values to both stores run
//! under a fenced distributed lock (`guarded`). A reservation is held for its placement until an
//! order that exists confirms it (ConfirmReservations); a sweeper returns the stock of those no
//! order confirmed once the order log is known to hold none for them, and settles admissions a
//! dead process never recorded (`sweeper`). The rules are
//! plain Rust (`stock`, `admission`), and `service` is the gRPC edge that maps every error to a
//! status in one place (`error`). docs/inventory.md has the design.

mod admission;
mod counters;
mod error;
mod guarded;
pub mod ledger;
mod recorder;
mod service;
pub mod stock;
mod sweeper;

use std::time::Duration;

use orderflow_kafka::{KafkaArgs, OrderLogArgs};
use orderflow_lock::{LockSettings, Locks};
use orderflow_proto::inventory::v1::inventory_service_server::InventoryServiceServer;
use orderflow_runtime::config::ProcessArgs;
use orderflow_runtime::redis::RedisArgs;
use orderflow_runtime::RuntimeError;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::InventoryError;

/// The inventory schema (`migrations/`): the stock and the reservations, inventory-svc's alone.
pub static SCHEMA: orderflow_runtime::postgres::Schema = orderflow_runtime::postgres::Schema {
    name: "inventory",
    migrator: &MIGRATOR,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone, clap::Parser, serde::Serialize)]
#[command(name = "inventory-svc", version, about = "orderflow inventory service")]
pub struct Config {
    /// gRPC listen address.
    #[arg(
        long,
        env = "ORDERFLOW_INVENTORY_LISTEN",
        default_value = "127.0.0.1:50052"
    )]
    pub listen: String,

    /// HTTP listen address of the Prometheus metrics (`GET /metrics`).
    #[arg(
        long,
        env = "ORDERFLOW_METRICS_LISTEN",
        default_value = "127.0.0.1:9102"
    )]
    pub metrics_listen: String,

    #[command(flatten)]
    pub process: ProcessArgs,

    /// How long a reservation is held for a caller that sent no deadline, unless an order
    /// confirms it. A caller's deadline (order-api sends what is left of its
    /// --create-timeout-ms) holds it that long instead. Either way plus --orphan-grace-ms; a
    /// reservation an order confirmed never expires: its order's payment or cancellation ends it.
    #[arg(
        long,
        env = "ORDERFLOW_RESERVATION_TTL_SECS",
        default_value_t = 1200,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub reservation_ttl_secs: u64,

    /// Added to a placement's deadline before its unconfirmed reservation may be returned: a
    /// publish sent just before the deadline may still be on its way to the broker.
    #[arg(long, env = "ORDERFLOW_ORPHAN_GRACE_MS", default_value_t = 2_000)]
    pub orphan_grace_ms: u64,

    /// How often reservations no order confirmed are looked for.
    #[arg(
        long,
        env = "ORDERFLOW_RESERVATION_SWEEP_INTERVAL_MS",
        default_value_t = 1000
    )]
    pub reservation_sweep_interval_ms: u64,

    /// An unconfirmed reservation returns its stock only once consumer-worker's group has
    /// applied every `order-created` event the log held after the reservation's placement ended.
    #[command(flatten)]
    pub order_log: OrderLogArgs,

    /// How long a reservation Redis admitted may stay unconfirmed by PostgreSQL before the
    /// sweeper settles it (its process died in between): confirmed if PostgreSQL has it, else
    /// its units return.
    #[arg(
        long,
        env = "ORDERFLOW_UNRECORDED_GRACE_SECS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub unrecorded_grace_secs: u64,

    /// Most reservations recorded in PostgreSQL in one transaction (group commit).
    #[arg(long, env = "ORDERFLOW_RESERVATION_BATCH_MAX", default_value_t = 512)]
    pub reservation_batch_max: usize,

    /// How long a SKU's distributed lock is held before it frees itself.
    #[arg(
        long,
        env = "ORDERFLOW_LOCK_TTL_MS",
        default_value_t = 5000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub lock_ttl_ms: u64,

    /// How long to wait for a busy SKU lock before answering UNAVAILABLE.
    #[arg(long, env = "ORDERFLOW_LOCK_WAIT_MS", default_value_t = 3000)]
    pub lock_wait_ms: u64,

    #[command(flatten)]
    pub redis: RedisArgs,

    #[command(flatten)]
    pub kafka: KafkaArgs,
}

impl Config {
    /// Everything a start refuses before it connects to anything (`--check-config`; `run`
    /// begins with it).
    pub fn validate(&self) -> Result<(), RuntimeError> {
        self.process.validate(&self.listen, &self.metrics_listen)?;
        orderflow_runtime::redis::check(&self.redis)?;
        orderflow_kafka::client::check(&self.kafka, &self.order_log.orders_consumer_group)
    }
}

/// How long Redis keeps a reservation after it expired, so retries still find it.
const RESERVATION_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Who may call what once authentication is on: anyone with a token reads stock; reservations
/// are for order-api (`inventory`); setting and reconciling stock for operators (`admin`).
fn policy() -> orderflow_grpc::auth::Policy {
    use orderflow_grpc::auth::{SCOPE_INVENTORY, SCOPE_ORDERS};
    const READERS: &[&str] = &[SCOPE_ORDERS, SCOPE_INVENTORY];
    const RESERVERS: &[&str] = &[SCOPE_INVENTORY];
    orderflow_grpc::auth::Policy::default().service(
        orderflow_proto::inventory::v1::inventory_service_server::SERVICE_NAME,
        &[
            ("GetStock", READERS),
            ("BatchGetStock", READERS),
            ("Reserve", RESERVERS),
            ("ConfirmReservations", RESERVERS),
            ("Release", RESERVERS),
            ("Commit", RESERVERS),
        ],
    )
}

/// Serves the inventory service on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RuntimeError> {
    config.validate()?;
    let Some(opened) = orderflow_runtime::process::open_pool(
        "inventory-svc",
        &config.process,
        &crate::SCHEMA,
        &config.metrics_listen,
        &shutdown,
    )
    .await?
    else {
        return Ok(());
    };
    let pool = opened.pool.clone();
    let redis = orderflow_runtime::redis::connect(&config.redis).await?;
    let ledger = ledger::Ledger::new(pool);
    let counters = counters::Counters::new(redis.clone(), config.redis.clone());
    counters
        .preload()
        .await
        .map_err(|source| RuntimeError::Redis {
            url: orderflow_config::redact_url(&config.redis.redis_url),
            source,
        })?;
    let locks = Locks::new(
        redis,
        &config.redis.redis_key_prefix,
        LockSettings {
            ttl: Duration::from_millis(config.lock_ttl_ms),
            wait: Duration::from_millis(config.lock_wait_ms),
        },
    );
    let inventory = service::Inventory::new(
        ledger.clone(),
        counters.clone(),
        recorder::Recorder::start(
            ledger.clone(),
            counters.clone(),
            config.reservation_batch_max.max(1),
        ),
        guarded::Guarded::new(locks, ledger.clone(), counters.clone()),
        service::Lifetimes {
            reservation: Duration::from_secs(config.reservation_ttl_secs),
            grace: Duration::from_millis(config.orphan_grace_ms),
            retention: RESERVATION_RETENTION,
        },
    );
    let sweeper = sweeper::Sweeper {
        ledger,
        counters,
        barrier: config.order_log.barrier(&config.kafka)?,
        interval: Duration::from_millis(config.reservation_sweep_interval_ms.max(1)),
        unrecorded_grace: Duration::from_secs(config.unrecorded_grace_secs),
    };
    let sweeper = tokio::spawn(sweeper.run(shutdown.clone()));
    let served = orderflow_grpc::serve(
        orderflow_grpc::Services::new(InventoryServiceServer::new(inventory)).policy(policy()),
        listener,
        &config.process.serving,
        shutdown.cancelled_owned(),
    )
    .await;
    sweeper.abort();
    Ok(served?)
}

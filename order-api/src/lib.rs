//! order-api: the fast path of an order and its lifecycle. `CreateOrder` validates, claims the
//! idempotency key, reserves stock through inventory-svc, publishes `order-created`, answers once
//! the broker acknowledged it (from then on the order exists) and caches it in Redis;
//! consumer-worker persists it to PostgreSQL (`placement`). Status changes are decided in PostgreSQL
//! (`transitions`), with their events and stock settlements as follow-ups (`followups`);
//! unpaid orders expire (`expiry`); reads come from the Redis cache, else PostgreSQL (`reads`);
//! WatchOrder streams changes announced by PostgreSQL (`watch`). See docs/orders.md.

mod cache;
mod deadline;
mod error;
mod events;
mod expiry;
mod fault;
mod followups;
mod idempotency;
mod lifecycle;
mod order;
mod placement;
mod rate_limit;
mod reads;
mod service;
mod sold_out;
mod store;
mod transitions;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use orderflow_grpc::InventoryClientArgs;
use orderflow_kafka::{KafkaArgs, OrderLogArgs};
use orderflow_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use orderflow_proto::order::v1::order_service_server::OrderServiceServer;
use orderflow_runtime::config::ProcessArgs;
use orderflow_runtime::redis::RedisArgs;
use orderflow_runtime::RuntimeError;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::OrderError;

/// order-api's client of inventory-svc: traced, its context passed on.
pub(crate) type InventoryClient = InventoryServiceClient<orderflow_grpc::client::Outbound>;

#[derive(Debug, Clone, clap::Parser, serde::Serialize)]
#[command(name = "order-api", version, about = "orderflow order API")]
pub struct Config {
    /// gRPC listen address.
    #[arg(
        long,
        env = "ORDERFLOW_ORDER_API_LISTEN",
        default_value = "127.0.0.1:50051"
    )]
    pub listen: String,

    /// HTTP listen address of the Prometheus metrics (`GET /metrics`).
    #[arg(
        long,
        env = "ORDERFLOW_METRICS_LISTEN",
        default_value = "127.0.0.1:9101"
    )]
    pub metrics_listen: String,

    #[command(flatten)]
    pub process: ProcessArgs,

    /// CreateOrder calls one user may make per second, on average, across all replicas (a
    /// token bucket in Redis); past it RESOURCE_EXHAUSTED with the wait. 0 turns it off.
    #[arg(long, env = "ORDERFLOW_RATE_LIMIT_PER_SECOND", default_value_t = 0.0)]
    pub rate_limit_per_second: f64,

    /// How many CreateOrder calls one user may make at once before the rate applies.
    #[arg(long, env = "ORDERFLOW_RATE_LIMIT_BURST", default_value_t = 10)]
    pub rate_limit_burst: u32,

    #[command(flatten)]
    pub inventory: InventoryClientArgs,

    /// ISO 4217 currency of every price and total.
    #[arg(long, env = "ORDERFLOW_CURRENCY", default_value = "CNY")]
    pub currency: String,

    /// How long a SKU inventory-svc reported short is answered as such by this process without
    /// asking inventory-svc again (a flash sale's buyers after the last unit). Stock that comes
    /// back (a cancelled or expired order, new stock) is sold again at most this much later.
    /// 0 asks every time.
    #[arg(long, env = "ORDERFLOW_SOLD_OUT_MEMO_MS", default_value_t = 200)]
    pub sold_out_memo_ms: u64,

    /// How long an order stays in the Redis cache after it was written there.
    #[arg(long, env = "ORDERFLOW_ORDER_CACHE_TTL_SECS", default_value_t = 3600)]
    pub order_cache_ttl_secs: u64,

    /// How long an idempotency key is remembered after its order was placed.
    #[arg(long, env = "ORDERFLOW_IDEMPOTENCY_TTL_SECS", default_value_t = 86_400)]
    pub idempotency_ttl_secs: u64,

    /// Upper bound on placing one order (reserve, publish, cache); past it the caller gets
    /// UNAVAILABLE and a retry with the same idempotency key finishes or answers the order.
    /// Must exceed the Kafka ack timeout.
    #[arg(long, env = "ORDERFLOW_CREATE_TIMEOUT_MS", default_value_t = 10_000)]
    pub create_timeout_ms: u64,

    /// Upper bound on every other call (reads, status changes) when the caller's deadline is
    /// not shorter.
    #[arg(long, env = "ORDERFLOW_REQUEST_TIMEOUT_MS", default_value_t = 5_000)]
    pub request_timeout_ms: u64,

    /// An order unpaid this long after it was placed expires and its stock goes back on sale.
    #[arg(long, env = "ORDERFLOW_PAYMENT_DEADLINE_SECS", default_value_t = 900)]
    pub payment_deadline_secs: u64,

    /// How often each order-api process looks for unpaid orders past their deadline.
    #[arg(long, env = "ORDERFLOW_EXPIRY_INTERVAL_MS", default_value_t = 1_000)]
    pub expiry_interval_ms: u64,

    /// How often each order-api process retries events not yet acknowledged by the broker and
    /// stock not yet settled in inventory-svc (a status change also wakes it at once).
    #[arg(long, env = "ORDERFLOW_FOLLOWUP_INTERVAL_MS", default_value_t = 1_000)]
    pub followup_interval_ms: u64,

    #[command(flatten)]
    pub redis: RedisArgs,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// While Redis restores the idempotency keys it lost, a key PostgreSQL does not know is
    /// placed only once consumer-worker's group has applied what the order log held.
    #[command(flatten)]
    pub order_log: OrderLogArgs,

    /// A fault injected into the first placement that reaches it (tests only; see `fault`).
    #[cfg(feature = "test-faults")]
    #[arg(long, hide = true)]
    pub test_fault: Option<String>,
}

impl Config {
    /// Everything a start refuses before it connects to anything (`--check-config`; `run`
    /// begins with it).
    pub fn validate(&self) -> Result<(), RuntimeError> {
        if self.create_timeout_ms <= self.kafka.kafka_ack_timeout_ms {
            return Err(RuntimeError::Config(format!(
                "--create-timeout-ms ({}) must exceed --kafka-ack-timeout-ms ({}), or every \
                 order would time out before the broker could acknowledge it",
                self.create_timeout_ms, self.kafka.kafka_ack_timeout_ms
            )));
        }
        self.process.validate(&self.listen, &self.metrics_listen)?;
        orderflow_runtime::redis::check(&self.redis)?;
        orderflow_kafka::client::check(&self.kafka, &self.order_log.orders_consumer_group)?;
        orderflow_grpc::client::Outbound::to_inventory(&self.inventory)?;
        #[cfg(feature = "test-faults")]
        fault::Faults::parse(self.test_fault.as_deref()).map_err(RuntimeError::Config)?;
        Ok(())
    }
}

/// Who may call what once authentication is on: buyers (`orders`) place, read, pay, cancel and
/// watch their own orders (ownership is checked per call); shipping and completing are for
/// operators (`admin`).
fn policy() -> orderflow_grpc::auth::Policy {
    use orderflow_grpc::auth::SCOPE_ORDERS;
    const BUYERS: &[&str] = &[SCOPE_ORDERS];
    orderflow_grpc::auth::Policy::default().service(
        orderflow_proto::order::v1::order_service_server::SERVICE_NAME,
        &[
            ("CreateOrder", BUYERS),
            ("GetOrder", BUYERS),
            ("BatchGetOrders", BUYERS),
            ("ListOrders", BUYERS),
            ("PayOrder", BUYERS),
            ("CancelOrder", BUYERS),
            ("WatchOrder", BUYERS),
        ],
    )
}

/// How long start-up waits for the idempotency keys' restore to catch up with the order log
/// (instant on an idle log); past it the process serves and new keys wait meanwhile.
const RESTORE_PATIENCE: Duration = Duration::from_secs(10);

/// Serves the order API on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RuntimeError> {
    config.validate()?;
    let Some(opened) = orderflow_runtime::process::open_pool(
        "order-api",
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
    let redis = orderflow_runtime::redis::connect(&config.redis).await?;
    let topics: Vec<String> = orderflow_proto::topics::ALL
        .iter()
        .map(|topic| config.kafka.topic(topic))
        .collect();
    orderflow_kafka::client::ensure_topics(&config.kafka, &topics).await?;
    let inventory = InventoryServiceClient::new(orderflow_grpc::client::Outbound::to_inventory(
        &config.inventory,
    )?);

    let publisher = Arc::new(events::Publisher::new(&config.kafka)?);
    let store = store::OrderStore::new(pool.clone());
    let cache = cache::OrderCache::new(
        redis.clone(),
        config.redis.clone(),
        Duration::from_secs(config.order_cache_ttl_secs),
    );
    let reads = reads::Reads {
        cache: cache.clone(),
        store: store.clone(),
    };
    let followups = followups::Followups::new(pool, inventory.clone(), Arc::clone(&publisher));
    let transitions = transitions::Transitions {
        store: store.clone(),
        cache: cache.clone(),
        inventory: inventory.clone(),
        followups: followups.clone(),
    };
    let feed = watch::ChangeFeed::new(store);
    let claims = idempotency::Claims::new(
        redis.clone(),
        config.redis.clone(),
        Duration::from_secs(config.idempotency_ttl_secs),
        config.order_log.barrier(&config.kafka)?,
    );
    claims
        .restore_at_start(reads.store.pool().clone(), RESTORE_PATIENCE)
        .await
        .map_err(|error| RuntimeError::Config(error.to_string()))?;
    let placement = placement::Placement::new(placement::Parts {
        inventory,
        cache,
        claims,
        publisher,
        rate_limit: rate_limit::RateLimit::new(
            redis,
            config.redis.clone(),
            config.rate_limit_per_second,
            config.rate_limit_burst,
        ),
        reads: reads.clone(),
        currency: config.currency,
        payment_window: Duration::from_secs(config.payment_deadline_secs),
        sold_out: sold_out::SoldOutMemo::new(Duration::from_millis(config.sold_out_memo_ms)),
        #[cfg(feature = "test-faults")]
        faults: fault::Faults::parse(config.test_fault.as_deref()).map_err(RuntimeError::Config)?,
        #[cfg(not(feature = "test-faults"))]
        faults: fault::Faults::default(),
    });

    // Stops the background tasks when the server stops, for whatever reason.
    let background_stop = shutdown.child_token();
    let background = [
        tokio::spawn(followups.run(
            Duration::from_millis(config.followup_interval_ms.max(1)),
            background_stop.clone(),
        )),
        tokio::spawn(expiry::run(
            transitions.clone(),
            Duration::from_millis(config.expiry_interval_ms.max(1)),
            // A quarter of the pool, so expiring a flash sale's unpaid orders leaves the rest to
            // requests.
            (config.process.postgres.database_max_connections as usize / 4).max(1),
            background_stop.clone(),
        )),
        tokio::spawn(feed.clone().run(background_stop.clone())),
    ];
    let api = service::OrderApi {
        placement,
        reads,
        transitions,
        feed,
        create_timeout: Duration::from_millis(config.create_timeout_ms),
        request_timeout: Duration::from_millis(config.request_timeout_ms.max(1)),
        shutdown: shutdown.clone(),
        streams: orderflow_grpc::streams::OpenStreams::new(config.process.serving.max_open_streams),
    };
    let served = orderflow_grpc::serve(
        orderflow_grpc::Services::new(OrderServiceServer::new(api)).policy(policy()),
        listener,
        &config.process.serving,
        shutdown.clone().cancelled_owned(),
    )
    .await;
    background_stop.cancel();
    for task in background {
        if let Err(error) = task.await {
            tracing::error!(%error, "an order-api background task failed");
        }
    }
    Ok(served?)
}

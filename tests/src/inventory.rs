//! inventory-svc as real processes (the built `inventory-svc` binary), several at once against
//! one database and one Redis (shared, private or a cluster), isolated from every other test.
//! Inventory tests need neither the broker nor the other services.

use orderflow_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use orderflow_proto::inventory::v1::{ReserveItem, ReserveRequest, SetStockRequest};
use orderflow_runtime::redis::RedisArgs;
use orderflow_runtime::redis::RedisConnection;
use sqlx::PgPool;
use tonic::transport::Channel;

use crate::deps;
use crate::service::{Configure, Launcher, Mode};

#[derive(Debug, Clone, Default)]
pub struct InventoryOptions {
    /// How many inventory-svc processes (at least one).
    pub processes: usize,
    /// Another Redis than the shared one; with `redis_cluster`, the cluster's seed nodes.
    pub redis_url: Option<String>,
    pub redis_cluster: bool,
    /// Another PostgreSQL server than the shared one (e.g. a `PrivatePostgres`'s URL).
    pub postgres_server: Option<String>,
    /// A change to every process's configuration, e.g. a short `reservation_ttl_secs`.
    pub config: Configure<inventory_svc::Config>,
}

pub struct InventoryStack {
    /// One client per process.
    pub clients: Vec<InventoryServiceClient<Channel>>,
    pub db: PgPool,
    /// This test's Redis and key prefix, as the services see them.
    pub redis_args: RedisArgs,
    pub redis: RedisConnection,
    launcher: Launcher,
}

impl InventoryStack {
    pub async fn start(options: InventoryOptions) -> Self {
        let id = crate::unique_id();
        let server = options
            .postgres_server
            .clone()
            .unwrap_or_else(deps::postgres_server);
        let (database_url, db) = deps::fresh_database_on(&server, &id).await;
        let mut config = crate::service::defaults::<inventory_svc::Config>();
        config.process.postgres.database_url = database_url;
        config.process.postgres.database_max_connections = 4;
        config.redis.redis_url = options.redis_url.clone().unwrap_or_else(deps::redis_url);
        config.redis.redis_cluster = options.redis_cluster;
        config.redis.redis_key_prefix = format!("t{id}");
        // No order log of its own: its orphan sweep asks an empty one.
        config.kafka.kafka_brokers = deps::kafka_brokers();
        config.kafka.kafka_topic_prefix = format!("t{id}.");
        config.order_log.orders_consumer_group = format!("t{id}-worker");
        // Several processes per test: each takes a free port for its /metrics.
        config.metrics_listen = "127.0.0.1:0".into();
        options.config.apply(&mut config);
        // The test's own connection; the services keep their default timeout.
        let redis_args = RedisArgs {
            redis_timeout_ms: 2000,
            ..config.redis.clone()
        };
        let redis = orderflow_runtime::redis::connect(&redis_args)
            .await
            .unwrap_or_else(|error| panic!("{error}; {}", deps::HOW_TO_START));
        let mut launcher = Launcher::new(Mode::Processes(Vec::new()));
        let mut clients = Vec::new();
        for _ in 0..options.processes.max(1) {
            let address = launcher.start(config.clone()).await;
            clients.push(InventoryServiceClient::new(crate::stack::channel(address)));
        }
        Self {
            clients,
            db,
            redis_args,
            redis,
            launcher,
        }
    }

    /// The client of process `index` (wrapping around).
    pub fn client(&self, index: usize) -> InventoryServiceClient<Channel> {
        self.clients[index % self.clients.len()].clone()
    }

    pub async fn set_stock(&self, sku: &str, quantity: i64, price_cents: i64) {
        set_stock(self.client(0), sku, quantity, price_cents).await;
    }

    /// `available`, `reserved`, `sold` of `sku` in Redis, `None` if Redis has no counters.
    pub async fn redis_counters(&self, sku: &str) -> Option<[i64; 3]> {
        let key = self.redis_args.key(&["stock", sku]);
        let values: [Option<i64>; 3] = redis::cmd("HMGET")
            .arg(key)
            .arg(&["available", "reserved", "sold"])
            .query_async(&mut self.redis.clone())
            .await
            .expect("reading counters from Redis");
        Some([values[0]?, values[1]?, values[2]?])
    }

    /// `available`, `reserved`, `sold` of `sku` in PostgreSQL.
    pub async fn durable_counters(&self, sku: &str) -> [i64; 3] {
        let (available, reserved, sold): (i64, i64, i64) =
            sqlx::query_as("SELECT available, reserved, sold FROM skus WHERE sku = $1")
                .bind(sku)
                .fetch_one(&self.db)
                .await
                .expect("reading a SKU row");
        [available, reserved, sold]
    }

    /// What an inventory-svc process killed between Redis and PostgreSQL leaves behind: the
    /// admission script ran (units taken in Redis), nothing was recorded.
    pub async fn admit_without_recording(&self, order_id: &str, sku: &str, quantity: i64) {
        let reply = admit_in_redis(
            &self.redis,
            &admission_script(),
            &self.redis_args,
            order_id,
            (sku, quantity),
        )
        .await
        .expect("running the admission script");
        assert_eq!(reply[0], "admitted", "{reply:?}");
    }

    /// Reservations PostgreSQL refused after Redis admitted them (zero in normal operation).
    pub async fn refusals(&self) -> i64 {
        self.count("SELECT count(*) FROM stock_refusals").await
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.db)
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"))
    }

    /// Kills process `index` (SIGKILL, like a crash) and waits until it is gone.
    pub async fn kill(&mut self, index: usize) {
        self.launcher
            .processes("inventory-svc")
            .nth(index)
            .unwrap_or_else(|| panic!("no inventory-svc process #{index}"))
            .kill()
            .await;
    }
}

/// inventory-svc's admission script (`reserve.lua`), for callers that bypass the service.
pub fn admission_script() -> redis::Script {
    redis::Script::new(include_str!("../../inventory-svc/src/scripts/reserve.lua"))
}

/// Runs the admission script for one line of `order_id`, as inventory-svc does (reservation
/// kept an hour), without recording anything in PostgreSQL. The script's reply.
pub async fn admit_in_redis(
    redis: &RedisConnection,
    script: &redis::Script,
    keys: &RedisArgs,
    order_id: &str,
    (sku, quantity): (&str, i64),
) -> redis::RedisResult<Vec<String>> {
    script
        .key(keys.key(&["reservation", order_id]))
        .key(keys.key(&["unrecorded"]))
        .key(keys.key(&["stock", sku]))
        .arg(3_600_000)
        .arg(order_id)
        .arg(sku)
        .arg(quantity)
        .invoke_async(&mut redis.clone())
        .await
}

/// Sets a SKU's stock as an operator does, failing the test if refused.
pub async fn set_stock(
    mut client: InventoryServiceClient<Channel>,
    sku: &str,
    quantity: i64,
    price_cents: i64,
) {
    client
        .set_stock(SetStockRequest {
            sku: sku.into(),
            quantity,
            price_cents,
        })
        .await
        .expect("SetStock");
}

/// A Reserve request for a new order.
pub fn reserve_request(items: &[(&str, i64)]) -> ReserveRequest {
    reserve_request_for(&uuid::Uuid::now_v7().to_string(), items)
}

/// A Reserve request for `order_id`.
pub fn reserve_request_for(order_id: &str, items: &[(&str, i64)]) -> ReserveRequest {
    ReserveRequest {
        order_id: order_id.into(),
        items: items
            .iter()
            .map(|(sku, quantity)| ReserveItem {
                sku: (*sku).into(),
                quantity: *quantity,
            })
            .collect(),
    }
}

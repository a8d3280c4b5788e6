//! The four orderflow services running in-process on loopback port 0 (or, on request, each as
//! its own process), wired to the shared dependencies (or a private broker), isolated from every
//! other test.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use orderflow_grpc::auth::AuthArgs;
use orderflow_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use orderflow_proto::inventory::v1::{GetStockRequest, Stock};
use orderflow_proto::notify::v1::notification_service_client::NotificationServiceClient;
use orderflow_proto::order::v1::order_service_client::OrderServiceClient;
use orderflow_proto::order::v1::{CreateOrderRequest, Order};
use orderflow_runtime::redis::RedisArgs;
use redis::AsyncCommands;
use sqlx::PgPool;
use tonic::transport::Channel;
use tonic::transport::ClientTlsConfig;
use tonic::Status;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::deps;
use crate::link::Link;
use crate::process::ServiceProcess;
use crate::service::{
    Configure, Launcher, Mode, Service, CONSUMER_STATUS, INVENTORY_SERVICE, NOTIFY_SERVICE,
    ORDER_SERVICE,
};

/// Settings a test may change; everything else is isolated and defaulted.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Another broker than the shared one (e.g. a `PrivateBroker`).
    pub kafka_brokers: Option<String>,
    /// Another Redis than the shared one (e.g. a `PrivateRedis`), or with `redis_cluster` the
    /// seed nodes of a `PrivateRedisCluster`.
    pub redis_url: Option<String>,
    pub redis_cluster: bool,
    pub kafka_ack_timeout_ms: Option<u64>,
    pub create_timeout_ms: Option<u64>,
    /// order-api's `payment_deadline_secs` (short, to see orders expire).
    pub payment_deadline_secs: Option<u64>,
    /// More order-api replicas besides the first (same database, Redis prefix and topics), as
    /// a deployment with several would run; reachable through `Stack::replicas`.
    pub extra_order_apis: usize,
    /// order-api reaches inventory-svc through a [`Link`] the test can cut.
    pub inventory_link: bool,
    /// order-api reaches Redis through a [`Link`] the test can cut or stall
    /// (`Stack::order_redis_link`); not with a Redis Cluster.
    pub order_redis_link: bool,
    /// A change to inventory-svc's configuration, e.g. its TLS files.
    pub inventory_config: Configure<inventory_svc::Config>,
    /// inventory-svc speaks TLS: order-api and the test reach it over `https://`, the test's own
    /// client with this configuration (order-api's TLS files go in `order_config`).
    pub inventory_client_tls: Option<ClientTlsConfig>,
    /// A change to order-api's configuration, e.g. a lower `max_concurrent_requests`.
    pub order_config: Configure<order_api::Config>,
    /// A change to notify-svc's configuration, e.g. a webhook.
    pub notify_config: Configure<notify_svc::Config>,
    /// No consumer-worker in-process: the test runs its own (`WorkerProcess`, from
    /// `Stack::worker_config`), e.g. to kill it.
    pub external_worker: bool,
    /// More in-process consumer-workers in the same group (`Stack::workers`).
    pub extra_workers: usize,
    /// More notify-svc processes or tasks in the same group (for rebalances).
    pub extra_notifies: usize,
    /// A change to consumer-worker's configuration, e.g. batches of one message.
    pub worker_config: Configure<consumer_worker::Config>,
    /// Each service connects to PostgreSQL as a role of its own, which owns its schema
    /// (`deps::fresh_database_with_roles`), as in production; else all as the tests' role.
    pub role_per_service: bool,
    /// consumer-worker reaches PostgreSQL through a [`Link`] the test can cut
    /// (`Stack::worker_database_link`).
    pub worker_database_link: bool,
    /// Serve each in-process service's Prometheus metrics on a known port
    /// (`Stack::metrics`); otherwise on any free one nobody looks at. Not with extra replicas
    /// or workers (they would share the port).
    pub metrics: bool,
    /// Run every service as its own process (the built binaries) with this environment added,
    /// instead of in-process: to see what only a whole process does, such as exporting its
    /// traces.
    pub processes: Option<Vec<(String, String)>>,
}

impl Options {
    /// order-api, inventory-svc and notify-svc authenticate their callers as `auth` says;
    /// order-api and consumer-worker present the tokens in the files `order_api_token` and
    /// `worker_token` to inventory-svc.
    pub fn authenticated(auth: AuthArgs, order_api_token: PathBuf, worker_token: PathBuf) -> Self {
        let (for_orders, for_inventory, for_notify) = (auth.clone(), auth.clone(), auth);
        Self {
            order_config: Configure::new(move |config: &mut order_api::Config| {
                config.process.serving.auth = for_orders.clone();
                config.inventory.inventory_token_file = Some(order_api_token.clone());
            }),
            inventory_config: Configure::new(move |config: &mut inventory_svc::Config| {
                config.process.serving.auth = for_inventory.clone();
            }),
            notify_config: Configure::new(move |config: &mut notify_svc::Config| {
                config.process.serving.auth = for_notify.clone();
            }),
            worker_config: Configure::new(move |config: &mut consumer_worker::Config| {
                config.inventory.inventory_token_file = Some(worker_token.clone());
            }),
            ..Self::default()
        }
    }
}

/// The services' authentication when nothing changes it: none (a development deployment).
pub fn no_authentication() -> AuthArgs {
    crate::service::defaults::<order_api::Config>()
        .process
        .serving
        .auth
}

/// Where the in-process services serve `/metrics` (`Options::metrics`). In-process services
/// share one registry: each endpoint shows the whole test process.
#[derive(Debug, Clone, Copy)]
pub struct MetricsAddresses {
    pub order_api: SocketAddr,
    pub inventory: SocketAddr,
    pub notify: SocketAddr,
    pub worker: SocketAddr,
}

/// `host:port` of a PostgreSQL URL such as `postgres://u:p@127.0.0.1:5432/db`.
fn postgres_address(url: &str) -> SocketAddr {
    let authority = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split('/').next())
        .unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    host_port
        .parse()
        .unwrap_or_else(|error| panic!("PostgreSQL address {host_port:?} is not ip:port: {error}"))
}

pub struct Stack {
    pub order: OrderServiceClient<Channel>,
    /// Clients of the extra order-api replicas (`Options::extra_order_apis`).
    pub replicas: Vec<OrderServiceClient<Channel>>,
    /// Where every order-api of the stack serves, the first one's first.
    pub order_api_addresses: Vec<SocketAddr>,
    /// The link between order-api and inventory-svc (`Options::inventory_link`).
    pub inventory_link: Option<Link>,
    /// The link between order-api and Redis (`Options::order_redis_link`).
    pub order_redis_link: Option<Link>,
    /// This stack's order-api configuration (for [`Stack::start_order_api`]).
    pub order_config: order_api::Config,
    /// The link between consumer-worker and PostgreSQL (`Options::worker_database_link`).
    pub worker_database_link: Option<Link>,
    /// This stack's consumer-worker configuration (for `WorkerProcess`).
    pub worker_config: consumer_worker::Config,
    /// Health and consumer status addresses of the in-process consumer-workers.
    pub workers: Vec<SocketAddr>,
    pub inventory: InventoryServiceClient<Channel>,
    pub notify: NotificationServiceClient<Channel>,
    pub addresses: Addresses,
    pub metrics: Option<MetricsAddresses>,
    /// The test's own database.
    pub db: PgPool,
    databases: deps::ServiceDatabases,
    pub redis: redis::aio::ConnectionManager,
    redis_key_prefix: String,
    kafka_brokers: String,
    topic_prefix: String,
    launcher: Launcher,
}

#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub order_api: SocketAddr,
    pub inventory: SocketAddr,
    pub notify: SocketAddr,
}

/// What every service of one stack shares, and what isolates the stack from other tests.
struct Isolation {
    kafka_brokers: String,
    topic_prefix: String,
    kafka_ack_timeout_ms: Option<u64>,
    redis_url: String,
    redis_key_prefix: String,
    redis_cluster: bool,
    worker_group: String,
    metrics: Option<MetricsAddresses>,
}

impl Isolation {
    /// `S`'s defaults with this stack's PostgreSQL (`database_url`), broker, topics and metrics
    /// address (`metrics`'s pick, or any free port), logging warnings only.
    fn config<S: Service>(
        &self,
        database_url: &str,
        metrics: fn(&MetricsAddresses) -> SocketAddr,
    ) -> S {
        let mut config = crate::service::defaults::<S>();
        let process = config.process();
        process.postgres.database_url = database_url.to_owned();
        process.postgres.database_max_connections = 4;
        process.telemetry.log = "warn".into();
        let kafka = config.kafka();
        kafka.kafka_brokers = self.kafka_brokers.clone();
        kafka.kafka_topic_prefix = self.topic_prefix.clone();
        kafka.kafka_topic_partitions = 2;
        if let Some(ms) = self.kafka_ack_timeout_ms {
            kafka.kafka_ack_timeout_ms = ms;
        }
        *config.metrics_listen() = self
            .metrics
            .as_ref()
            .map_or("127.0.0.1:0".to_owned(), |all| metrics(all).to_string());
        config
    }

    /// This stack's Redis, at `url`.
    fn redis(&self, redis: &mut RedisArgs, url: &str) {
        redis.redis_url = url.to_owned();
        redis.redis_key_prefix = self.redis_key_prefix.clone();
        redis.redis_cluster = self.redis_cluster;
    }
}

impl Stack {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Self {
        init_test_logging();
        let id = crate::unique_id();
        let kafka_brokers = options
            .kafka_brokers
            .clone()
            .unwrap_or_else(deps::kafka_brokers);
        deps::require_tcp(&kafka_brokers, "The Kafka broker").await;
        let redis_url = options.redis_url.clone().unwrap_or_else(deps::redis_url);
        // The test's own connection goes to one node; the services get the whole cluster.
        let first_node = redis_url.split(',').next().unwrap_or_default();
        let redis = deps::redis(first_node).await;
        let (databases, db) = if options.role_per_service {
            deps::fresh_database_with_roles(&id).await
        } else {
            let (url, db) = deps::fresh_database(&id).await;
            (deps::ServiceDatabases::shared(&url), db)
        };
        let isolation = Isolation {
            kafka_brokers: kafka_brokers.clone(),
            topic_prefix: format!("t{id}."),
            kafka_ack_timeout_ms: options.kafka_ack_timeout_ms,
            redis_url: redis_url.clone(),
            redis_key_prefix: format!("t{id}"),
            redis_cluster: options.redis_cluster,
            worker_group: format!("t{id}-worker"),
            metrics: options.metrics.then(|| {
                let port = || SocketAddr::from(([127, 0, 0, 1], crate::private::free_port()));
                MetricsAddresses {
                    order_api: port(),
                    inventory: port(),
                    notify: port(),
                    worker: port(),
                }
            }),
        };
        let mut launcher = Launcher::new(match options.processes.clone() {
            None => Mode::InProcess,
            Some(env) => Mode::Processes(env),
        });

        let mut inventory: inventory_svc::Config =
            isolation.config(&databases.inventory, |all| all.inventory);
        isolation.redis(&mut inventory.redis, &isolation.redis_url);
        inventory.order_log.orders_consumer_group = isolation.worker_group.clone();
        options.inventory_config.apply(&mut inventory);
        let inventory_address = launcher.start(inventory).await;

        let order_redis_link = if options.order_redis_link {
            let address = redis_url
                .trim_start_matches("redis://")
                .trim_end_matches('/')
                .parse()
                .unwrap_or_else(|error| panic!("Redis URL {redis_url:?}: {error}"));
            Some(Link::start(address).await)
        } else {
            None
        };
        let inventory_link = if options.inventory_link {
            Some(Link::start(inventory_address).await)
        } else {
            None
        };
        let inventory_scheme = if options.inventory_client_tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut order: order_api::Config = isolation.config(&databases.orders, |all| all.order_api);
        let order_redis_url = order_redis_link.as_ref().map_or(redis_url.clone(), |link| {
            format!("redis://{}", link.address)
        });
        isolation.redis(&mut order.redis, &order_redis_url);
        order.order_log.orders_consumer_group = isolation.worker_group.clone();
        let inventory_for_orders = inventory_link
            .as_ref()
            .map_or(inventory_address, |link| link.address);
        order.inventory.inventory_url = format!("{inventory_scheme}://{inventory_for_orders}");
        if let Some(ms) = options.create_timeout_ms {
            order.create_timeout_ms = ms;
        }
        if let Some(secs) = options.payment_deadline_secs {
            order.payment_deadline_secs = secs;
            order.expiry_interval_ms = 200;
        }
        options.order_config.apply(&mut order);
        let mut order_api_addresses = Vec::new();
        for _ in 0..=options.extra_order_apis {
            order_api_addresses.push(launcher.start(order.clone()).await);
        }
        let order_address = order_api_addresses[0];

        let mut notify: notify_svc::Config = isolation.config(&databases.notify, |all| all.notify);
        notify.group_id = format!("t{id}-notify");
        options.notify_config.apply(&mut notify);
        let mut notify_addresses = Vec::new();
        for _ in 0..=options.extra_notifies {
            notify_addresses.push(launcher.start(notify.clone()).await);
        }
        let notify_address = notify_addresses[0];

        let worker_database_link = if options.worker_database_link {
            Some(Link::start(postgres_address(&databases.orders)).await)
        } else {
            None
        };
        let worker_database_url =
            worker_database_link
                .as_ref()
                .map_or(databases.orders.clone(), |link| {
                    databases.orders.replacen(
                        &postgres_address(&databases.orders).to_string(),
                        &link.address.to_string(),
                        1,
                    )
                });
        let mut worker: consumer_worker::Config =
            isolation.config(&worker_database_url, |all| all.worker);
        worker.group_id = isolation.worker_group.clone();
        worker.inventory.inventory_url = format!("{inventory_scheme}://{inventory_address}");
        worker.consumer.max_backoff_ms = 1000;
        worker.consumer.lag_report_interval_ms = 500;
        worker.consumer.session_timeout_ms = 6000;
        options.worker_config.apply(&mut worker);
        let in_process_workers = if options.external_worker {
            0
        } else {
            1 + options.extra_workers
        };
        let mut worker_addresses = Vec::new();
        for _ in 0..in_process_workers {
            worker_addresses.push(launcher.start(worker.clone()).await);
        }

        let servers = std::iter::once((inventory_address, INVENTORY_SERVICE))
            .chain(
                order_api_addresses
                    .iter()
                    .map(|address| (*address, ORDER_SERVICE)),
            )
            .chain(
                notify_addresses
                    .iter()
                    .map(|address| (*address, NOTIFY_SERVICE)),
            )
            .chain(
                worker_addresses
                    .iter()
                    .map(|address| (*address, CONSUMER_STATUS)),
            );
        for (address, service) in servers {
            let tls = options
                .inventory_client_tls
                .as_ref()
                .filter(|_| address == inventory_address);
            launcher
                .wait_serving(channel_with(address, tls), address, service)
                .await;
        }
        // Every other process of this stack (a worker or order-api a test starts) chooses its
        // own ports.
        order.metrics_listen = "127.0.0.1:0".into();
        worker.metrics_listen = "127.0.0.1:0".into();
        Self {
            order: OrderServiceClient::new(channel(order_address)),
            inventory_link,
            order_redis_link,
            order_config: order,
            worker_database_link,
            worker_config: worker,
            workers: worker_addresses,
            replicas: order_api_addresses[1..]
                .iter()
                .map(|address| OrderServiceClient::new(channel(*address)))
                .collect(),
            order_api_addresses,
            inventory: InventoryServiceClient::new(channel_with(
                inventory_address,
                options.inventory_client_tls.as_ref(),
            )),
            notify: NotificationServiceClient::new(channel(notify_address)),
            addresses: Addresses {
                order_api: order_address,
                inventory: inventory_address,
                notify: notify_address,
            },
            metrics: isolation.metrics,
            db,
            databases,
            redis,
            redis_key_prefix: isolation.redis_key_prefix,
            kafka_brokers,
            topic_prefix: isolation.topic_prefix,
            launcher,
        }
    }

    /// SIGTERM to the process of `binary` (`Options::processes`), as Kubernetes stops a pod,
    /// without waiting for it: the test watches it drain. `Stack::stop` waits for its exit.
    pub async fn signal_terminate(&mut self, binary: &str) {
        self.process(binary, 0).send_terminate().await;
    }

    /// How many processes of `binary` the stack runs (`Options::processes`).
    pub fn process_count(&mut self, binary: &str) -> usize {
        self.launcher.processes(binary).count()
    }

    /// The `index`th process of `binary` (`Options::processes`).
    pub fn process(&mut self, binary: &str, index: usize) -> &mut ServiceProcess {
        self.launcher
            .processes(binary)
            .nth(index)
            .unwrap_or_else(|| panic!("no {binary} process #{index} in this stack"))
    }

    /// Another order-api of this stack (same database, Redis prefix, topics) as its own process,
    /// its configuration changed by `change`, e.g. a fault to inject (`test_fault`); returns once
    /// it serves.
    pub async fn start_order_api(
        &self,
        change: impl FnOnce(&mut order_api::Config),
    ) -> ServiceProcess {
        let mut config = self.order_config.clone();
        config.listen = SocketAddr::from(([127, 0, 0, 1], crate::private::free_port())).to_string();
        change(&mut config);
        ServiceProcess::start(config, &[]).await
    }

    /// The process of `binary` (`Options::processes`), taken out of the stack: the test stops it
    /// itself.
    pub fn take_process(&mut self, binary: &str) -> ServiceProcess {
        self.launcher.take_process(binary)
    }

    /// Shuts every service down as SIGTERM would and waits until each returned cleanly.
    pub async fn stop(self) {
        self.launcher.stop().await;
    }

    /// This test's full name of `topic` (one of `orderflow_proto::topics`).
    pub fn topic(&self, topic: &str) -> String {
        format!("{}{topic}", self.topic_prefix)
    }

    pub fn kafka_brokers(&self) -> &str {
        &self.kafka_brokers
    }

    /// The URL of this test's database, for tools run against the stack (e.g. loadgen).
    pub fn database_url(&self) -> &str {
        &self.databases.admin
    }

    /// The URL each service connects to PostgreSQL with.
    pub fn databases(&self) -> &deps::ServiceDatabases {
        &self.databases
    }

    /// The full Redis key of `parts` under this test's prefix.
    pub fn redis_key(&self, parts: &[&str]) -> String {
        orderflow_runtime::redis::redis_key(&self.redis_key_prefix, parts)
    }

    pub async fn create_order(&self, request: CreateOrderRequest) -> Result<Order, Status> {
        self.order
            .clone()
            .create_order(request)
            .await
            .map(|answer| {
                answer
                    .into_inner()
                    .order
                    .expect("CreateOrder answered no order")
            })
    }

    /// Retries `request` (same idempotency key, so at most one order results) until it is
    /// placed, as a client does while a dependency recovers.
    pub async fn create_order_eventually(&self, what: &str, request: CreateOrderRequest) -> Order {
        crate::eventually(what, Duration::from_secs(60), || async {
            self.create_order(request.clone()).await.ok()
        })
        .await
    }

    /// Every Redis key of this test matching `{prefix}:<pattern>`.
    pub async fn redis_keys(&self, pattern: &str) -> Vec<String> {
        let mut redis = self.redis.clone();
        redis
            .keys(format!("{{{}}}:{pattern}", self.redis_key_prefix))
            .await
            .expect("listing Redis keys")
    }

    pub async fn set_stock(&self, sku: &str, quantity: i64, price_cents: i64) {
        crate::inventory::set_stock(self.inventory.clone(), sku, quantity, price_cents).await;
    }

    pub async fn stock(&self, sku: &str) -> Stock {
        self.inventory
            .clone()
            .get_stock(GetStockRequest { sku: sku.into() })
            .await
            .expect("GetStock")
            .into_inner()
            .stock
            .expect("GetStock answered no stock")
    }

    /// `available`, `reserved`, `sold` of `sku` in PostgreSQL (the truth; `stock` reads Redis).
    pub async fn durable_stock(&self, sku: &str) -> (i64, i64, i64) {
        sqlx::query_as("SELECT available, reserved, sold FROM skus WHERE sku = $1")
            .bind(sku)
            .fetch_one(&self.db)
            .await
            .unwrap_or_else(|error| panic!("the row of SKU {sku}: {error}"))
    }

    pub async fn get_order(&self, order_id: &str) -> Result<Order, Status> {
        crate::orders::get(&mut self.order.clone(), order_id).await
    }

    /// PayOrder for the whole total of `order`.
    pub async fn pay_order(&self, order: &Order, payment_id: &str) -> Result<Order, Status> {
        crate::orders::pay(&mut self.order.clone(), order, payment_id).await
    }

    pub async fn cancel_order(&self, order_id: &str, reason: &str) -> Result<Order, Status> {
        crate::orders::cancel(&mut self.order.clone(), order_id, reason).await
    }

    /// The persisted orders of `user_id` under `idempotency_key`: (order id, status, voided).
    pub async fn orders_of_key(
        &self,
        user_id: &str,
        idempotency_key: &str,
    ) -> Vec<(String, String, bool)> {
        sqlx::query_as(
            "SELECT order_id::text, status, voided FROM orders \
             WHERE user_id = $1 AND idempotency_key = $2 ORDER BY created_at",
        )
        .bind(user_id)
        .bind(idempotency_key)
        .fetch_all(&self.db)
        .await
        .expect("the orders of a key")
    }

    /// Number of orders persisted in this test's database.
    pub async fn persisted_orders(&self) -> i64 {
        self.rows("orders").await
    }

    /// Number of rows in `table` of this test's database.
    pub async fn rows(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&self.db)
            .await
            .unwrap_or_else(|error| panic!("counting the rows of {table}: {error}"))
    }

    /// Waits until the outbox is empty: every decided event was acknowledged by the broker.
    pub async fn wait_for_outbox_drained(&self) {
        crate::eventually("the outbox to drain", Duration::from_secs(60), || async {
            (self.rows("order_outbox").await == 0).then_some(())
        })
        .await;
    }

    /// Waits until exactly `count` orders are persisted.
    pub async fn wait_for_persisted_orders(&self, count: i64) {
        crate::eventually(
            &format!("{count} orders in PostgreSQL"),
            Duration::from_secs(60),
            || async { (self.persisted_orders().await == count).then_some(()) },
        )
        .await;
    }
}

impl Stack {
    /// How many messages were ever published to this test's `topic` (one of
    /// `orderflow_proto::topics`), summed over its partitions' high watermarks.
    pub async fn published(&self, topic: &str) -> i64 {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let topic = format!("{}{topic}", self.topic_prefix);
        let brokers = self.kafka_brokers.clone();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .create()
                .expect("a Kafka client");
            let timeout = Duration::from_secs(10);
            let metadata = consumer
                .fetch_metadata(Some(&topic), timeout)
                .expect("topic metadata");
            metadata.topics()[0]
                .partitions()
                .iter()
                .map(|partition| {
                    consumer
                        .fetch_watermarks(&topic, partition.id(), timeout)
                        .expect("watermarks")
                        .1
                })
                .sum()
        })
        .await
        .expect("the watermark task")
    }
}

impl Stack {
    /// Publishes `payload` to this test's `topic` as a producer outside orderflow would, and
    /// waits for the broker's ack.
    pub async fn publish_raw(&self, topic: &str, key: &str, payload: &[u8]) {
        use rdkafka::producer::{FutureProducer, FutureRecord};
        let producer: FutureProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.kafka_brokers)
            .create()
            .expect("a Kafka producer");
        let topic = format!("{}{topic}", self.topic_prefix);
        producer
            .send(
                FutureRecord::to(&topic).key(key).payload(payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(error, _)| error)
            .expect("publishing a raw event");
    }
}

/// With `ORDERFLOW_TEST_LOG` set (e.g. `warn` or `order_api=debug`), the services log to the
/// test's output; quiet otherwise.
fn init_test_logging() {
    if let Ok(filter) = std::env::var("ORDERFLOW_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

pub(crate) async fn serving(health: &mut HealthClient<Channel>, service: &str) -> bool {
    let answer = health
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await;
    answer.is_ok_and(|answer| answer.get_ref().status() == ServingStatus::Serving)
}

/// Waits (up to 60 s) until the server at `address` reports `service` SERVING; a channel to it.
pub async fn wait_serving(address: &str, service: &str) -> Channel {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .expect("a valid endpoint")
        .connect_lazy();
    let health = HealthClient::new(channel.clone());
    crate::eventually(
        &format!("{service} at {address} to report SERVING"),
        Duration::from_secs(60),
        || {
            let mut health = health.clone();
            async move { serving(&mut health, service).await.then_some(()) }
        },
    )
    .await;
    channel
}

pub fn channel(address: SocketAddr) -> Channel {
    channel_with(address, None)
}

/// A channel to `address`, over TLS with `tls`.
pub fn channel_with(address: SocketAddr, tls: Option<&ClientTlsConfig>) -> Channel {
    match tls {
        None => tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .expect("a valid endpoint")
            .connect_lazy(),
        Some(tls) => tonic::transport::Endpoint::from_shared(format!("https://{address}"))
            .expect("a valid endpoint")
            .tls_config(tls.clone())
            .expect("a TLS configuration")
            .connect_lazy(),
    }
}

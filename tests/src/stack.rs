//! The four orderflow services running in-process on loopback port 0 (or, on request, each as
//! its own process), wired to the shared dependencies (or a private broker), isolated from every
//! other test.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use orderflow_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use orderflow_proto::inventory::v1::{GetStockRequest, Stock};
use orderflow_proto::notify::v1::notification_service_client::NotificationServiceClient;
use orderflow_proto::order::v1::order_service_client::OrderServiceClient;
use orderflow_proto::order::v1::{CreateOrderRequest, Order, PayOrderRequest};
use orderflow_runtime::RuntimeError;
use redis::AsyncCommands;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::transport::ClientTlsConfig;
use tonic::Status;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::deps;
use crate::link::Link;
use crate::process::ServiceProcess;

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
    /// order-api's `--payment-deadline-secs` (short, to see orders expire).
    pub payment_deadline_secs: Option<u64>,
    /// More order-api replicas besides the first (same database, Redis prefix and topics), as
    /// a deployment with several would run; reachable through `Stack::replicas`.
    pub extra_order_apis: usize,
    /// order-api reaches inventory-svc through a [`Link`] the test can cut.
    pub inventory_link: bool,
    /// order-api reaches Redis through a [`Link`] the test can cut or stall
    /// (`Stack::order_redis_link`); not with a Redis Cluster.
    pub order_redis_link: bool,
    /// More inventory-svc flags, e.g. `--tls-cert-file=…`.
    pub inventory_args: Vec<String>,
    /// inventory-svc speaks TLS: order-api and the test reach it over `https://`, the test's own
    /// client with this configuration (order-api's TLS files go in `order_args`).
    pub inventory_client_tls: Option<ClientTlsConfig>,
    /// More order-api flags, e.g. `--max-concurrent-requests=1`.
    pub order_args: Vec<String>,
    /// More notify-svc flags, e.g. `--webhook-url=…`.
    pub notify_args: Vec<String>,
    /// No consumer-worker in-process: the test runs its own (`WorkerProcess`, with
    /// `Stack::worker_args`), e.g. to kill it.
    pub external_worker: bool,
    /// More in-process consumer-workers in the same group (`Stack::workers`).
    pub extra_workers: usize,
    /// More notify-svc processes or tasks in the same group (for rebalances).
    pub extra_notifies: usize,
    /// More consumer-worker flags, e.g. `--batch-max-messages=1`.
    pub worker_args: Vec<String>,
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

/// Where the in-process services serve `/metrics` (`Options::metrics`). In-process services
/// share one registry: each endpoint shows the whole test process.
#[derive(Debug, Clone, Copy)]
pub struct MetricsAddresses {
    pub order_api: SocketAddr,
    pub inventory: SocketAddr,
    pub notify: SocketAddr,
    pub worker: SocketAddr,
}

/// The gRPC service every consumer-worker serves (with health).
pub const CONSUMER_STATUS: &str = "orderflow.consumer.v1.ConsumerStatusService";
const ORDER_SERVICE: &str = "orderflow.order.v1.OrderService";
const INVENTORY_SERVICE: &str = "orderflow.inventory.v1.InventoryService";
const NOTIFY_SERVICE: &str = "orderflow.notify.v1.NotificationService";

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
    /// The flags of this stack's order-api, except `--listen` (for [`Stack::start_order_api`]).
    pub order_args: Vec<String>,
    /// The link between consumer-worker and PostgreSQL (`Options::worker_database_link`).
    pub worker_database_link: Option<Link>,
    /// The flags of this stack's consumer-worker, except `--listen`.
    pub worker_args: Vec<String>,
    /// Health and consumer status addresses of the in-process consumer-workers.
    pub workers: Vec<SocketAddr>,
    pub inventory: InventoryServiceClient<Channel>,
    pub notify: NotificationServiceClient<Channel>,
    pub addresses: Addresses,
    pub metrics: Option<MetricsAddresses>,
    inventory_tls: Option<ClientTlsConfig>,
    /// The test's own database.
    pub db: PgPool,
    databases: deps::ServiceDatabases,
    pub redis: redis::aio::ConnectionManager,
    redis_key_prefix: String,
    kafka_brokers: String,
    topic_prefix: String,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<Result<(), RuntimeError>>>,
    processes: Vec<ServiceProcess>,
}

/// Starts each service in-process (a task on the test's runtime) or, with
/// `Options::processes`, as its own process.
struct Launcher {
    process_env: Option<Vec<(String, String)>>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<Result<(), RuntimeError>>>,
    processes: Vec<ServiceProcess>,
}

impl Launcher {
    /// Serves `service` on `listener` with `args`, which start with the binary's name (as clap
    /// parses them); `run` is the service's in-process entry point.
    async fn launch<Run, Served>(
        &mut self,
        args: Vec<String>,
        listener: TcpListener,
        service: &str,
        run: Run,
    ) where
        Run: FnOnce(Vec<String>, TcpListener, CancellationToken) -> Served,
        Served: Future<Output = Result<(), RuntimeError>> + Send + 'static,
    {
        match &self.process_env {
            None => self
                .tasks
                .push(tokio::spawn(run(args, listener, self.shutdown.clone()))),
            Some(env) => {
                let address = listener.local_addr().expect("local address");
                drop(listener);
                let process = ServiceProcess::start(&args[0], &args[1..], env, address, service);
                self.processes.push(process.await);
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub order_api: SocketAddr,
    pub inventory: SocketAddr,
    pub notify: SocketAddr,
}

async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding a loopback port")
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
        let redis_key_prefix = format!("t{id}");
        let topic_prefix = format!("t{id}.");

        let shared = [
            "--database-max-connections=4".to_owned(),
            "--log=warn".into(),
        ];
        let redis_args = [
            format!("--redis-url={redis_url}"),
            format!("--redis-key-prefix={redis_key_prefix}"),
            format!("--redis-cluster={}", options.redis_cluster),
        ];
        let mut kafka_args = vec![
            format!("--kafka-brokers={kafka_brokers}"),
            format!("--kafka-topic-prefix={topic_prefix}"),
            "--kafka-topic-partitions=2".into(),
        ];
        if let Some(ms) = options.kafka_ack_timeout_ms {
            kafka_args.push(format!("--kafka-ack-timeout-ms={ms}"));
        }

        let metrics = options.metrics.then(|| {
            let port = || SocketAddr::from(([127, 0, 0, 1], crate::private::free_port()));
            MetricsAddresses {
                order_api: port(),
                inventory: port(),
                notify: port(),
                worker: port(),
            }
        });
        let metrics_listen = |pick: fn(&MetricsAddresses) -> SocketAddr| {
            let address = metrics
                .as_ref()
                .map_or("127.0.0.1:0".to_owned(), |all| pick(all).to_string());
            format!("--metrics-listen={address}")
        };

        let shutdown = CancellationToken::new();
        let mut launcher = Launcher {
            process_env: options.processes.clone(),
            shutdown: shutdown.clone(),
            tasks: Vec::new(),
            processes: Vec::new(),
        };

        let inventory_listener = listener().await;
        let inventory_address = inventory_listener.local_addr().expect("local address");
        let worker_group = format!("t{id}-worker");
        let inventory_args = std::iter::once("inventory-svc".to_owned())
            .chain(shared.iter().cloned())
            .chain(redis_args.iter().cloned())
            .chain(kafka_args.iter().cloned())
            .chain([
                format!("--database-url={}", databases.inventory),
                metrics_listen(|all| all.inventory),
                format!("--orders-consumer-group={worker_group}"),
            ])
            .chain(options.inventory_args.iter().cloned())
            .collect();
        launcher
            .launch(
                inventory_args,
                inventory_listener,
                INVENTORY_SERVICE,
                |args, listener, stop| {
                    inventory_svc::run(inventory_svc::Config::parse_from(args), listener, stop)
                },
            )
            .await;

        let order_listener = listener().await;
        let order_address = order_listener.local_addr().expect("local address");
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
        let order_redis_args: Vec<String> = match &order_redis_link {
            Some(link) => redis_args
                .iter()
                .map(|arg| match arg.strip_prefix("--redis-url=") {
                    Some(_) => format!("--redis-url=redis://{}", link.address),
                    None => arg.clone(),
                })
                .collect(),
            None => redis_args.to_vec(),
        };
        let mut order_args: Vec<String> = std::iter::once("order-api".to_owned())
            .chain(shared.iter().cloned())
            .chain(order_redis_args)
            .chain(kafka_args.iter().cloned())
            .chain([
                format!("--database-url={}", databases.orders),
                metrics_listen(|all| all.order_api),
                format!("--orders-consumer-group={worker_group}"),
            ])
            .chain(options.order_args.iter().cloned())
            .collect();
        let inventory_link = if options.inventory_link {
            Some(Link::start(inventory_address).await)
        } else {
            None
        };
        let inventory_for_orders = inventory_link
            .as_ref()
            .map_or(inventory_address, |link| link.address);
        let inventory_scheme = if options.inventory_client_tls.is_some() {
            "https"
        } else {
            "http"
        };
        order_args.push(format!(
            "--inventory-url={inventory_scheme}://{inventory_for_orders}"
        ));
        if let Some(ms) = options.create_timeout_ms {
            order_args.push(format!("--create-timeout-ms={ms}"));
        }
        if let Some(secs) = options.payment_deadline_secs {
            order_args.push(format!("--payment-deadline-secs={secs}"));
            order_args.push("--expiry-interval-ms=200".into());
        }
        let run_order_api = |args: Vec<String>, listener, stop| {
            order_api::run(order_api::Config::parse_from(args), listener, stop)
        };
        launcher
            .launch(
                order_args.clone(),
                order_listener,
                ORDER_SERVICE,
                run_order_api,
            )
            .await;
        let mut replica_addresses = Vec::new();
        for _ in 0..options.extra_order_apis {
            let replica_listener = listener().await;
            replica_addresses.push(replica_listener.local_addr().expect("local address"));
            launcher
                .launch(
                    order_args.clone(),
                    replica_listener,
                    ORDER_SERVICE,
                    run_order_api,
                )
                .await;
        }

        let notify_args: Vec<String> = std::iter::once("notify-svc".to_owned())
            .chain(shared.iter().cloned())
            .chain(kafka_args.iter().cloned())
            .chain([
                format!("--database-url={}", databases.notify),
                format!("--group-id=t{id}-notify"),
                metrics_listen(|all| all.notify),
            ])
            .chain(options.notify_args.iter().cloned())
            .collect();
        let mut notify_addresses = Vec::new();
        for _ in 0..=options.extra_notifies {
            let notify_listener = listener().await;
            notify_addresses.push(notify_listener.local_addr().expect("local address"));
            launcher
                .launch(
                    notify_args.clone(),
                    notify_listener,
                    NOTIFY_SERVICE,
                    |args, listener, stop| {
                        notify_svc::run(notify_svc::Config::parse_from(args), listener, stop)
                    },
                )
                .await;
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
        let worker_args: Vec<String> = [
            format!("--database-url={worker_database_url}"),
            "--database-max-connections=4".into(),
            "--log=warn".into(),
            format!("--group-id={worker_group}"),
            format!("--inventory-url={inventory_scheme}://{inventory_address}"),
            "--max-backoff-ms=1000".into(),
            "--lag-report-interval-ms=500".into(),
            "--session-timeout-ms=6000".into(),
            metrics_listen(|all| all.worker),
        ]
        .into_iter()
        .chain(kafka_args.iter().cloned())
        .chain(options.worker_args.iter().cloned())
        .collect();
        let in_process_workers = if options.external_worker {
            0
        } else {
            1 + options.extra_workers
        };
        let mut worker_addresses = Vec::new();
        for _ in 0..in_process_workers {
            let worker_listener = listener().await;
            worker_addresses.push(worker_listener.local_addr().expect("local address"));
            let args = std::iter::once("consumer-worker".to_owned())
                .chain(worker_args.iter().cloned())
                .collect();
            launcher
                .launch(
                    args,
                    worker_listener,
                    CONSUMER_STATUS,
                    |args, listener, stop| {
                        consumer_worker::run(
                            consumer_worker::Config::parse_from(args),
                            listener,
                            stop,
                        )
                    },
                )
                .await;
        }

        let mut stack = Self {
            order: OrderServiceClient::new(channel(order_address)),
            inventory_link,
            order_redis_link,
            order_args: order_args
                .iter()
                .skip(1)
                .filter(|arg| !arg.starts_with("--metrics-listen="))
                .cloned()
                .collect(),
            worker_database_link,
            worker_args,
            workers: worker_addresses.clone(),
            replicas: replica_addresses
                .iter()
                .map(|address| OrderServiceClient::new(channel(*address)))
                .collect(),
            order_api_addresses: std::iter::once(order_address)
                .chain(replica_addresses.iter().copied())
                .collect(),
            inventory: InventoryServiceClient::new(channel_with(
                inventory_address,
                options.inventory_client_tls.as_ref(),
            )),
            inventory_tls: options.inventory_client_tls.clone(),
            notify: NotificationServiceClient::new(channel(notify_address)),
            addresses: Addresses {
                order_api: order_address,
                inventory: inventory_address,
                notify: notify_address,
            },
            metrics,
            db,
            databases: databases.clone(),
            redis,
            redis_key_prefix,
            kafka_brokers,
            topic_prefix,
            shutdown,
            tasks: launcher.tasks,
            processes: launcher.processes,
        };
        let servers = [
            (inventory_address, INVENTORY_SERVICE),
            (order_address, ORDER_SERVICE),
        ]
        .into_iter()
        .chain(
            replica_addresses
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
            stack.wait_serving(address, service).await;
        }
        stack
    }

    /// Waits until `service` reports SERVING, failing at once if a service task has died.
    async fn wait_serving(&mut self, address: SocketAddr, service: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let tls = self
            .inventory_tls
            .as_ref()
            .filter(|_| address == self.addresses.inventory);
        let mut health = HealthClient::new(channel_with(address, tls));
        loop {
            self.fail_if_a_service_died().await;
            if serving(&mut health, service).await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{service} at {address} did not become SERVING within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn fail_if_a_service_died(&mut self) {
        if let Some(index) = self.tasks.iter().position(JoinHandle::is_finished) {
            let outcome = self.tasks.remove(index).await;
            panic!("a service stopped during start-up: {outcome:?}");
        }
        assert!(
            !self.processes.iter_mut().any(ServiceProcess::has_exited),
            "a service process exited during start-up; run with ORDERFLOW_TEST_LOG=warn to see why"
        );
    }

    /// SIGTERM to the process of `binary` (`Options::processes`), as Kubernetes stops a pod,
    /// without waiting for it: the test watches it drain. `Stack::stop` waits for its exit.
    pub async fn signal_terminate(&mut self, binary: &str) {
        self.processes
            .iter_mut()
            .find(|process| process.name() == binary)
            .unwrap_or_else(|| panic!("no {binary} process in this stack"))
            .send_terminate()
            .await;
    }

    /// How many processes of `binary` the stack runs (`Options::processes`).
    pub fn process_count(&self, binary: &str) -> usize {
        self.processes
            .iter()
            .filter(|process| process.name() == binary)
            .count()
    }

    /// The `index`th process of `binary` (`Options::processes`).
    pub fn process(&mut self, binary: &str, index: usize) -> &mut ServiceProcess {
        self.processes
            .iter_mut()
            .filter(|process| process.name() == binary)
            .nth(index)
            .unwrap_or_else(|| panic!("no {binary} process #{index} in this stack"))
    }

    /// Another order-api of this stack (same database, Redis prefix, topics) as its own process
    /// with `extra` flags added, e.g. a fault to inject (`--test-fault=…`); returns once it
    /// serves.
    pub async fn start_order_api(&self, extra: &[&str]) -> ServiceProcess {
        let free = || SocketAddr::from(([127, 0, 0, 1], crate::private::free_port()));
        let (address, metrics) = (free(), free());
        let args: Vec<String> = self
            .order_args
            .iter()
            .cloned()
            .chain([format!("--metrics-listen={metrics}")])
            .chain(extra.iter().map(|arg| (*arg).to_owned()))
            .collect();
        ServiceProcess::start("order-api", &args, &[], address, ORDER_SERVICE).await
    }

    /// The process of `binary` (`Options::processes`), taken out of the stack: the test stops it
    /// itself.
    pub fn take_process(&mut self, binary: &str) -> ServiceProcess {
        let index = self
            .processes
            .iter()
            .position(|process| process.name() == binary)
            .unwrap_or_else(|| panic!("no {binary} process in this stack"));
        self.processes.remove(index)
    }

    /// Shuts every service down as SIGTERM would and waits until each returned cleanly.
    pub async fn stop(mut self) {
        for process in std::mem::take(&mut self.processes) {
            assert!(
                process.terminate().await,
                "a service exited uncleanly on SIGTERM"
            );
        }
        self.shutdown.cancel();
        for task in std::mem::take(&mut self.tasks) {
            let outcome = tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("a service did not stop within 30 s of shutdown");
            outcome
                .expect("a service task panicked")
                .expect("a service stopped with an error");
        }
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
        orderflow_runtime::config::redis_key(&self.redis_key_prefix, parts)
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

    /// PayOrder for the whole total of `order`.
    pub async fn pay_order(&self, order: &Order, payment_id: &str) -> Result<Order, Status> {
        self.order
            .clone()
            .pay_order(PayOrderRequest {
                order_id: order.order_id.clone(),
                payment_id: payment_id.into(),
                amount_cents: order.total_cents,
            })
            .await
            .map(|answer| {
                answer
                    .into_inner()
                    .order
                    .expect("PayOrder answered no order")
            })
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

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.cancel();
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

async fn serving(health: &mut HealthClient<Channel>, service: &str) -> bool {
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

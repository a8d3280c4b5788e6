//! Prometheus metrics of a process, served as text on `--metrics-listen` (`GET /metrics`).
//!
//! Every family is declared here, once, so names, labels and help texts stay consistent across
//! the four services (docs/operations.md lists them). A service only touches the families of
//! what it does; the others are served without samples.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::TelemetryError;

/// `service` and `method` of a gRPC call, `code` its status (`OK`, `InvalidArgument`, …).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub service: String,
    pub method: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub service: String,
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicOutcome {
    pub topic: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupTopic {
    pub group: String,
    pub topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Group {
    pub group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupPartition {
    pub group: String,
    pub topic: String,
    pub partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolState {
    pub pool: &'static str,
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolName {
    pub pool: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// 0.5 ms to ~8 s: from a cached read to a placement that waited out a slow broker.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

pub struct Metrics {
    pub rpc_requests: Family<RpcLabels, Counter>,
    pub rpc_duration: Histograms<MethodLabels>,
    pub rpc_shed: Counter,
    pub kafka_produced: Family<TopicOutcome, Counter>,
    pub kafka_produce_duration: Histograms<TopicOutcome>,
    pub kafka_consumed: Family<GroupTopic, Counter>,
    pub kafka_dead_lettered: Family<GroupTopic, Counter>,
    pub kafka_batch_duration: Histograms<Outcome>,
    pub kafka_consumer_lag: Family<GroupPartition, Gauge>,
    pub kafka_consumer_rejoins: Family<Group, Counter>,
    pub lock_acquisitions: Family<Outcome, Counter>,
    pub lock_wait: Histogram,
    pub reservations: Family<Outcome, Counter>,
    pub cache_lookups: Family<Outcome, Counter>,
    pub rate_limited: Counter,
    pub placements_resumed: Counter,
    pub sold_out_from_memo: Counter,
    pub placed_not_cached: Counter,
    pub orphans_released: Counter,
    pub orders_voided: Counter,
    pub order_key_conflicts: Counter,
    db_connections: Family<PoolState, Gauge>,
    db_max_connections: Family<PoolName, Gauge>,
    pools: Mutex<Vec<WatchedPoolEntry>>,
    next_pool_id: AtomicU64,
    registry: Registry,
}

struct WatchedPoolEntry {
    id: u64,
    name: &'static str,
    pool: PgPool,
}

/// Keeps a pool reported in the metrics; dropping it forgets the pool.
pub struct WatchedPool {
    id: u64,
    metrics: &'static Metrics,
}

impl Drop for WatchedPool {
    fn drop(&mut self) {
        self.metrics
            .pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|entry| entry.id != self.id);
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::register);
    &METRICS
}

impl Metrics {
    fn register() -> Self {
        let mut registry = Registry::with_prefix("orderflow");
        let metrics = Self {
            rpc_requests: Family::default(),
            rpc_duration: Family::new_with_constructor(latency_histogram),
            rpc_shed: Counter::default(),
            kafka_produced: Family::default(),
            kafka_produce_duration: Family::new_with_constructor(latency_histogram),
            kafka_consumed: Family::default(),
            kafka_dead_lettered: Family::default(),
            kafka_batch_duration: Family::new_with_constructor(latency_histogram),
            kafka_consumer_lag: Family::default(),
            kafka_consumer_rejoins: Family::default(),
            lock_acquisitions: Family::default(),
            lock_wait: latency_histogram(),
            reservations: Family::default(),
            cache_lookups: Family::default(),
            rate_limited: Counter::default(),
            placements_resumed: Counter::default(),
            sold_out_from_memo: Counter::default(),
            placed_not_cached: Counter::default(),
            orphans_released: Counter::default(),
            orders_voided: Counter::default(),
            order_key_conflicts: Counter::default(),
            db_connections: Family::default(),
            db_max_connections: Family::default(),
            pools: Mutex::new(Vec::new()),
            next_pool_id: AtomicU64::new(0),
            registry: Registry::default(),
        };
        let m = &metrics;
        registry.register(
            "grpc_server_handled",
            "gRPC calls answered, by service, method and status code",
            m.rpc_requests.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Time from a gRPC call's arrival to its last response byte",
            m.rpc_duration.clone(),
        );
        registry.register(
            "grpc_server_shed",
            "gRPC calls refused at once (RESOURCE_EXHAUSTED) because the server was at its concurrency limit",
            m.rpc_shed.clone(),
        );
        registry.register(
            "kafka_produced_messages",
            "Messages handed to the broker, by topic and outcome (acked, failed)",
            m.kafka_produced.clone(),
        );
        registry.register(
            "kafka_produce_seconds",
            "Time from a send to the broker's acknowledgement (or failure)",
            m.kafka_produce_duration.clone(),
        );
        registry.register(
            "kafka_consumed_messages",
            "Messages applied (committed to PostgreSQL), by consumer group and topic",
            m.kafka_consumed.clone(),
        );
        registry.register(
            "kafka_dead_lettered_messages",
            "Messages copied to <topic>.dlq because they can never be applied",
            m.kafka_dead_lettered.clone(),
        );
        registry.register(
            "kafka_consume_batch_seconds",
            "Time to apply one batch of messages in one transaction, by outcome",
            m.kafka_batch_duration.clone(),
        );
        registry.register(
            "kafka_consumer_lag_messages",
            "Messages on an assigned partition not yet committed by the group (-1: not known yet)",
            m.kafka_consumer_lag.clone(),
        );
        registry.register(
            "kafka_consumer_rejoins",
            "Times a member left and rejoined its group with a new member id because partitions it did not hold stood still while behind",
            m.kafka_consumer_rejoins.clone(),
        );
        registry.register(
            "lock_acquisitions",
            "Distributed lock acquisitions, by outcome (acquired, timeout)",
            m.lock_acquisitions.clone(),
        );
        registry.register(
            "lock_wait_seconds",
            "Time spent waiting for a distributed lock",
            m.lock_wait.clone(),
        );
        registry.register(
            "reservations",
            "Stock reservations asked of inventory-svc, by outcome",
            m.reservations.clone(),
        );
        registry.register(
            "order_cache_lookups",
            "Order reads by cache outcome (hit, miss); hit ratio = hit / (hit + miss)",
            m.cache_lookups.clone(),
        );
        registry.register(
            "create_order_rate_limited",
            "CreateOrder calls refused by the per-user rate limit",
            m.rate_limited.clone(),
        );
        registry.register(
            "placements_resumed",
            "CreateOrder retries that resumed the placement of their key's order after its first \
             attempt ended without an answer (the same order id, never a second order)",
            m.placements_resumed.clone(),
        );
        registry.register(
            "create_order_sold_out_from_memo",
            "CreateOrder refusals for insufficient stock answered from order-api's memo of the SKUs \
             inventory-svc reported short moments before, without asking it again",
            m.sold_out_from_memo.clone(),
        );
        registry.register(
            "placed_not_cached",
            "Orders the broker acknowledged whose cache entry and key mark could not be written \
             to Redis; the order stands",
            m.placed_not_cached.clone(),
        );
        registry.register(
            "orphaned_reservations_released",
            "Reservations no order confirmed whose stock inventory-svc returned once the order \
             log held no order for them",
            m.orphans_released.clone(),
        );
        registry.register(
            "orders_voided_on_arrival",
            "Orders recorded CANCELLED on arrival because their stock had been given back before \
             their event was applied (no client was told they exist); should stay 0",
            m.orders_voided.clone(),
        );
        registry.register(
            "order_key_conflicts",
            "order-created events dead-lettered because another live order holds their \
             idempotency key; should stay 0, alert on any",
            m.order_key_conflicts.clone(),
        );
        registry.register(
            "db_pool_connections",
            "PostgreSQL pool connections, by state (idle, in_use)",
            m.db_connections.clone(),
        );
        registry.register(
            "db_pool_max_connections",
            "PostgreSQL pool size limit",
            m.db_max_connections.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// Reports `pool`'s usage under `name` at every scrape, until the returned guard is dropped
    /// (when the service stops): the registry lives as long as the process, and a pool it kept
    /// would keep its connections open after the service that owned it is gone.
    #[must_use = "the pool is reported only while the guard lives"]
    pub fn watch_pool(&'static self, name: &'static str, pool: PgPool) -> WatchedPool {
        let id = self.next_pool_id.fetch_add(1, AtomicOrdering::Relaxed);
        self.pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(WatchedPoolEntry { id, name, pool });
        WatchedPool { id, metrics: self }
    }

    pub fn observe_lock_wait(&self, waited: Duration, outcome: &'static str) {
        self.lock_wait.observe(waited.as_secs_f64());
        self.lock_acquisitions
            .get_or_create(&Outcome { outcome })
            .inc();
    }

    pub fn count_cache(&self, hits: usize, misses: usize) {
        let count = |outcome, n: usize| {
            self.cache_lookups
                .get_or_create(&Outcome { outcome })
                .inc_by(n as u64)
        };
        count("hit", hits);
        count("miss", misses);
    }

    /// The Prometheus text exposition (format 0.0.4) of every family.
    pub fn render(&self) -> String {
        for WatchedPoolEntry { name, pool, .. } in self
            .pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let idle = i64::try_from(pool.num_idle()).unwrap_or(i64::MAX);
            let size = i64::from(pool.size());
            let state = |state| PoolState { pool: name, state };
            self.db_connections.get_or_create(&state("idle")).set(idle);
            self.db_connections
                .get_or_create(&state("in_use"))
                .set(size - idle);
            self.db_max_connections
                .get_or_create(&PoolName { pool: name })
                .set(i64::from(pool.options().get_max_connections()));
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

/// Serves `GET /metrics` on `address` until `shutdown`; answers the bound address (port 0 picks
/// a free one).
pub async fn serve(
    address: &str,
    shutdown: CancellationToken,
) -> Result<SocketAddr, TelemetryError> {
    let failed = |source| TelemetryError::Bind {
        address: address.to_owned(),
        source,
    };
    let listener = TcpListener::bind(address).await.map_err(failed)?;
    let bound = listener.local_addr().map_err(failed)?;
    tracing::info!(address = %bound, "metrics served at /metrics");
    tokio::spawn(accept(listener, shutdown));
    Ok(bound)
}

async fn accept(listener: TcpListener, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "metrics listener could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|request: Request<hyper::body::Incoming>| {
                std::future::ready(Ok::<_, Infallible>(respond(&request)))
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "metrics connection ended with an error");
            }
        });
    }
}

fn respond<B>(request: &Request<B>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics().render(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "only GET /metrics is served here\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let metrics = metrics();
        metrics
            .rpc_requests
            .get_or_create(&RpcLabels {
                service: "orderflow.order.v1.OrderService".into(),
                method: "CreateOrder".into(),
                code: "OK".into(),
            })
            .inc();
        metrics.observe_lock_wait(Duration::from_millis(3), "acquired");
        let text = metrics.render();
        assert!(text.contains(
            "orderflow_grpc_server_handled_total{service=\"orderflow.order.v1.OrderService\",method=\"CreateOrder\",code=\"OK\"} 1"
        ));
        assert!(text.contains("# TYPE orderflow_lock_wait_seconds histogram"));
        assert!(text.contains("orderflow_lock_acquisitions_total{outcome=\"acquired\"} 1"));
        assert!(
            !text.contains("# EOF"),
            "classic Prometheus text, not OpenMetrics"
        );
    }
}

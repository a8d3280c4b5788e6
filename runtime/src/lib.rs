//! Runtime plumbing shared by every orderflow process, so each service's `main.rs` only wires
//! things together: configuration arguments, client set-up for PostgreSQL and Redis, gRPC
//! serving with health and reflection, and shutdown on signals. Kafka is `orderflow-kafka`'s;
//! logs, traces and metrics are `orderflow-telemetry`'s.

pub mod auth;
pub mod backoff;
pub mod config;
pub mod grpc;
pub mod postgres;
pub mod process;
pub mod redis;
pub mod shutdown;
pub mod timestamp;
pub mod tls;
pub mod validate;

/// Every orderflow process allocates through mimalloc rather than glibc's malloc: a service's
/// work is many small, short-lived allocations (protobuf messages, Redis replies, HTTP/2 frames)
/// across threads, where glibc's malloc and free took a fifth of order-api's CPU
/// (docs/BENCHMARKS.md, optimisation 6). Defined here, it applies to every binary and test that
/// links this crate.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Binds a listen address such as `127.0.0.1:50051` (a gRPC server's or the metrics
/// endpoint's); the error names the address.
pub async fn bind(address: &str) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|error| std::io::Error::new(error.kind(), format!("binding {address}: {error}")))
}

/// Why a process could not start or keep running its plumbing.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("PostgreSQL at {url}: {source}")]
    Postgres {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("applying database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("PostgreSQL schema: {0}")]
    Schema(String),
    #[error("Redis at {url}: {source}")]
    Redis {
        url: String,
        #[source]
        source: ::redis::RedisError,
    },
    #[error("Kafka at {brokers}: {source}")]
    Kafka {
        brokers: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("creating Kafka topic {topic}: {reason}")]
    CreateTopic { topic: String, reason: String },
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error(transparent)]
    Telemetry(#[from] orderflow_telemetry::TelemetryError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

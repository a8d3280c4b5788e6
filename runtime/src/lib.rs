//! Runtime plumbing shared by every orderflow process, so each service's `main.rs` only wires
//! things together: what every process is configured with and how it starts, its PostgreSQL
//! pool on its own schema, Redis, and shutdown on signals. Kafka is `orderflow-kafka`'s, gRPC
//! serving and calling `orderflow-grpc`'s, logs, traces and metrics `orderflow-telemetry`'s,
//! the secret helpers of every settings group `orderflow-config`'s.

pub mod backoff;
pub mod config;
pub mod postgres;
pub mod process;
pub mod redis;
pub mod shutdown;
pub mod timestamp;
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
    #[error(transparent)]
    Grpc(#[from] orderflow_grpc::GrpcError),
    #[error(transparent)]
    Telemetry(#[from] orderflow_telemetry::TelemetryError),
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Setting(#[from] orderflow_config::ConfigError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

//! What a process tells its operators: its logs and traces (set up from [`TelemetryArgs`], with
//! the W3C trace context carried across gRPC calls and Kafka messages) and its Prometheus
//! metrics, every family declared once for the four services.

mod args;
pub mod metrics;
mod setup;
pub mod trace_context;

pub use args::{LogFormat, TelemetryArgs};
pub use setup::{init, Telemetry};

/// Why logs, traces or metrics could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("telemetry: {0}")]
    Setup(String),
    #[error("metrics endpoint {address}: {source}")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
}

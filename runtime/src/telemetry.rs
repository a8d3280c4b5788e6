//! Logging set-up: `tracing` to stderr, filtered by `--log` / `ORDERFLOW_LOG`.

use tracing_subscriber::EnvFilter;

use crate::config::TelemetryArgs;
use crate::RuntimeError;

pub fn init(args: &TelemetryArgs) -> Result<(), RuntimeError> {
    let filter = EnvFilter::try_new(&args.log)
        .map_err(|error| RuntimeError::Telemetry(format!("--log {:?}: {error}", args.log)))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init()
        .map_err(|error| RuntimeError::Telemetry(error.to_string()))
}

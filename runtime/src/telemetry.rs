//! Logging set-up: `tracing` to stderr, filtered by `--log` / `ORDERFLOW_LOG`, as lines for
//! people or JSON for log collectors (`--log-format`).

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, TelemetryArgs};
use crate::RuntimeError;

pub fn init(args: &TelemetryArgs) -> Result<(), RuntimeError> {
    let filter = EnvFilter::try_new(&args.log)
        .map_err(|error| RuntimeError::Telemetry(format!("--log {:?}: {error}", args.log)))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match args.log_format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
    installed.map_err(|error| RuntimeError::Telemetry(error.to_string()))
}

//! The start every service binary shares, so its `main.rs` only names its service: with
//! `--check-config`, check the configuration and stop; otherwise start telemetry, bind the gRPC
//! listen address (an ephemeral loopback port with `--migrate-only`, which serves nothing) and
//! install the SIGINT/SIGTERM handler, in that order.

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::ProcessArgs;
use crate::RuntimeError;
use orderflow_telemetry::Telemetry;

/// What a started service runs with.
pub struct Started {
    pub listener: TcpListener,
    /// Cancelled on SIGINT or SIGTERM.
    pub shutdown: CancellationToken,
    /// Flushes the traces when dropped: keep it until the service has stopped.
    pub telemetry: Telemetry,
}

/// `None` when `--check-config` was given and the configuration passed `validate` (the process
/// stops there, having said so); an error when it did not.
pub async fn start(
    binary: &'static str,
    process: &ProcessArgs,
    listen: &str,
    validate: impl FnOnce() -> Result<(), RuntimeError>,
) -> Result<Option<Started>, RuntimeError> {
    if let Some(checked) = process.check.only(binary, validate) {
        return checked.map(|()| None);
    }
    let telemetry = orderflow_telemetry::init(&process.telemetry, binary)?;
    // `--migrate-only` serves nothing: a port nobody reaches, so that a migration cannot fail
    // on a listen address in use (the service's own, still serving during an upgrade).
    let listen = if process.postgres.migrate_only {
        "127.0.0.1:0"
    } else {
        listen
    };
    let listener = crate::bind(listen).await?;
    Ok(Some(Started {
        listener,
        shutdown: crate::shutdown::on_signal(),
        telemetry,
    }))
}

//! The start every service binary shares, so its `main.rs` only names its service: with
//! `--check-config`, check the configuration and stop; otherwise start telemetry, bind the gRPC
//! listen address (an ephemeral loopback port with `--migrate-only`, which serves nothing) and
//! install the SIGINT/SIGTERM handler, in that order. Then each service's `run` opens its
//! PostgreSQL pool and serves its metrics the same way ([`open_pool`]).

use orderflow_telemetry::metrics::WatchedPool;
use orderflow_telemetry::Telemetry;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::ProcessArgs;
use crate::postgres::Schema;
use crate::RuntimeError;

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

/// A service's PostgreSQL pool, reported in its metrics while this lives.
pub struct ServicePool {
    pub pool: PgPool,
    _reported: WatchedPool,
}

/// The first steps of every service's `run`: `schema` brought up to date and the pool on it
/// opened (`None` with `--migrate-only`: the service stops there, having served nothing), the
/// pool reported in the metrics as `service`'s, the metrics served on `metrics_listen` until
/// `shutdown`.
pub async fn open_pool(
    service: &'static str,
    process: &ProcessArgs,
    schema: &Schema,
    metrics_listen: &str,
    shutdown: &CancellationToken,
) -> Result<Option<ServicePool>, RuntimeError> {
    let Some(pool) = crate::postgres::open(&process.postgres, schema).await? else {
        return Ok(None);
    };
    let reported = orderflow_telemetry::metrics::metrics().watch_pool(service, pool.clone());
    orderflow_telemetry::metrics::serve(metrics_listen, shutdown.child_token()).await?;
    Ok(Some(ServicePool {
        pool,
        _reported: reported,
    }))
}

//! What every service process is configured with (`ProcessArgs`: how it serves gRPC, its
//! PostgreSQL, its telemetry, `--check-config`). Each settings group sits next to the client it
//! configures (`PostgresArgs` in `postgres`, `RedisArgs` in `redis`, `ServingArgs` and
//! `InventoryClientArgs` in `orderflow-grpc`, the Kafka groups in `orderflow-kafka`,
//! `TelemetryArgs` in `orderflow-telemetry`); the helpers for secrets are `orderflow-config`'s.
//! Each service flattens the groups it needs into its own `Config`, so every setting has one
//! flag, one environment variable and one default that works with the local stack (`make run`).
//!
//! Connection URLs may carry passwords: the `Debug` impls redact them, and nothing logs them raw.
//! The groups also derive `serde::Serialize`, which gives every value raw, passwords included: it
//! exists to hand a typed configuration to a child process as flags (the integration tests start
//! the built binaries from the same `Config` values they run in-process), never to log one.

use crate::RuntimeError;

/// `--check-config`: the whole configuration checked as a start would check it, and nothing
/// started. The Helm chart's rendered settings are tested this way (scripts/check-chart.sh), and
/// an operator can try a changed setting before rolling it out.
#[derive(Clone, Debug, clap::Args, serde::Serialize)]
pub struct CheckArgs {
    /// Parse and check the whole configuration (every file it names read and parsed: secrets,
    /// certificates, keys, token files; URLs; librdkafka properties; the log filter), connect to
    /// nothing, print `<binary>: configuration OK` and exit 0; otherwise exit non-zero naming
    /// the setting that is wrong.
    #[arg(long, env = "ORDERFLOW_CHECK_CONFIG")]
    pub check_config: bool,
}

impl CheckArgs {
    /// With `--check-config`, runs `check` and says so: `Some(outcome)`, and the process stops
    /// there. `None` without the flag.
    pub fn only(
        &self,
        binary: &str,
        check: impl FnOnce() -> Result<(), RuntimeError>,
    ) -> Option<Result<(), RuntimeError>> {
        self.check_config.then(|| {
            check()?;
            println!("{binary}: configuration OK");
            Ok(())
        })
    }
}

/// What every orderflow service process has, whatever it serves: how it serves gRPC, its
/// PostgreSQL, its telemetry, and `--check-config`. (Its listen addresses are its own: their
/// flags are shared but their defaults differ per service.)
#[derive(Clone, Debug, clap::Args, serde::Serialize)]
pub struct ProcessArgs {
    #[command(flatten)]
    pub serving: orderflow_grpc::ServingArgs,

    #[command(flatten)]
    pub postgres: crate::postgres::PostgresArgs,

    #[command(flatten)]
    pub telemetry: orderflow_telemetry::TelemetryArgs,

    #[command(flatten)]
    pub check: CheckArgs,
}

impl ProcessArgs {
    /// The checks of these settings and of the process's gRPC and metrics listen addresses
    /// (each service's `validate` adds its own).
    pub fn validate(&self, listen: &str, metrics_listen: &str) -> Result<(), RuntimeError> {
        check_listen_address("--listen", listen)?;
        check_listen_address("--metrics-listen", metrics_listen)?;
        self.serving.check()?;
        self.telemetry.check()?;
        crate::postgres::check(&self.postgres)
    }
}

/// A listen address as `host:port` (`0.0.0.0:50051`, `[::]:9101`, `localhost:50051`); the host is
/// resolved only when the server binds it.
fn check_listen_address(flag: &str, address: &str) -> Result<(), RuntimeError> {
    if address.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    match address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(RuntimeError::Config(format!(
            "{flag} {address:?}: expected host:port, e.g. 0.0.0.0:50051"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_password() {
        let args = crate::postgres::PostgresArgs {
            database_url: "postgres://u:hunter2@db/x".into(),
            database_url_file: None,
            database_max_connections: 1,
            database_acquire_timeout_ms: 1,
            migrate_only: false,
        };
        assert!(!format!("{args:?}").contains("hunter2"));
    }

    #[test]
    fn listen_addresses_need_a_host_and_a_port() {
        for good in ["0.0.0.0:50051", "[::]:9101", "localhost:50051"] {
            assert!(check_listen_address("--listen", good).is_ok(), "{good}");
        }
        for bad in [
            "50051",
            "localhost",
            ":50051",
            "localhost:http",
            "host:70000",
        ] {
            let refused = check_listen_address("--listen", bad).expect_err(bad);
            assert!(refused.to_string().contains("--listen"), "{refused}");
        }
    }
}

//! What every service process is configured with (`ProcessArgs`: how it serves gRPC, its
//! PostgreSQL, its telemetry, `--check-config`) and the helpers every settings group uses for
//! secrets: a value or the file holding it, PEM files read and checked at start-up, URLs with
//! their passwords redacted. Each group sits next to the client it configures (`PostgresArgs`
//! in `postgres`, `RedisArgs` in `redis`, `ServingArgs` and `InventoryClientArgs` in `grpc`);
//! each service flattens the groups it needs into its own `Config`, so every setting has one
//! flag, one environment variable and one default that works with the local stack (`make run`).
//!
//! Connection URLs may carry passwords: the `Debug` impls redact them, and nothing logs them raw.
//! The groups also derive `serde::Serialize`, which gives every value raw, passwords included: it
//! exists to hand a typed configuration to a child process as flags (the integration tests start
//! the built binaries from the same `Config` values they run in-process), never to log one.

use std::path::Path;

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
    pub serving: crate::grpc::ServingArgs,

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

/// The content of a file that must hold PEM (a CA bundle, a certificate, a key), read once and
/// checked at start-up: the client libraries read such files only when they first connect, and
/// their errors then name no setting. A missing or wrong file stops the start naming `setting`.
pub fn read_pem_file(setting: &str, path: &Path) -> Result<Vec<u8>, RuntimeError> {
    let content = std::fs::read(path)
        .map_err(|error| RuntimeError::Config(format!("{setting} {}: {error}", path.display())))?;
    if content.windows(11).any(|window| window == b"-----BEGIN ") {
        Ok(content)
    } else {
        Err(RuntimeError::Config(format!(
            "{setting} {}: not PEM (no -----BEGIN line)",
            path.display()
        )))
    }
}

/// `value`, or the content of `file` when one is given (a secret mounted as a file); a trailing
/// newline is not part of it.
pub fn secret_or_file(
    value: &str,
    file: Option<&Path>,
    flag: &str,
) -> Result<String, RuntimeError> {
    match file {
        None => Ok(value.to_owned()),
        Some(path) => std::fs::read_to_string(path)
            .map(|content| content.trim_end_matches(['\r', '\n']).to_owned())
            .map_err(|error| RuntimeError::Config(format!("{flag} {}: {error}", path.display()))),
    }
}

/// `scheme://user:password@host/db` becomes `scheme://user:***@host/db`; anything without a
/// password is returned as it is. A comma-separated list (cluster seed nodes) is redacted item
/// by item.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(redact_one_url)
        .collect::<Vec<_>>()
        .join(",")
}

fn redact_one_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or_default();
            if credentials.contains(':') {
                format!("{scheme}://{user}:***@{host}{path}")
            } else {
                format!("{scheme}://***@{host}{path}")
            }
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_and_keeps_the_rest() {
        assert_eq!(
            redact_url("postgres://orderflow:secret@127.0.0.1:5432/orderflow"),
            "postgres://orderflow:***@127.0.0.1:5432/orderflow"
        );
        assert_eq!(
            redact_url("redis://:secret@localhost:6379"),
            "redis://:***@localhost:6379"
        );
        assert_eq!(
            redact_url("redis://token@localhost"),
            "redis://***@localhost"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(redact_url("not a url"), "not a url");
        assert_eq!(
            redact_url("redis://:a@n1:7000,redis://:b@n2:7001"),
            "redis://:***@n1:7000,redis://:***@n2:7001"
        );
    }

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
    fn a_secret_file_replaces_the_value_without_its_newline() {
        let path = std::env::temp_dir().join(format!("orderflow-secret-{}", std::process::id()));
        std::fs::write(&path, "redis://:pw@cache:6379\n").expect("writing the secret");
        assert_eq!(
            secret_or_file("redis://127.0.0.1", Some(&path), "--redis-url-file").ok(),
            Some("redis://:pw@cache:6379".to_owned())
        );
        assert_eq!(
            secret_or_file("redis://127.0.0.1", None, "--redis-url-file").ok(),
            Some("redis://127.0.0.1".to_owned())
        );
        let missing = secret_or_file("", Some(Path::new("/nonexistent")), "--redis-url-file");
        assert!(missing.is_err_and(|error| error.to_string().contains("--redis-url-file")));
        let _ = std::fs::remove_file(path);
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

    #[test]
    fn a_pem_file_must_exist_and_hold_pem() {
        let path = std::env::temp_dir().join(format!("orderflow-pem-{}", std::process::id()));
        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .expect("writing the file");
        assert!(read_pem_file("--ca", &path).is_ok());
        std::fs::write(&path, "not a pem").expect("writing the file");
        let refused = read_pem_file("--ca", &path).expect_err("not PEM");
        assert!(refused.to_string().contains("--ca") && refused.to_string().contains("not PEM"));
        let _ = std::fs::remove_file(&path);
        let missing = read_pem_file("--ca", &path).expect_err("missing");
        assert!(missing.to_string().contains("--ca"), "{missing}");
    }
}

//! Settings shared by several services, as clap argument groups: each service flattens the
//! groups it needs into its own `Config`, so every setting has one flag, one environment
//! variable and one default that works with the local stack (`make run`).
//!
//! Connection URLs may carry passwords: the `Debug` impls redact them, and nothing logs them raw.
//! The groups also derive `serde::Serialize`, which gives every value raw, passwords included: it
//! exists to hand a typed configuration to a child process as flags (the integration tests start
//! the built binaries from the same `Config` values they run in-process), never to log one.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::RuntimeError;

#[derive(Clone, clap::Args, serde::Serialize)]
pub struct PostgresArgs {
    /// PostgreSQL connection URL (may contain a password; never logged).
    #[arg(
        long,
        env = "ORDERFLOW_DATABASE_URL",
        default_value = "postgres://orderflow:orderflow@127.0.0.1:5432/orderflow",
        hide_env_values = true
    )]
    pub database_url: String,

    /// File holding the PostgreSQL URL (e.g. a mounted Secret); read at start-up, it replaces
    /// `--database-url`. TLS: `?sslmode=verify-full&sslrootcert=/path/ca.pem` in the URL.
    #[arg(long, env = "ORDERFLOW_DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,

    /// Maximum connections in the PostgreSQL pool.
    #[arg(long, env = "ORDERFLOW_DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub database_max_connections: u32,

    /// Longest wait for a pooled PostgreSQL connection (all busy, or PostgreSQL unreachable)
    /// before the call fails with UNAVAILABLE.
    #[arg(
        long,
        env = "ORDERFLOW_DATABASE_ACQUIRE_TIMEOUT_MS",
        default_value_t = 5000
    )]
    pub database_acquire_timeout_ms: u64,

    /// Apply this service's database schema (its migrations) and exit: the Helm chart's
    /// pre-install and pre-upgrade Jobs.
    #[arg(long, env = "ORDERFLOW_MIGRATE_ONLY")]
    pub migrate_only: bool,
}

impl fmt::Debug for PostgresArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresArgs")
            .field("database_url", &redact_url(&self.database_url))
            .field("database_url_file", &self.database_url_file)
            .field("database_max_connections", &self.database_max_connections)
            .field(
                "database_acquire_timeout_ms",
                &self.database_acquire_timeout_ms,
            )
            .field("migrate_only", &self.migrate_only)
            .finish()
    }
}

impl PostgresArgs {
    /// The URL to connect to: the file's, if one is configured.
    pub fn url(&self) -> Result<String, RuntimeError> {
        secret_or_file(
            &self.database_url,
            self.database_url_file.as_deref(),
            "--database-url-file",
        )
    }
}

#[derive(Clone, clap::Args, serde::Serialize)]
pub struct RedisArgs {
    /// Redis connection URL (may contain a password; never logged). With `--redis-cluster`,
    /// a comma-separated list of seed nodes.
    #[arg(
        long,
        env = "ORDERFLOW_REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub redis_url: String,

    /// File holding the Redis URL (e.g. a mounted Secret); read at start-up, it replaces
    /// `--redis-url`.
    #[arg(long, env = "ORDERFLOW_REDIS_URL_FILE")]
    pub redis_url_file: Option<PathBuf>,

    /// PEM CA certificate that signed the Redis server's certificate, for `rediss://` URLs to a
    /// server with a private CA (public CAs are trusted from the system's store).
    #[arg(long, env = "ORDERFLOW_REDIS_TLS_CA_FILE")]
    pub redis_tls_ca_file: Option<PathBuf>,

    /// Talk to a Redis Cluster instead of a single Redis.
    #[arg(
        long,
        env = "ORDERFLOW_REDIS_CLUSTER",
        default_value_t = false,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub redis_cluster: bool,

    /// Prefix of every Redis key this deployment writes. It is also the key's hash tag, so all
    /// keys of one deployment live in one Redis Cluster slot and scripts may touch them together.
    #[arg(long, env = "ORDERFLOW_REDIS_KEY_PREFIX", default_value = "orderflow")]
    pub redis_key_prefix: String,

    /// Longest wait for a Redis connection or answer; past it the call fails (UNAVAILABLE)
    /// instead of hanging while Redis is down.
    #[arg(long, env = "ORDERFLOW_REDIS_TIMEOUT_MS", default_value_t = 1000)]
    pub redis_timeout_ms: u64,
}

impl RedisArgs {
    /// The full key for `parts` under this deployment's prefix, e.g. `{orderflow}:stock:SKU-1`.
    pub fn key(&self, parts: &[&str]) -> String {
        redis_key(&self.redis_key_prefix, parts)
    }

    /// The URL (or cluster seed list) to connect to: the file's, if one is configured.
    pub fn url(&self) -> Result<String, RuntimeError> {
        secret_or_file(
            &self.redis_url,
            self.redis_url_file.as_deref(),
            "--redis-url-file",
        )
    }
}

impl fmt::Debug for RedisArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisArgs")
            .field("redis_url", &redact_url(&self.redis_url))
            .field("redis_url_file", &self.redis_url_file)
            .field("redis_tls_ca_file", &self.redis_tls_ca_file)
            .field("redis_cluster", &self.redis_cluster)
            .field("redis_key_prefix", &self.redis_key_prefix)
            .field("redis_timeout_ms", &self.redis_timeout_ms)
            .finish()
    }
}

/// How a gRPC server protects itself and stops.
#[derive(Clone, Debug, clap::Args, serde::Serialize)]
pub struct ServingArgs {
    /// Calls served at once; past it a call is refused at once with RESOURCE_EXHAUSTED (load
    /// shedding) instead of queueing. Health checks are never refused.
    #[arg(
        long,
        env = "ORDERFLOW_MAX_CONCURRENT_REQUESTS",
        default_value_t = 2048
    )]
    pub max_concurrent_requests: usize,

    /// Server streams (WatchOrder, SubscribeNotifications) open at once; past it a new one is
    /// refused at once with RESOURCE_EXHAUSTED. Each holds its slot until it ends.
    #[arg(long, env = "ORDERFLOW_MAX_OPEN_STREAMS", default_value_t = 10_000)]
    pub max_open_streams: usize,

    /// Largest request message accepted, in bytes; a larger one is refused with
    /// RESOURCE_EXHAUSTED before it is decoded.
    #[arg(long, env = "ORDERFLOW_MAX_MESSAGE_BYTES", default_value_t = 1024 * 1024)]
    pub max_message_bytes: usize,

    /// After SIGTERM, how long calls in flight may take to finish before the server stops
    /// anyway. Keep it below the pod's terminationGracePeriodSeconds.
    #[arg(long, env = "ORDERFLOW_DRAIN_TIMEOUT_MS", default_value_t = 20_000)]
    pub drain_timeout_ms: u64,

    #[command(flatten)]
    pub tls: crate::tls::ServerTlsArgs,

    #[command(flatten)]
    pub auth: crate::auth::AuthArgs,
}

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
    pub serving: ServingArgs,

    #[command(flatten)]
    pub postgres: PostgresArgs,

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

/// The Redis key for `parts` under `prefix`, the prefix being the hash tag: `{prefix}:a:b`.
pub fn redis_key(prefix: &str, parts: &[&str]) -> String {
    let mut key = format!("{{{prefix}}}");
    for part in parts {
        key.push(':');
        key.push_str(part);
    }
    key
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
        let args = PostgresArgs {
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

    #[test]
    fn keys_share_the_prefix_as_hash_tag() {
        let args = RedisArgs {
            redis_url: String::new(),
            redis_url_file: None,
            redis_tls_ca_file: None,
            redis_cluster: false,
            redis_key_prefix: "t1".into(),
            redis_timeout_ms: 1,
        };
        assert_eq!(args.key(&["stock", "SKU-1"]), "{t1}:stock:SKU-1");
    }
}

/// How a service reaches inventory-svc (order-api to reserve and settle stock, consumer-worker
/// to confirm the reservations of the orders it persists).
#[derive(Clone, Debug, clap::Args, serde::Serialize)]
pub struct InventoryClientArgs {
    /// URL of inventory-svc.
    #[arg(
        long,
        env = "ORDERFLOW_INVENTORY_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub inventory_url: String,

    /// PEM CA that signed inventory-svc's certificate (with an `https://` --inventory-url).
    #[arg(long, env = "ORDERFLOW_INVENTORY_CA_FILE")]
    pub inventory_ca_file: Option<String>,

    /// PEM certificate presented to inventory-svc (mutual TLS); with the key below.
    #[arg(long, env = "ORDERFLOW_INVENTORY_CLIENT_CERT_FILE")]
    pub inventory_client_cert_file: Option<String>,

    /// PEM private key of --inventory-client-cert-file.
    #[arg(long, env = "ORDERFLOW_INVENTORY_CLIENT_KEY_FILE")]
    pub inventory_client_key_file: Option<String>,

    /// File holding the bearer token presented to inventory-svc when it requires
    /// authentication (a token with scope `inventory`); never logged.
    #[arg(long, env = "ORDERFLOW_INVENTORY_TOKEN_FILE")]
    pub inventory_token_file: Option<PathBuf>,

    /// Longest any call to inventory-svc may take, whatever deadline it carries (each call
    /// also carries its own, usually shorter). Keep it above order-api's --create-timeout-ms.
    #[arg(long, env = "ORDERFLOW_INVENTORY_TIMEOUT_MS", default_value_t = 30_000)]
    pub inventory_timeout_ms: u64,
}

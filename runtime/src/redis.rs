//! Redis connection set-up: one multiplexed, auto-reconnecting connection per process, cloned
//! cheaply into every task (pipelining happens on the shared connection). The same code talks
//! to a single Redis or to a Redis Cluster (`--redis-cluster`); every key of a deployment shares
//! one hash tag, so scripts and pipelines that touch several keys work on both.
//!
//! Every connection attempt and every answer is bounded by `--redis-timeout-ms`, and reconnects
//! give up after a few quick retries: while Redis is down, calls fail fast (and become
//! UNAVAILABLE) instead of hanging the callers; the next call tries to reconnect again.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use tracing::Instrument;

use crate::RuntimeError;
use orderflow_config::{redact_url, secret_or_file};

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
        Ok(secret_or_file(
            &self.redis_url,
            self.redis_url_file.as_deref(),
            "--redis-url-file",
        )?)
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

/// The Redis key for `parts` under `prefix`, the prefix being the hash tag: `{prefix}:a:b`.
pub fn redis_key(prefix: &str, parts: &[&str]) -> String {
    let mut key = format!("{{{prefix}}}");
    for part in parts {
        key.push(':');
        key.push_str(part);
    }
    key
}

/// A connection to one Redis or to a Redis Cluster; cheap to clone.
#[derive(Clone)]
pub enum RedisConnection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let sent = match self {
            Self::Single(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        };
        traced(sent, || match cmd.args_iter().next() {
            Some(redis::Arg::Simple(name)) => String::from_utf8_lossy(name).to_uppercase(),
            _ => "COMMAND".to_owned(),
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let sent = match self {
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        };
        traced(sent, || "PIPELINE".to_owned())
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

/// Every Redis command is a client span while traces are exported (nothing otherwise).
fn traced<'a, T: Send + 'a>(
    sent: RedisFuture<'a, T>,
    operation: impl FnOnce() -> String,
) -> RedisFuture<'a, T> {
    if !orderflow_telemetry::trace_context::exporting() {
        return sent;
    }
    let operation = operation();
    let span = tracing::info_span!(
        "redis",
        "otel.name" = %operation,
        "otel.kind" = "client",
        "db.system.name" = "redis",
        "db.operation.name" = %operation,
    );
    Box::pin(sent.instrument(span))
}

/// The client for the configured Redis or Redis Cluster, built without connecting.
enum Client {
    Single(redis::Client),
    Cluster(ClusterClient),
}

/// The settings without connecting (`--check-config`): the URL or seed list parses, the CA file
/// holds PEM.
pub fn check(args: &RedisArgs) -> Result<(), RuntimeError> {
    client(args).map(drop)
}

pub async fn connect(args: &RedisArgs) -> Result<RedisConnection, RuntimeError> {
    let (url, client) = client(args)?;
    let error = |source| RuntimeError::Redis {
        url: redact_url(&url),
        source,
    };
    match client {
        Client::Cluster(client) => Ok(RedisConnection::Cluster(
            client.get_async_connection().await.map_err(error)?,
        )),
        Client::Single(client) => {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(timeout(args))
                .set_response_timeout(timeout(args))
                .set_number_of_retries(2)
                .set_factor(50)
                .set_max_delay(500);
            ConnectionManager::new_with_config(client, config)
                .await
                .map(RedisConnection::Single)
                .map_err(error)
        }
    }
}

fn timeout(args: &RedisArgs) -> Duration {
    Duration::from_millis(args.redis_timeout_ms.max(1))
}

/// The client and the URL it was built from (the file's, if one is configured).
fn client(args: &RedisArgs) -> Result<(String, Client), RuntimeError> {
    let url = args.url()?;
    let error = |source| RuntimeError::Redis {
        url: redact_url(&url),
        source,
    };
    // `rediss://` URLs speak TLS; a private CA is trusted on top of the system's store.
    let certificates = match &args.redis_tls_ca_file {
        None => None,
        Some(path) => {
            let root = orderflow_config::read_pem_file("--redis-tls-ca-file", path)?;
            Some(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root),
            })
        }
    };
    if args.redis_cluster {
        let nodes: Vec<&str> = url.split(',').map(str::trim).collect();
        let mut builder = ClusterClient::builder(nodes)
            .connection_timeout(timeout(args))
            .response_timeout(timeout(args))
            .retries(2);
        if let Some(certificates) = certificates {
            builder = builder.certs(certificates);
        }
        let client = builder.build().map(Client::Cluster).map_err(error)?;
        return Ok((url, client));
    }
    let client = match certificates {
        Some(certificates) => redis::Client::build_with_tls(url.as_str(), certificates),
        None => redis::Client::open(url.as_str()),
    }
    .map(Client::Single)
    .map_err(error)?;
    Ok((url, client))
}

#[cfg(test)]
mod tests {
    use super::*;

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

//! PostgreSQL pool set-up and the schema migrations each service applies to its own schema at
//! start-up.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::RuntimeError;
use orderflow_config::{redact_url, secret_or_file};

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
        Ok(secret_or_file(
            &self.database_url,
            self.database_url_file.as_deref(),
            "--database-url-file",
        )?)
    }
}

/// A service's own PostgreSQL schema: its name and the migrations that build it (in the owning
/// crate). Every connection of the service's pool uses it alone as its `search_path`, so the
/// service's statements name its tables unqualified and cannot reach another service's tables
/// by accident; the database role it connects with decides what it may reach on purpose
/// (docs/deployment.md, "One database, a schema and a role per service").
pub struct Schema {
    /// A plain lower-case identifier (no quoting needed).
    pub name: &'static str,
    pub migrator: &'static Migrator,
}

/// Connects a pool to `schema` and brings the schema up to date (creating it first if it does
/// not exist, which needs the CREATE privilege on the database; a schema created beforehand by
/// an administrator, `AUTHORIZATION` the service's role, needs none).
pub async fn connect_and_migrate(
    args: &PostgresArgs,
    schema: &Schema,
) -> Result<PgPool, RuntimeError> {
    let (url, options) = connect_options(args)?;
    let pool = PgPoolOptions::new()
        .max_connections(args.database_max_connections)
        .acquire_timeout(std::time::Duration::from_millis(
            args.database_acquire_timeout_ms.max(1),
        ))
        .connect_with(options.options([("search_path", schema.name)]))
        .await
        .map_err(|source| RuntimeError::Postgres {
            url: redact_url(&url),
            source,
        })?;
    create_if_missing(&pool, schema.name).await?;
    schema.migrator.run(&pool).await?;
    Ok(pool)
}

/// A service's start: its schema brought up to date, then its pool; `None` once the schema is
/// up to date if `--migrate-only` asked for no more.
pub async fn open(args: &PostgresArgs, schema: &Schema) -> Result<Option<PgPool>, RuntimeError> {
    let pool = connect_and_migrate(args, schema).await?;
    if args.migrate_only {
        tracing::info!(
            schema = schema.name,
            "schema up to date; --migrate-only, so stopping here"
        );
        pool.close().await;
        return Ok(None);
    }
    Ok(Some(pool))
}

async fn create_if_missing(pool: &PgPool, schema: &str) -> Result<(), RuntimeError> {
    if schema_exists(pool, schema).await? {
        return Ok(());
    }
    let created = sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .execute(pool)
        .await;
    match created {
        Ok(_) => Ok(()),
        // Two processes of one owner starting together (order-api and consumer-worker) may both
        // try: IF NOT EXISTS does not stop the second from failing on the catalog's unique key.
        Err(_) if schema_exists(pool, schema).await? => Ok(()),
        Err(error) => Err(RuntimeError::Schema(format!(
            "creating schema {schema}: {error}; if this role may not create schemas, have an \
             administrator run CREATE SCHEMA {schema} AUTHORIZATION <this role>"
        ))),
    }
}

async fn schema_exists(pool: &PgPool, schema: &str) -> Result<bool, RuntimeError> {
    sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)")
        .bind(schema)
        .fetch_one(pool)
        .await
        .map_err(|error| RuntimeError::Schema(format!("looking for schema {schema}: {error}")))
}

/// The settings without connecting (`--check-config`): the URL (or its file) parses, the TLS
/// files it names hold PEM, the pool can hold a connection.
pub fn check(args: &PostgresArgs) -> Result<(), RuntimeError> {
    let (url, _) = connect_options(args)?;
    if args.database_max_connections == 0 {
        return Err(RuntimeError::Config(
            "--database-max-connections must be at least 1".into(),
        ));
    }
    let query = url.split_once('?').map_or("", |(_, query)| query);
    for (key, value) in query.split('&').filter_map(|pair| pair.split_once('=')) {
        if PEM_FILE_PARAMETERS.contains(&key) {
            orderflow_config::read_pem_file(
                &format!("--database-url {key}"),
                std::path::Path::new(value),
            )?;
        }
    }
    Ok(())
}

/// The URL's parameters naming files sqlx reads only when it connects.
const PEM_FILE_PARAMETERS: [&str; 3] = ["sslrootcert", "sslcert", "sslkey"];

/// The URL to connect to (the file's, if configured) and its parsed options.
fn connect_options(args: &PostgresArgs) -> Result<(String, PgConnectOptions), RuntimeError> {
    let url = args.url()?;
    let options = PgConnectOptions::from_str(&url).map_err(|error| {
        RuntimeError::Config(format!("--database-url {}: {error}", redact_url(&url)))
    })?;
    Ok((url, options))
}

/// The client span of a PostgreSQL statement or transaction, e.g. `span("INSERT", "reservations")`
/// (only while traces are exported; see [`orderflow_telemetry::trace_context::exporting`]).
pub fn span(operation: &'static str, collection: &'static str) -> tracing::Span {
    if !orderflow_telemetry::trace_context::exporting() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "postgresql",
        "otel.name" = %format_args!("{operation} {collection}"),
        "otel.kind" = "client",
        "db.system.name" = "postgresql",
        "db.operation.name" = operation,
        "db.collection.name" = collection,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: &str) -> PostgresArgs {
        PostgresArgs {
            database_url: url.into(),
            database_url_file: None,
            database_max_connections: 1,
            database_acquire_timeout_ms: 1,
            migrate_only: false,
        }
    }

    #[test]
    fn the_url_and_its_tls_files_are_checked_without_connecting() {
        assert!(check(&args("postgres://u:pw@db.example:5432/orderflow")).is_ok());
        let malformed = check(&args("postgres://u:pw@db:port/x")).expect_err("bad port");
        assert!(!malformed.to_string().contains("pw@"), "{malformed}");
        let missing_ca = check(&args(
            "postgres://db/x?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        ))
        .expect_err("missing CA");
        assert!(
            missing_ca.to_string().contains("sslrootcert"),
            "{missing_ca}"
        );
    }
}

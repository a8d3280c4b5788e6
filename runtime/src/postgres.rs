//! PostgreSQL pool set-up and the schema migrations every service applies at start-up.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::config::{redact_url, PostgresArgs};
use crate::RuntimeError;

/// The schema of the whole suite, embedded at compile time from `runtime/migrations`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Connects a pool and brings the schema up to date.
pub async fn connect_and_migrate(args: &PostgresArgs) -> Result<PgPool, RuntimeError> {
    let (url, options) = connect_options(args)?;
    let pool = PgPoolOptions::new()
        .max_connections(args.database_max_connections)
        .acquire_timeout(std::time::Duration::from_millis(
            args.database_acquire_timeout_ms.max(1),
        ))
        .connect_with(options)
        .await
        .map_err(|source| RuntimeError::Postgres {
            url: redact_url(&url),
            source,
        })?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
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
            crate::config::read_pem_file(
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
/// (only while traces are exported; see [`crate::trace_context::exporting`]).
pub fn span(operation: &'static str, collection: &'static str) -> tracing::Span {
    if !crate::trace_context::exporting() {
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

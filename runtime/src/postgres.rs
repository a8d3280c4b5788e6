//! PostgreSQL pool set-up and the schema migrations every service applies at start-up.

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::config::{redact_url, PostgresArgs};
use crate::RuntimeError;

/// The schema of the whole suite, embedded at compile time from `runtime/migrations`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Connects a pool and brings the schema up to date.
pub async fn connect_and_migrate(args: &PostgresArgs) -> Result<PgPool, RuntimeError> {
    let url = args.url()?;
    let pool = PgPoolOptions::new()
        .max_connections(args.database_max_connections)
        .acquire_timeout(std::time::Duration::from_millis(
            args.database_acquire_timeout_ms.max(1),
        ))
        .connect(&url)
        .await
        .map_err(|source| RuntimeError::Postgres {
            url: redact_url(&url),
            source,
        })?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
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

//! Where the shared dependencies are, and the check that they are up.
//!
//! | variable | default |
//! |---|---|
//! | `ORDERFLOW_TEST_POSTGRES` | `postgres://orderflow:orderflow@127.0.0.1:5432` (server, no database) |
//! | `ORDERFLOW_TEST_REDIS_URL` | `redis://127.0.0.1:6379` |
//! | `ORDERFLOW_TEST_KAFKA_BROKERS` | `127.0.0.1:9092` |
//! | `ORDERFLOW_TANSU` | `$HOME/.local/orderflow/bin/tansu` (for tests that run a broker of their own) |
//! | `ORDERFLOW_GRPCURL` | `$HOME/.local/orderflow/bin/grpcurl` (the reflection test calls the real grpcurl) |

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgPool};

pub const HOW_TO_START: &str = "start the local stack with `make test` (or `scripts/stack.sh`)";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

pub fn postgres_server() -> String {
    env_or(
        "ORDERFLOW_TEST_POSTGRES",
        "postgres://orderflow:orderflow@127.0.0.1:5432",
    )
}

pub fn redis_url() -> String {
    env_or("ORDERFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379")
}

pub fn kafka_brokers() -> String {
    env_or("ORDERFLOW_TEST_KAFKA_BROKERS", "127.0.0.1:9092")
}

/// A tool the scripts install into `$HOME/.local/orderflow/bin`, unless `variable` names another.
fn installed_tool(variable: &str, name: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| {
        format!(
            "{}/.local/orderflow/bin/{name}",
            std::env::var("HOME").unwrap_or_default()
        )
    })
}

pub fn tansu_binary() -> String {
    installed_tool("ORDERFLOW_TANSU", "tansu")
}

pub fn grpcurl_binary() -> String {
    installed_tool("ORDERFLOW_GRPCURL", "grpcurl")
}

/// Creates a database of its own for one test, with the schema applied, and returns its URL
/// and a pool on it.
pub async fn fresh_database(id: &str) -> (String, PgPool) {
    fresh_database_on(&postgres_server(), id).await
}

/// As `fresh_database`, on the PostgreSQL server at `server` (a URL without a database).
pub async fn fresh_database_on(server: &str, id: &str) -> (String, PgPool) {
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
        .await
        .unwrap_or_else(|error| {
            panic!(
                "PostgreSQL is not reachable at {}: {error}; {HOW_TO_START}",
                orderflow_runtime::config::redact_url(server)
            )
        });
    let name = format!("orderflow_t_{id}");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|error| panic!("creating test database {name}: {error}"));
    let url = format!("{server}/{name}");
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .unwrap_or_else(|error| panic!("connecting to test database {name}: {error}"));
    orderflow_runtime::postgres::MIGRATOR
        .run(&pool)
        .await
        .unwrap_or_else(|error| panic!("migrating test database {name}: {error}"));
    (url, pool)
}

pub async fn redis(url: &str) -> redis::aio::ConnectionManager {
    let connect = async { redis::Client::open(url)?.get_connection_manager().await };
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => panic!("Redis is not reachable at {url}: {error}; {HOW_TO_START}"),
        Err(_) => panic!("Redis at {url} did not answer within 5 s; {HOW_TO_START}"),
    }
}

/// Fails the test unless something accepts TCP connections at `address`.
pub async fn require_tcp(address: &str, what: &str) {
    if let Err(error) = reachable(address).await {
        panic!("{what} is not reachable at {address}: {error}; {HOW_TO_START}");
    }
}

async fn reachable(address: &str) -> Result<(), String> {
    match tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::TcpStream::connect(address),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("no answer within 3 s".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_service_fails_with_how_to_start_it() {
        // Port 1 is never served on loopback here.
        let result = tokio::spawn(require_tcp("127.0.0.1:1", "The Kafka broker")).await;
        let panic = result
            .expect_err("must fail, not pass or skip")
            .into_panic();
        let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            message.contains("The Kafka broker is not reachable at 127.0.0.1:1")
                && message.contains("make test"),
            "{message}"
        );
    }
}

//! Where the shared dependencies are, and the check that they are up.
//!
//! | variable | default |
//! |---|---|
//! | `ORDERFLOW_TEST_POSTGRES` | `postgres://orderflow:orderflow@127.0.0.1:5432` (server, no database) |
//! | `ORDERFLOW_TEST_REDIS_URL` | `redis://127.0.0.1:6379` |
//! | `ORDERFLOW_TEST_KAFKA_BROKERS` | `127.0.0.1:9092` |
//! | `ORDERFLOW_TANSU` | `$HOME/.local/orderflow/bin/tansu` (for tests that run a broker of their own) |
//! | `ORDERFLOW_GRPCURL` | `$HOME/.local/orderflow/bin/grpcurl` (the reflection test calls the real grpcurl) |

use std::str::FromStr;
use std::time::Duration;

use orderflow_runtime::postgres::PostgresArgs;
use orderflow_runtime::postgres::Schema;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
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

/// The schema of every service, in the order of `SEARCH_PATH`.
pub fn schemas() -> [&'static Schema; 3] {
    [
        &orderflow_order_rows::SCHEMA,
        &inventory_svc::SCHEMA,
        &notify_svc::SCHEMA,
    ]
}

/// The `search_path` of the tests' and loadgen's own connections: they check invariants across
/// every service's tables (no table name is in two schemas), which no service itself may do.
pub const SEARCH_PATH: &str = "orders,inventory,notify";

/// Options to connect to `url` seeing every service's tables unqualified.
pub fn every_schema(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    Ok(PgConnectOptions::from_str(url)?.options([("search_path", SEARCH_PATH)]))
}

/// Creates a database of its own for one test, with every service's schema applied, and
/// returns its URL and a pool on it that sees every schema.
pub async fn fresh_database(id: &str) -> (String, PgPool) {
    fresh_database_on(&postgres_server(), id).await
}

/// As `fresh_database`, on the PostgreSQL server at `server` (a URL without a database).
pub async fn fresh_database_on(server: &str, id: &str) -> (String, PgPool) {
    let name = format!("orderflow_t_{id}");
    let url = empty_database_on(server, &name).await;
    for schema in schemas() {
        migrate(&url, schema).await;
    }
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(every_schema(&url).expect("the URL of a test database"))
        .await
        .unwrap_or_else(|error| panic!("connecting to test database {name}: {error}"));
    (url, pool)
}

/// The database URL each service connects with, and the tests' own.
#[derive(Debug, Clone)]
pub struct ServiceDatabases {
    /// The tests' (and tools') URL: a role that may read every schema.
    pub admin: String,
    /// order-api and consumer-worker.
    pub orders: String,
    pub inventory: String,
    pub notify: String,
}

impl ServiceDatabases {
    /// Every service connects as the same role (the local default).
    pub fn shared(url: &str) -> Self {
        Self {
            admin: url.to_owned(),
            orders: url.to_owned(),
            inventory: url.to_owned(),
            notify: url.to_owned(),
        }
    }
}

/// As `fresh_database`, set up as docs/deployment.md sets up production: each schema is created
/// by an administrator `AUTHORIZATION` a role of its own (`orderflow_t_<id>_<schema>`) and
/// migrated by that role. The tests' role is made a member of the three, to check invariants
/// across them. `scripts/test.sh` drops the roles of earlier runs.
pub async fn fresh_database_with_roles(id: &str) -> (ServiceDatabases, PgPool) {
    let server = postgres_server();
    let name = format!("orderflow_t_{id}");
    let url = empty_database_on(&server, &name).await;
    let mut admin = sqlx::PgConnection::connect(&url)
        .await
        .unwrap_or_else(|error| panic!("connecting to test database {name}: {error}"));
    let role_url = |schema: &Schema| {
        let role = format!("{name}_{}", schema.name);
        let statements = [
            format!("CREATE ROLE {role} LOGIN PASSWORD '{role}'"),
            format!("GRANT {role} TO CURRENT_USER"),
            format!("CREATE SCHEMA {} AUTHORIZATION {role}", schema.name),
        ];
        (statements, as_role(&format!("{server}/{name}"), &role))
    };
    let mut urls = Vec::new();
    for schema in schemas() {
        let (statements, schema_url) = role_url(schema);
        for statement in statements {
            sqlx::query(&statement)
                .execute(&mut admin)
                .await
                .unwrap_or_else(|error| panic!("{statement}: {error}"));
        }
        migrate(&schema_url, schema).await;
        urls.push(schema_url);
    }
    let [orders, inventory, notify] = <[String; 3]>::try_from(urls).expect("three schemas");
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(every_schema(&url).expect("the URL of a test database"))
        .await
        .unwrap_or_else(|error| panic!("connecting to test database {name}: {error}"));
    let databases = ServiceDatabases {
        admin: url,
        orders,
        inventory,
        notify,
    };
    (databases, pool)
}

/// `url` with the user (and password) `role`: the test roles' password is their name.
pub fn as_role(url: &str, role: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{role}:{role}@{host}")
}

/// Creates the database `name` on `server`, with nothing in it; its URL.
pub async fn empty_database_on(server: &str, name: &str) -> String {
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
        .await
        .unwrap_or_else(|error| {
            panic!(
                "PostgreSQL is not reachable at {}: {error}; {HOW_TO_START}",
                orderflow_config::redact_url(server)
            )
        });
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|error| panic!("creating test database {name}: {error}"));
    format!("{server}/{name}")
}

/// Applies `schema` to the database at `url` as its service does at start-up.
pub async fn migrate(url: &str, schema: &Schema) {
    let args = PostgresArgs {
        database_url: url.to_owned(),
        database_url_file: None,
        database_max_connections: 1,
        database_acquire_timeout_ms: 10_000,
        migrate_only: true,
    };
    orderflow_runtime::postgres::connect_and_migrate(&args, schema)
        .await
        .unwrap_or_else(|error| panic!("migrating schema {} at {url}: {error}", schema.name))
        .close()
        .await;
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

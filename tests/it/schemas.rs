//! Each service owns a PostgreSQL schema: with a role per service (as in production) the order
//! path works and no role reaches another's tables; an installation from the single-schema
//! layout moves into the schemas with its rows, ending where a new installation starts.

use std::time::Duration;

use orderflow_tests::deps::{self, ServiceDatabases};
use orderflow_tests::stack::{Options, Stack};
use orderflow_tests::{eventually, order_request};
use sqlx::{Connection, PgConnection, PgPool};

/// The tables of each schema, qualified.
const TABLES: [(&str, &[&str]); 3] = [
    (
        "orders",
        &[
            "orders.orders",
            "orders.order_items",
            "orders.order_status_history",
            "orders.order_outbox",
            "orders.stock_settlements",
            "orders.processed_events",
            "orders.parked_events",
        ],
    ),
    (
        "inventory",
        &[
            "inventory.skus",
            "inventory.reservations",
            "inventory.reservation_items",
            "inventory.stock_refusals",
        ],
    ),
    ("notify", &["notify.notifications"]),
];

fn url_of<'a>(databases: &'a ServiceDatabases, schema: &str) -> &'a str {
    match schema {
        "orders" => &databases.orders,
        "inventory" => &databases.inventory,
        _ => &databases.notify,
    }
}

#[tokio::test]
async fn each_service_role_reaches_its_own_schema_only() {
    let stack = Stack::start_with(Options {
        role_per_service: true,
        ..Options::default()
    })
    .await;
    stack.set_stock("OWN-1", 5, 250).await;
    let order = stack
        .create_order(order_request("k", "owner", &[("OWN-1", 1)]))
        .await
        .expect("placed with a role per service");
    stack.pay_order(&order, "pay-1").await.expect("paid");
    stack.wait_for_persisted_orders(1).await;
    eventually(
        "notify-svc to store both events' notifications",
        Duration::from_secs(60),
        || async { (stack.rows("notifications").await == 2).then_some(()) },
    )
    .await;

    let databases = stack.databases();
    for (schema, _) in TABLES {
        let mut connection = PgConnection::connect(url_of(databases, schema))
            .await
            .unwrap_or_else(|error| panic!("connecting as the {schema} role: {error}"));
        for (owner, tables) in TABLES {
            for table in tables {
                let read = sqlx::query(&format!("SELECT count(*) FROM {table}"))
                    .fetch_one(&mut connection)
                    .await;
                if owner == schema {
                    read.unwrap_or_else(|error| {
                        panic!("the {schema} role cannot read its own {table}: {error}")
                    });
                    continue;
                }
                let error = read.expect_err(&format!("the {schema} role read {table}"));
                let code = error
                    .as_database_error()
                    .and_then(|error| error.code())
                    .unwrap_or_default();
                assert_eq!(
                    code, "42501",
                    "the {schema} role reading {table}: {error} (want insufficient_privilege)"
                );
            }
        }
    }
    stack.stop().await;
}

/// What an upgrade must leave equal to a new installation: every column, constraint and index
/// of the services' schemas, as text.
async fn catalog(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT format('%s.%s column %s %s null=%s default=%s', table_schema, table_name,
                column_name, data_type, is_nullable, column_default)
           FROM information_schema.columns
          WHERE table_schema IN ('orders', 'inventory', 'notify')
         UNION ALL
         SELECT format('%s constraint %s %s', conrelid::regclass, conname,
                pg_get_constraintdef(oid))
           FROM pg_constraint
          WHERE connamespace::regnamespace::text IN ('orders', 'inventory', 'notify')
         UNION ALL
         SELECT format('%s.%s index %s', schemaname, tablename, indexdef)
           FROM pg_indexes
          WHERE schemaname IN ('orders', 'inventory', 'notify')
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("reading the catalog")
}

#[tokio::test]
async fn a_single_schema_installation_moves_into_the_service_schemas() {
    let server = deps::postgres_server();
    let id = orderflow_tests::unique_id();
    let legacy_url = deps::empty_database_on(&server, &format!("orderflow_t_{id}")).await;
    let legacy = PgPool::connect(&legacy_url).await.expect("connecting");
    let single_schema = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/single-schema-migrations"
    );
    sqlx::migrate::Migrator::new(std::path::Path::new(single_schema))
        .await
        .expect("the single-schema migrations")
        .run(&legacy)
        .await
        .expect("applying the single-schema layout");
    let order_id = uuid::Uuid::now_v7();
    for statement in [
        "INSERT INTO skus (sku, price_cents, available) VALUES ('OLD-1', 100, 9)".to_owned(),
        format!(
            "INSERT INTO orders (order_id, user_id, idempotency_key, status, total_cents, \
             currency, created_at, updated_at) \
             VALUES ('{order_id}', 'u', 'k', 'PENDING', 100, 'CNY', now(), now())"
        ),
        format!("INSERT INTO order_items VALUES ('{order_id}', 0, 'OLD-1', 1, 100)"),
        format!(
            "INSERT INTO order_outbox (order_id, topic, event_type, payload) \
                 VALUES ('{order_id}', 'order-paid', 'x', '')"
        ),
        format!(
            "INSERT INTO notifications (notification_id, event_id, user_id, order_id, \
             event_type, text) VALUES (gen_random_uuid(), gen_random_uuid(), 'u', \
             '{order_id}', 'order-created', 'hello')"
        ),
    ] {
        sqlx::query(&statement)
            .execute(&legacy)
            .await
            .unwrap_or_else(|error| panic!("{statement}: {error}"));
    }
    legacy.close().await;

    for schema in deps::schemas() {
        deps::migrate(&legacy_url, schema).await;
    }
    let upgraded = PgPool::connect_with(deps::every_schema(&legacy_url).expect("a URL"))
        .await
        .expect("connecting");
    let moved: (i64, String, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT available FROM inventory.skus WHERE sku = 'OLD-1'),
                (SELECT status FROM orders.orders WHERE order_id = $1),
                (SELECT count(*) FROM orders.order_items WHERE order_id = $1),
                (SELECT count(*) FROM notify.notifications WHERE order_id = $1),
                (SELECT count(*) FROM pg_tables WHERE schemaname = 'public'
                    AND tablename <> '_sqlx_migrations')",
    )
    .bind(order_id)
    .fetch_one(&upgraded)
    .await
    .expect("reading the moved rows");
    assert_eq!(moved, (9, "PENDING".to_owned(), 1, 1, 0));
    // The sequence moved with its table: the next outbox row follows the moved one.
    let next_id: i64 = sqlx::query_scalar(
        "INSERT INTO order_outbox (order_id, topic, event_type, payload) \
         VALUES ($1, 'order-shipped', 'x', '') RETURNING id",
    )
    .bind(order_id)
    .fetch_one(&upgraded)
    .await
    .expect("an outbox row after the move");
    assert_eq!(next_id, 2);

    let (_, fresh) = deps::fresh_database(&orderflow_tests::unique_id()).await;
    assert_eq!(catalog(&upgraded).await, catalog(&fresh).await);

    // The hand-over to a role per schema that docs/deployment.md gives for an upgraded
    // installation, here for the orders schema: the role then migrates it (nothing to do) and
    // writes its tables, and reaches no other schema.
    let role = format!("orderflow_t_{id}_orders");
    for statement in [
        format!("CREATE ROLE {role} LOGIN PASSWORD '{role}'"),
        format!("GRANT {role} TO CURRENT_USER"),
        format!("ALTER SCHEMA orders OWNER TO {role}"),
        format!(
            "DO $$ DECLARE t TEXT; BEGIN \
               FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'orders' LOOP \
                 EXECUTE format('ALTER TABLE orders.%I OWNER TO {role}', t); \
               END LOOP; \
             END $$"
        ),
    ] {
        sqlx::query(&statement)
            .execute(&upgraded)
            .await
            .unwrap_or_else(|error| panic!("{statement}: {error}"));
    }
    let role_url = deps::as_role(&legacy_url, &role);
    deps::migrate(&role_url, &orderflow_order_rows::SCHEMA).await;
    let mut as_role = PgConnection::connect(&role_url)
        .await
        .expect("connecting as the role");
    let written: i64 = sqlx::query_scalar(
        "INSERT INTO orders.order_outbox (order_id, topic, event_type, payload) \
         VALUES ($1, 'order-cancelled', 'x', '') RETURNING id",
    )
    .bind(order_id)
    .fetch_one(&mut as_role)
    .await
    .expect("the orders role writes its outbox");
    assert_eq!(written, 3);
    let foreign = sqlx::query("SELECT count(*) FROM inventory.skus")
        .fetch_one(&mut as_role)
        .await
        .expect_err("the orders role read inventory's table");
    assert_eq!(
        foreign
            .as_database_error()
            .and_then(|error| error.code())
            .as_deref(),
        Some("42501"),
        "{foreign}"
    );
}

/// order-api and consumer-worker share the orders schema and may start together on an empty
/// database: both create it if missing and migrate it, and neither fails.
#[tokio::test]
async fn two_processes_of_one_owner_starting_together_both_start() {
    let server = deps::postgres_server();
    for round in 0..5 {
        let id = orderflow_tests::unique_id();
        let url = deps::empty_database_on(&server, &format!("orderflow_t_{id}")).await;
        let schema = &orderflow_order_rows::SCHEMA;
        tokio::join!(deps::migrate(&url, schema), deps::migrate(&url, schema));
        let pool = PgPool::connect_with(deps::every_schema(&url).expect("a URL"))
            .await
            .expect("connecting");
        let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
            .fetch_one(&pool)
            .await
            .unwrap_or_else(|error| panic!("round {round}: no orders table: {error}"));
        assert_eq!(orders, 0);
    }
}

//! TLS to the dependencies, as managed Redis and PostgreSQL services require it: a Redis that
//! speaks only TLS (`rediss://` with a private CA, `--redis-tls-ca-file`) and a PostgreSQL with
//! TLS on (`sslmode=verify-full&sslrootcert=…` in the URL), both with certificates made for the
//! test; a client that does not trust the CA is refused.

use orderflow_runtime::postgres::PostgresArgs;
use orderflow_runtime::redis::RedisArgs;
use orderflow_tests::pki::Pki;
use orderflow_tests::private::{PrivatePostgres, PrivateRedis};

fn redis_args(url: &str, ca_file: Option<String>) -> RedisArgs {
    RedisArgs {
        redis_url: url.to_owned(),
        redis_url_file: None,
        redis_tls_ca_file: ca_file.map(Into::into),
        redis_cluster: false,
        redis_key_prefix: "tls".into(),
        redis_timeout_ms: 2_000,
    }
}

#[tokio::test]
async fn redis_over_tls_with_a_private_ca() {
    let pki = Pki::generate();
    let redis = PrivateRedis::start_tls(&pki).await;
    let mut connection =
        orderflow_runtime::redis::connect(&redis_args(&redis.url, Some(pki.path("ca.pem"))))
            .await
            .expect("connecting over TLS with the CA");
    // A script, as the services run theirs, over the TLS connection.
    let answer: i64 = redis::Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        .key("{tls}:counter")
        .arg(41)
        .invoke_async(&mut connection)
        .await
        .expect("a script over TLS");
    assert_eq!(answer, 41);

    let untrusted = orderflow_runtime::redis::connect(&redis_args(&redis.url, None)).await;
    assert!(
        untrusted.is_err(),
        "a client that does not trust the private CA connected"
    );
    let plaintext_url = redis.url.replacen("rediss://", "redis://", 1);
    let plaintext = orderflow_runtime::redis::connect(&redis_args(&plaintext_url, None)).await;
    assert!(plaintext.is_err(), "plaintext reached a TLS-only Redis");
}

fn postgres_args(url: String) -> PostgresArgs {
    PostgresArgs {
        database_url: url,
        database_url_file: None,
        database_max_connections: 2,
        database_acquire_timeout_ms: 5_000,
        migrate_only: false,
    }
}

#[tokio::test]
async fn postgres_over_tls_verifying_the_server() {
    let pki = Pki::generate();
    let postgres = PrivatePostgres::start_tls(&pki).await;
    let url = format!(
        "{}/postgres?sslmode=verify-full&sslrootcert={}",
        postgres.url,
        pki.path("ca.pem")
    );
    let pool = orderflow_runtime::postgres::connect_and_migrate(
        &postgres_args(url),
        &inventory_svc::SCHEMA,
    )
    .await
    .expect("connecting over TLS and migrating");
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .expect("reading the connection's TLS state");
    assert!(encrypted, "the connection is not encrypted");

    let stranger = Pki::generate();
    let untrusted = format!(
        "{}/postgres?sslmode=verify-full&sslrootcert={}",
        postgres.url,
        stranger.path("ca.pem")
    );
    assert!(
        orderflow_runtime::postgres::connect_and_migrate(
            &postgres_args(untrusted),
            &inventory_svc::SCHEMA
        )
        .await
        .is_err(),
        "a client that does not trust the server's CA connected"
    );
}

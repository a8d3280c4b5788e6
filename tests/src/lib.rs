//! Harness of the black-box integration tests: real PostgreSQL, Redis and Kafka-protocol broker
//! over TCP, each test isolated in its own database, Redis key prefix, topic prefix and consumer
//! group, so the whole suite runs in parallel against one shared set of dependencies.
//!
//! A missing dependency fails the test with the command that starts it; nothing is skipped.

pub mod deps;
pub mod inventory;
pub mod link;
pub mod locking;
pub mod orders;
pub mod otlp;
pub mod pipeline;
pub mod pki;
pub mod private;
pub mod process;
pub mod service;
pub mod stack;

use std::future::Future;
use std::time::Duration;

/// Polls `check` until it yields `Some`, failing the test with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The status line and body of an HTTP/1.1 `GET path` at `address` (host:port), such as a
/// service's Prometheus endpoint; one request per connection.
pub async fn http_get(address: &str, path: &str) -> anyhow::Result<(String, String)> {
    use anyhow::Context;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .with_context(|| format!("connecting to {address}"))?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .with_context(|| format!("sending GET {path} to {address}"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .await
        .with_context(|| format!("reading the answer to GET {path} from {address}"))?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.lines().next().unwrap_or_default().to_owned();
    Ok((status, body.to_owned()))
}

/// Fails unless `status` has `code` and its message contains `fragment`; `case` names the check.
pub fn assert_status(case: &str, status: &tonic::Status, code: tonic::Code, fragment: &str) {
    assert_eq!(status.code(), code, "{case}: {status:?}");
    assert!(
        status.message().contains(fragment),
        "{case}: {:?} does not contain {fragment:?}",
        status.message()
    );
}

/// A fresh identifier for one test's resources: short, lowercase, safe in names of databases,
/// topics and keys.
pub fn unique_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// A CreateOrder request for `items` as (sku, quantity) pairs.
pub fn order_request(
    idempotency_key: &str,
    user_id: &str,
    items: &[(&str, i64)],
) -> orderflow_proto::order::v1::CreateOrderRequest {
    orderflow_proto::order::v1::CreateOrderRequest {
        idempotency_key: idempotency_key.into(),
        user_id: user_id.into(),
        items: items
            .iter()
            .map(|(sku, quantity)| orderflow_proto::order::v1::OrderLine {
                sku: (*sku).into(),
                quantity: *quantity,
            })
            .collect(),
    }
}

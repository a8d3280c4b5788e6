//! Prometheus metrics: every service serves `/metrics`, and the named series move when orders
//! flow. One test in this binary: in-process services share the process's registry, so no other
//! test's traffic may mix in.

use std::net::SocketAddr;
use std::time::Duration;

use orderflow_tests::pipeline::WorkerProcess;
use orderflow_tests::stack::{Options, Stack};
use orderflow_tests::{eventually, order_request};
use tonic::Code;

/// The status line and body of `GET path` at `address`.
async fn http_get(address: SocketAddr, path: &str) -> (String, String) {
    orderflow_tests::http_get(&address.to_string(), path)
        .await
        .unwrap_or_else(|error| panic!("GET {path} at the metrics port {address}: {error:#}"))
}

async fn scrape(address: SocketAddr) -> String {
    let (status, body) = http_get(address, "/metrics").await;
    assert!(
        status.contains("200"),
        "GET /metrics at {address}: {status}"
    );
    body
}

/// The value of the series `series` (name and labels exactly as exposed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or(0.0)
}

#[tokio::test]
async fn every_service_serves_metrics_that_move_with_traffic() {
    let stack = Stack::start_with(Options {
        metrics: true,
        external_worker: true,
        ..Options::default()
    })
    .await;
    let worker = WorkerProcess::start(&stack).await;
    let addresses = stack.metrics.expect("metrics addresses");

    let (status, _) = http_get(addresses.order_api, "/other").await;
    assert!(status.contains("404"), "{status}");
    // Present from the start (the start-up health checks are calls too); a family shows up
    // once it has a sample.
    let families = [
        "orderflow_grpc_server_handled_total",
        "orderflow_grpc_server_handling_seconds",
        "orderflow_db_pool_connections",
        "orderflow_db_pool_max_connections",
    ];
    for address in [
        addresses.order_api,
        addresses.inventory,
        addresses.notify,
        worker.metrics_address,
    ] {
        let text = scrape(address).await;
        for family in families {
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{family} missing at {address}:\n{text}"
            );
        }
    }

    let before = scrape(addresses.order_api).await;
    let create_ok = "orderflow_grpc_server_handled_total{service=\"orderflow.order.v1.OrderService\",method=\"CreateOrder\",code=\"OK\"}";
    let create_invalid = "orderflow_grpc_server_handled_total{service=\"orderflow.order.v1.OrderService\",method=\"CreateOrder\",code=\"InvalidArgument\"}";
    let create_latency = "orderflow_grpc_server_handling_seconds_count{service=\"orderflow.order.v1.OrderService\",method=\"CreateOrder\"}";
    let produced =
        "orderflow_kafka_produced_messages_total{topic=\"order-created\",outcome=\"acked\"}";
    let reserved = "orderflow_reservations_total{outcome=\"reserved\"}";
    let sold_out = "orderflow_reservations_total{outcome=\"insufficient_stock\"}";
    let cache_hits = "orderflow_order_cache_lookups_total{outcome=\"hit\"}";

    stack.set_stock("M-1", 2, 500).await;
    let order = stack
        .create_order(order_request("metrics-1", "buyer-m", &[("M-1", 2)]))
        .await
        .expect("CreateOrder");
    let refused = stack
        .create_order(order_request("metrics-2", "buyer-m", &[("M-1", 1)]))
        .await
        .expect_err("sold out");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let invalid = stack
        .create_order(order_request("metrics-3", "", &[("M-1", 1)]))
        .await
        .expect_err("no user");
    assert_eq!(invalid.code(), Code::InvalidArgument);
    stack.get_order(&order.order_id).await.expect("GetOrder");
    stack.pay_order(&order, "pay-m").await.expect("PayOrder");

    let after = scrape(addresses.order_api).await;
    for (series, at_least) in [
        (create_ok, 1.0),
        (create_invalid, 1.0),
        (create_latency, 3.0),
        (produced, 1.0),
        (reserved, 1.0),
        (sold_out, 1.0),
        (cache_hits, 1.0),
    ] {
        let moved = value(&after, series) - value(&before, series);
        assert!(
            moved >= at_least,
            "{series} moved by {moved}, expected ≥ {at_least}"
        );
    }
    assert!(
        value(
            &after,
            "orderflow_db_pool_max_connections{pool=\"order-api\"}"
        ) >= 1.0,
        "the pool's size limit is exposed"
    );

    // The worker process: its own registry, its group's consumption and lag.
    let consumed = "orderflow_kafka_consumed_messages_total{group=";
    eventually(
        "the worker to count what it applied",
        Duration::from_secs(60),
        || async {
            let text = scrape(worker.metrics_address).await;
            let applied: f64 = text
                .lines()
                .filter(|line| line.starts_with(consumed))
                .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            let lag_known = text
                .lines()
                .any(|line| line.starts_with("orderflow_kafka_consumer_lag_messages{"));
            (applied >= 2.0 && lag_known).then_some(())
        },
    )
    .await;
    assert!(worker.terminate().await);
    stack.stop().await;
}

//! order-bench: the order API against running services, one RPC after the other: CreateOrder
//! (of one unit of a SKU with plenty of stock), then GetOrder and BatchGetOrders(100) of the
//! orders just placed.
//!
//! Closed loop: each worker sends its next request as soon as the previous one answered. The
//! orders were just placed, so reads come from the Redis cache (the normal case).
//! `scripts/bench-orders.sh` (`make bench-orders`) starts the services in release mode and runs
//! it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use orderflow_loadgen::bench::{report, run_until};
use orderflow_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use orderflow_proto::inventory::v1::SetStockRequest;
use orderflow_proto::order::v1::order_service_client::OrderServiceClient;
use orderflow_proto::order::v1::{BatchGetOrdersRequest, GetOrderRequest};
use orderflow_tests::order_request;

#[derive(Debug, Parser)]
#[command(
    name = "order-bench",
    about = "GetOrder and BatchGetOrders(100) latency"
)]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    order_api: String,
    #[arg(long, default_value = "http://127.0.0.1:50052")]
    inventory: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// How long to measure each RPC.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Ids per BatchGetOrders.
    #[arg(long, default_value_t = 100)]
    batch: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let run = orderflow_tests::unique_id();
    let sku = format!("BENCH-{run}");
    let order = OrderServiceClient::connect(args.order_api.clone())
        .await
        .with_context(|| format!("connecting to order-api at {}", args.order_api))?;
    InventoryServiceClient::connect(args.inventory.clone())
        .await
        .with_context(|| format!("connecting to inventory-svc at {}", args.inventory))?
        .set_stock(SetStockRequest {
            sku: sku.clone(),
            quantity: 1_000_000_000,
            price_cents: 100,
        })
        .await?;

    let placed = Arc::new(Mutex::new(Vec::new()));
    let (mut workers, started) = (Vec::new(), Instant::now());
    let until = started + Duration::from_secs(args.seconds);
    for worker in 0..args.concurrency {
        let (client, sku, run, placed) = (order.clone(), sku.clone(), run.clone(), placed.clone());
        let mut index = 0;
        workers.push(tokio::spawn(run_until(until, move || {
            index += 1;
            let key = format!("{run}-{worker}-{index}");
            let request = order_request(&key, &format!("bench-{worker}"), &[(&sku, 1)]);
            let (mut client, placed) = (client.clone(), placed.clone());
            async move {
                let Ok(answer) = client.create_order(request).await else {
                    return false;
                };
                let order_id = answer.into_inner().order.map(|order| order.order_id);
                placed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend(order_id);
                true
            }
        })));
    }
    report("CreateOrder", args.concurrency, started, workers).await?;
    let ids: Vec<String> = placed
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    anyhow::ensure!(
        ids.len() > args.batch,
        "too few orders placed to read them back"
    );

    let deadline = || Instant::now() + Duration::from_secs(args.seconds);
    let (mut workers, started, until) = (Vec::new(), Instant::now(), deadline());
    for worker in 0..args.concurrency {
        let (client, ids) = (order.clone(), ids.clone());
        let mut next = worker;
        workers.push(tokio::spawn(run_until(until, move || {
            next = (next + 7919) % ids.len();
            let (mut client, order_id) = (client.clone(), ids[next].clone());
            async move { client.get_order(GetOrderRequest { order_id }).await.is_ok() }
        })));
    }
    report("GetOrder", args.concurrency, started, workers).await?;

    let (mut workers, started, until) = (Vec::new(), Instant::now(), deadline());
    for worker in 0..args.concurrency {
        let (client, ids, batch) = (order.clone(), ids.clone(), args.batch);
        let mut start = worker * batch;
        workers.push(tokio::spawn(run_until(until, move || {
            start = (start + batch) % ids.len().saturating_sub(batch).max(1);
            let order_ids = ids[start..(start + batch).min(ids.len())].to_vec();
            let mut client = client.clone();
            async move {
                client
                    .batch_get_orders(BatchGetOrdersRequest { order_ids })
                    .await
                    .is_ok_and(|answer| answer.get_ref().missing_order_ids.is_empty())
            }
        })));
    }
    report(
        &format!("BatchGetOrders({})", args.batch),
        args.concurrency,
        started,
        workers,
    )
    .await
}

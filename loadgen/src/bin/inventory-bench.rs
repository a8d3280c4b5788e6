//! inventory-bench: how many reservations per second one hot SKU takes, measured three ways.
//!
//! - `grpc`: `Reserve` RPCs against running inventory-svc processes, the real path (Redis
//!   admission script, then the PostgreSQL group commit, then the answer).
//! - `lua`: the admission script alone, straight to Redis (the ceiling of the Redis step).
//! - `lock`: the same admission done with plain commands under the distributed lock (acquire,
//!   read, write, release): the alternative the Lua script replaces.
//!
//! Each worker sends its next request as soon as the previous one answered (closed loop). Prints
//! one line: operations, rate, latency percentiles and errors. `scripts/bench-inventory.sh`
//! (`make bench-inventory`) builds it in release mode and runs all three.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use orderflow_loadgen::bench::{report, run_until};
use orderflow_lock::{LockSettings, Locks};
use orderflow_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use orderflow_proto::inventory::v1::SetStockRequest;
use orderflow_runtime::redis::RedisArgs;
use orderflow_runtime::redis::RedisConnection;
use orderflow_tests::inventory::{admission_script, admit_in_redis, reserve_request};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Mode {
    Grpc,
    Lua,
    Lock,
}

#[derive(Debug, Parser)]
#[command(
    name = "inventory-bench",
    about = "Reservations per second on one hot SKU"
)]
struct Args {
    mode: Mode,
    /// inventory-svc addresses (grpc mode), comma separated; requests are spread over them.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:50052")]
    inventory: Vec<String>,
    /// Redis (lua and lock modes).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to measure.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sku = format!("BENCH-{}", orderflow_tests::unique_id());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut workers = Vec::new();
    // Redis keys to delete afterwards (reservations expire by themselves).
    let mut scratch = None;
    match args.mode {
        Mode::Grpc => {
            let mut clients = Vec::new();
            for address in &args.inventory {
                clients.push(
                    InventoryServiceClient::connect(address.clone())
                        .await
                        .with_context(|| format!("connecting to inventory-svc at {address}"))?,
                );
            }
            clients[0]
                .set_stock(SetStockRequest {
                    sku: sku.clone(),
                    quantity: 1_000_000_000,
                    price_cents: 100,
                })
                .await?;
            for worker in 0..args.concurrency {
                let client = clients[worker % clients.len()].clone();
                let sku = sku.clone();
                workers.push(tokio::spawn(run_until(deadline, move || {
                    let request = reserve_request(&[(&sku, 1)]);
                    let mut client = client.clone();
                    async move { client.reserve(request).await.is_ok() }
                })));
            }
        }
        Mode::Lua | Mode::Lock => {
            let keys = RedisArgs {
                redis_url: args.redis_url.clone(),
                redis_url_file: None,
                redis_tls_ca_file: None,
                redis_cluster: false,
                redis_key_prefix: format!("bench{}", orderflow_tests::unique_id()),
                redis_timeout_ms: 5000,
            };
            let redis = orderflow_runtime::redis::connect(&keys).await?;
            let stock_key = keys.key(&["stock", &sku]);
            let () = redis::cmd("HSET")
                .arg(&stock_key)
                .arg(&["available", "1000000000000", "reserved", "0", "sold", "0"])
                .arg(&["price_cents", "100"])
                .query_async(&mut redis.clone())
                .await?;
            let locks = Locks::new(
                redis.clone(),
                &keys.redis_key_prefix,
                LockSettings {
                    ttl: Duration::from_secs(5),
                    wait: Duration::from_secs(30),
                },
            );
            let script = admission_script();
            scratch = Some((
                redis.clone(),
                [stock_key.clone(), keys.key(&["unrecorded"])],
            ));
            for _ in 0..args.concurrency {
                let (redis, locks, script) = (redis.clone(), locks.clone(), script.clone());
                let (keys, sku, stock_key) = (keys.clone(), sku.clone(), stock_key.clone());
                let mode = args.mode;
                workers.push(tokio::spawn(run_until(deadline, move || {
                    let (redis, locks, script) = (redis.clone(), locks.clone(), script.clone());
                    let (keys, sku, stock_key) = (keys.clone(), sku.clone(), stock_key.clone());
                    let order_id = uuid::Uuid::new_v4().to_string();
                    async move {
                        match mode {
                            Mode::Lock => {
                                let reservation = keys.key(&["reservation", &order_id]);
                                admit_under_lock(&redis, &locks, &stock_key, &reservation).await
                            }
                            _ => {
                                let line = (sku.as_str(), 1);
                                admit_in_redis(&redis, &script, &keys, &order_id, line)
                                    .await
                                    .map_err(anyhow::Error::from)
                                    .and_then(|reply| {
                                        anyhow::ensure!(
                                            reply.first().map(String::as_str) == Some("admitted"),
                                            "{reply:?}"
                                        );
                                        Ok(())
                                    })
                            }
                        }
                        .is_ok()
                    }
                })));
            }
        }
    }
    let what = format!("{:?} reservations", args.mode);
    report(&what, args.concurrency, started, workers).await?;
    if let Some((mut redis, keys)) = scratch {
        let () = redis::cmd("DEL").arg(&keys).query_async(&mut redis).await?;
    }
    Ok(())
}

/// The admission without a script: check and decrement while holding the SKU's lock.
async fn admit_under_lock(
    redis: &RedisConnection,
    locks: &Locks,
    stock_key: &str,
    reservation: &str,
) -> anyhow::Result<()> {
    let guard = locks.acquire(stock_key, 0).await?;
    let mut redis = redis.clone();
    let available: i64 = redis::cmd("HGET")
        .arg(stock_key)
        .arg("available")
        .query_async(&mut redis)
        .await?;
    anyhow::ensure!(available >= 1, "sold out");
    let () = redis::pipe()
        .hincr(stock_key, "available", -1)
        .ignore()
        .hincr(stock_key, "reserved", 1)
        .ignore()
        .hset(reservation, "state", "reserved")
        .ignore()
        .pexpire(reservation, 60_000)
        .ignore()
        .query_async(&mut redis)
        .await?;
    guard.release().await?;
    Ok(())
}

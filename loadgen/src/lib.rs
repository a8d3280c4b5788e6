//! `loadgen`: loads a running orderflow over a few HTTP/2 connections, reports throughput and
//! latency per RPC, then waits for the pipeline to drain and verifies the invariants against
//! PostgreSQL. Exit code 0 when every invariant held, 1 when one failed, 2 when the run could
//! not be made. Usage and output: docs/loadgen.md.

pub mod args;
/// What the small closed-loop benchmarks (`order-bench`, `inventory-bench`) share.
pub mod bench;
pub mod chaos;
pub mod client;
pub mod cpu;
pub mod drive;
pub mod fill;
pub mod record;
pub mod report;
pub mod verify;
pub mod workload;

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use orderflow_proto::inventory::v1::SetStockRequest;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tonic_health::pb::health_client::HealthClient;

use args::{Cli, FlashSaleArgs, Load, NoopArgs, Scenario, Target};
use client::Pool;
use drive::Mode;
use record::{Ledger, Recorder};
use report::Summary;
use verify::{Expected, FlashSaleExpected};
use workload::{FlashSale, Mixed, Noop, Orders, Workload};

/// The binary's entry point.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("loadgen: starting the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli.scenario)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("loadgen: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(scenario: Scenario) -> anyhow::Result<bool> {
    match scenario {
        Scenario::FlashSale(args) => flash_sale(args).await,
        Scenario::Mixed(args) => mixed("mixed", args.orders, args.duration_secs, None).await,
        Scenario::Soak(mut args) => {
            // A soak is a steady rate: open loop unless told otherwise.
            args.orders.load.rate.get_or_insert(200.0);
            let window = Duration::from_secs_f64(args.window_secs.max(0.1));
            mixed("soak", args.orders, args.duration_secs, Some(window)).await
        }
        Scenario::Chaos(args) => chaos::run(args).await,
        Scenario::Noop(args) => noop(args).await,
        Scenario::NoopServer(args) => noop_server(&args.listen).await,
        Scenario::FillBroker(args) => fill::run(args).await,
    }
}

fn mode(load: &Load) -> Mode {
    match load.rate {
        Some(rate) => Mode::Open {
            rate,
            max_in_flight: load.max_in_flight.max(1),
        },
        None => Mode::Closed {
            concurrency: load.concurrency.max(1),
        },
    }
}

fn seed(load: &Load) -> u64 {
    load.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64)
    })
}

fn progress(load: &Load, label: &str) -> Option<String> {
    (!load.quiet).then(|| label.to_owned())
}

/// A fresh id for this run: every SKU, user and idempotency key starts with it.
fn run_id() -> String {
    format!("lg{}", orderflow_tests::unique_id())
}

async fn database(target: &Target) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(orderflow_tests::deps::every_schema(&target.database_url)?)
        .await
        .with_context(|| {
            format!(
                "connecting to PostgreSQL at {} (--database-url)",
                orderflow_config::redact_url(&target.database_url)
            )
        })
}

/// Puts `skus` (name, units, price) on sale, a few at a time.
async fn set_stock(pool: &Pool, skus: &[(String, i64, i64)]) -> anyhow::Result<()> {
    futures::stream::iter(skus.iter().cloned())
        .map(|(sku, quantity, price_cents)| {
            let mut client = pool.inventory_admin.clone();
            async move {
                client
                    .set_stock(SetStockRequest {
                        sku: sku.clone(),
                        quantity,
                        price_cents,
                    })
                    .await
                    .with_context(|| format!("SetStock of {sku}"))
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Starts counting CPU; also the labels of orderflow's own processes (`--cpu-pid`), once each.
fn cpu_watch(load: &Load) -> anyhow::Result<(cpu::Watch, Vec<String>)> {
    let selection = cpu::Selection::parse(
        load.cpu_pids.iter().chain(&load.cpu_dependencies),
        &load.cpu_processes,
    )?;
    // loadgen itself comes first, then the --cpu-pid processes, then the dependencies.
    let mut own: Vec<String> = Vec::new();
    for (label, _) in &selection.pids[1..=load.cpu_pids.len()] {
        if !own.contains(label) {
            own.push(label.clone());
        }
    }
    Ok((cpu::Watch::start(selection), own))
}

async fn flash_sale(args: FlashSaleArgs) -> anyhow::Result<bool> {
    let FlashSaleArgs {
        target,
        load,
        buyers,
        units,
        sold_out_probe,
        inventory_metrics,
        duration_secs,
    } = args;
    let pool = Arc::new(Pool::connect(&target, load.connections).await?);
    let db = database(&target).await?;
    let run = run_id();
    let sku = format!("{run}-HOT");
    set_stock(&pool, &[(sku.clone(), units, 1999)]).await?;

    let ledger = Arc::new(Ledger::default());
    let orders = || Orders {
        pool: pool.clone(),
        ledger: ledger.clone(),
        run: run.clone(),
        user: target.user.clone(),
        timeout: load.timeout(),
        retry_for: load.retry_for(),
    };
    let sale = Arc::new(Workload::FlashSale(FlashSale {
        orders: orders(),
        sku: sku.clone(),
        next: AtomicU64::new(0),
        end: buyers,
    }));
    let recorder = Arc::new(Recorder::default());
    let (watch, own) = cpu_watch(&load)?;
    let elapsed = drive::drive(
        sale.clone(),
        recorder.clone(),
        mode(&load),
        duration_secs.map(Duration::from_secs_f64),
        seed(&load),
        progress(&load, "flash-sale"),
    )
    .await;
    let raced = match &*sale {
        Workload::FlashSale(sale) => sale.next.load(Ordering::Relaxed).min(buyers),
        _ => buyers,
    };
    let orders_placed = ledger.acknowledged() as u64;
    let drained = verify::drain(&db, &ledger.acknowledged_ids(), drain_timeout(&load)).await;
    let cpu = watch.usage();

    let stats = recorder.take();
    let sold_out = stats
        .latencies
        .get(&(record::Rpc::CreateOrder, record::Class::SoldOut))
        .map_or(0, Vec::len);
    let mut extra = serde_json::Map::new();
    let mut notes = vec![format!(
        "{raced} buyers for {units} units of {sku}: {orders_placed} orders, {sold_out} sold out"
    )];
    let mut probe_errors = 0;
    let mut probe_json = serde_json::Value::Null;
    if sold_out_probe > 0 {
        let probe = probe(
            &db,
            Workload::FlashSale(FlashSale {
                orders: orders(),
                sku: sku.clone(),
                next: AtomicU64::new(raced),
                end: raced + sold_out_probe,
            }),
            &load,
            inventory_metrics.as_deref(),
        )
        .await?;
        probe_errors = probe.errors;
        notes.push(format!(
            "sold-out probe: {} late buyers in {:.1} s ({:.0}/s), {} sold out; PostgreSQL \
             transactions meanwhile {} (background {:.0}): {:.4} per sold-out answer",
            probe.requests,
            probe.seconds,
            probe.requests as f64 / probe.seconds.max(1e-9),
            probe.sold_out,
            probe.xacts,
            probe.background,
            probe.per_answer()
        ));
        probe_json = json!({
            "requests": probe.requests,
            "sold_out": probe.sold_out,
            "errors": probe.errors,
            "seconds": probe.seconds,
            "per_s": probe.requests as f64 / probe.seconds.max(1e-9),
            "pg_xacts": probe.xacts,
            "background_xacts": probe.background,
            "pg_xacts_per_answer": probe.per_answer(),
            "inventory_release_calls": probe.releases,
        });
        if let Some(releases) = probe.releases {
            notes.push(format!(
                "inventory-svc served {releases} Release calls meanwhile ({:.2} per sold-out \
                 answer)",
                releases / probe.requests.max(1) as f64
            ));
        }
    }
    let errors: u64 = stats.errors.values().sum::<u64>() + probe_errors;
    extra.insert(
        "flash_sale".into(),
        json!({
            "sku": sku,
            "buyers": raced,
            "buyers_asked": buyers,
            "units": units,
            "orders": orders_placed,
            "sold_out": sold_out,
            "sold_out_probe": probe_json,
        }),
    );
    let drained = match drained {
        // The probe sold nothing if all is well; if it did, wait for that too.
        Ok(took) => verify::drain(&db, &ledger.acknowledged_ids(), drain_timeout(&load))
            .await
            .map(|_| took),
        Err(why) => Err(why),
    };
    let orphans_returned = verify::orphans_returned(
        &db,
        &pool.inventory,
        std::slice::from_ref(&sku),
        orphan_window(&load),
    )
    .await;
    let expected = Expected {
        skus: vec![(sku.clone(), units)],
        flash_sale: Some(FlashSaleExpected {
            sku: sku.clone(),
            units,
            buyers: raced + sold_out_probe,
            errors,
            cut_short: raced < buyers,
        }),
        clock_skew: Duration::from_millis(load.clock_skew_ms),
        drained,
        orphans_returned,
    };
    let checks = verified(&db, &pool, &ledger, &run, &[sku], &expected).await?;
    let summary = Summary {
        orders: orders_placed,
        cpu: Some((cpu, own)),
        checks,
        extra,
        notes,
        ..Summary::new(
            "flash-sale",
            run,
            mode(&load),
            load.connections,
            elapsed,
            stats,
        )
    };
    Ok(report::print(summary, load.json))
}

fn drain_timeout(load: &Load) -> Duration {
    Duration::from_secs(load.drain_timeout_secs)
}

fn orphan_window(load: &Load) -> Duration {
    Duration::from_secs(load.orphan_window_secs)
}

/// What the late buyers of a sold-out sale cost PostgreSQL.
struct Probe {
    requests: u64,
    sold_out: u64,
    errors: u64,
    seconds: f64,
    /// Transactions PostgreSQL counted for the database while they were answered.
    xacts: i64,
    /// What the services' background tasks commit in as long, measured just before.
    background: f64,
    /// Release calls inventory-svc answered meanwhile, when its metrics were given.
    releases: Option<f64>,
}

impl Probe {
    fn per_answer(&self) -> f64 {
        ((self.xacts as f64 - self.background).max(0.0)) / self.requests.max(1) as f64
    }
}

/// Transactions committed and rolled back in the current database so far. PostgreSQL's
/// statistics lag: a backend flushes them at most once a second, and what it did in its last
/// second before going idle only when it is next busy or 10 s later. So a short probe is
/// undercounted (a lower bound); the pauses around the readings shrink the gap.
async fn transactions(db: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database \
         WHERE datname = current_database()",
    )
    .fetch_one(db)
    .await?)
}

/// The sum of every `orderflow_grpc_server_handled_total` series of `method` that the
/// Prometheus endpoint at `address` (host:port) serves.
async fn calls_served(address: &str, method: &str) -> anyhow::Result<f64> {
    let (status, text) = orderflow_tests::http_get(address, "/metrics").await?;
    anyhow::ensure!(
        status.contains(" 200 "),
        "GET /metrics at {address}: {status}"
    );
    let label = format!("method=\"{method}\"");
    Ok(text
        .lines()
        .filter(|line| line.starts_with("orderflow_grpc_server_handled_total{"))
        .filter(|line| line.contains(&label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

async fn probe(
    db: &PgPool,
    sale: Workload,
    load: &Load,
    inventory_metrics: Option<&str>,
) -> anyhow::Result<Probe> {
    const SETTLE: Duration = Duration::from_millis(2500);
    const IDLE: Duration = Duration::from_secs(2);
    let requests = match &sale {
        Workload::FlashSale(sale) => sale.end - sale.next.load(Ordering::Relaxed),
        _ => 0,
    };
    tokio::time::sleep(SETTLE).await;
    let before_idle = transactions(db).await?;
    tokio::time::sleep(IDLE).await;
    let before = transactions(db).await?;
    let idle_rate = (before - before_idle) as f64 / IDLE.as_secs_f64();
    let releases_before = match inventory_metrics {
        Some(address) => Some(calls_served(address, "Release").await?),
        None => None,
    };
    let recorder = Arc::new(Recorder::default());
    let started = Instant::now();
    let elapsed = drive::drive(
        Arc::new(sale),
        recorder.clone(),
        mode(load),
        None,
        seed(load),
        progress(load, "sold-out probe"),
    )
    .await;
    let releases = match (inventory_metrics, releases_before) {
        (Some(address), Some(before)) => Some(calls_served(address, "Release").await? - before),
        _ => None,
    };
    tokio::time::sleep(SETTLE).await;
    let after = transactions(db).await?;
    let window = started.elapsed().as_secs_f64();
    let errors = recorder.failed.load(Ordering::Relaxed);
    let stats = recorder.take();
    let sold_out = stats
        .latencies
        .iter()
        .filter(|((_, class), _)| *class == record::Class::SoldOut)
        .map(|(_, answers)| answers.len() as u64)
        .sum();
    Ok(Probe {
        requests,
        sold_out,
        errors,
        seconds: elapsed.as_secs_f64(),
        xacts: after - before,
        background: idle_rate * window,
        releases,
    })
}

/// Loads the facts and checks the invariants.
async fn verified(
    db: &PgPool,
    pool: &Pool,
    ledger: &Ledger,
    run: &str,
    skus: &[String],
    expected: &Expected,
) -> anyhow::Result<Vec<verify::Check>> {
    let facts = verify::load(db, &pool.inventory, run, &ledger.acknowledged_ids(), skus)
        .await
        .context("reading the run's orders and stock")?;
    Ok(verify::check(&ledger.take(), &facts, expected))
}

async fn mixed(
    scenario: &'static str,
    orders: args::Orders,
    duration_secs: f64,
    window: Option<Duration>,
) -> anyhow::Result<bool> {
    run_mixed(
        scenario,
        orders,
        duration_secs,
        window,
        std::future::ready(Disrupted::default()),
    )
    .await
}

/// What ran next to a load to disrupt it, for the report.
#[derive(Debug, Default)]
pub struct Disrupted {
    pub notes: Vec<String>,
    /// Added to the JSON report under the scenario's name.
    pub report: serde_json::Map<String, serde_json::Value>,
}

/// The mixed workload for `duration_secs`, with `disruption` running next to the load (chaos
/// kills processes meanwhile; it must be done by the end of the load), then the drain and the
/// checks.
async fn run_mixed(
    scenario: &'static str,
    orders: args::Orders,
    duration_secs: f64,
    window: Option<Duration>,
    disruption: impl std::future::Future<Output = Disrupted>,
) -> anyhow::Result<bool> {
    let args::Orders {
        target,
        load,
        workload,
    } = orders;
    let weights = args::parse_mix(&workload.mix).map_err(anyhow::Error::msg)?;
    let preload = workload.preload;
    let pool = Arc::new(Pool::connect(&target, load.connections).await?);
    let db = database(&target).await?;
    let run = run_id();
    let skus: Vec<(String, i64, i64)> = (0..workload.skus.max(1))
        .map(|index| {
            let price = 100 + (index as i64 * 37) % 900;
            (format!("{run}-S{index:05}"), workload.stock, price)
        })
        .collect();
    set_stock(&pool, &skus).await?;
    let sku_names: Vec<String> = skus.iter().map(|(sku, _, _)| sku.clone()).collect();

    let ledger = Arc::new(Ledger::default());
    let mixed = Arc::new(Workload::Mixed(Mixed::new(
        Orders {
            pool: pool.clone(),
            ledger: ledger.clone(),
            run: run.clone(),
            user: target.user.clone(),
            timeout: load.timeout(),
            retry_for: load.retry_for(),
        },
        sku_names.clone(),
        weights,
        workload.users,
        workload.max_lines,
        workload
            .batch_size
            .min(orderflow_proto::limits::MAX_BATCH_ORDERS),
        workload.repeat_percent,
    )));
    let mut notes = Vec::new();
    if let (Workload::Mixed(workload), true) = (&*mixed, preload > 0) {
        workload.preload(preload);
        let took = drive::drive(
            mixed.clone(),
            Arc::new(Recorder::default()),
            Mode::Closed {
                concurrency: load.concurrency.max(1),
            },
            None,
            seed(&load),
            progress(&load, "preload"),
        )
        .await;
        workload.start_mix();
        notes.push(format!(
            "preloaded {} orders in {:.1} s (not measured)",
            ledger.acknowledged(),
            took.as_secs_f64()
        ));
    }
    let preloaded = ledger.acknowledged() as u64;
    let recorder = Arc::new(Recorder::new(window));
    let (watch, own) = cpu_watch(&load)?;
    let (elapsed, disrupted) = tokio::join!(
        drive::drive(
            mixed,
            recorder.clone(),
            mode(&load),
            Some(Duration::from_secs_f64(duration_secs)),
            seed(&load),
            progress(&load, scenario),
        ),
        disruption
    );
    notes.extend(disrupted.notes);
    let orders_placed = ledger.acknowledged() as u64 - preloaded;
    let drained = verify::drain(&db, &ledger.acknowledged_ids(), drain_timeout(&load)).await;
    let orphans_returned =
        verify::orphans_returned(&db, &pool.inventory, &sku_names, orphan_window(&load)).await;
    let cpu = watch.usage();
    let stats = recorder.take();
    let expected = Expected {
        skus: skus
            .iter()
            .map(|(sku, units, _)| (sku.clone(), *units))
            .collect(),
        flash_sale: None,
        clock_skew: Duration::from_millis(load.clock_skew_ms),
        drained,
        orphans_returned,
    };
    let checks = verified(&db, &pool, &ledger, &run, &sku_names, &expected).await?;
    notes.push(format!(
        "{orders_placed} orders placed over {} SKUs",
        skus.len()
    ));
    let mut extra = serde_json::Map::new();
    if !disrupted.report.is_empty() {
        extra.insert(scenario.into(), disrupted.report.into());
    }
    extra.insert(
        "mix".into(),
        json!({
            "spec": workload.mix,
            "skus": skus.len(),
            "users": workload.users,
            "preloaded": preloaded,
        }),
    );
    let summary = Summary {
        orders: orders_placed,
        cpu: Some((cpu, own)),
        checks,
        extra,
        notes,
        ..Summary::new(scenario, run, mode(&load), load.connections, elapsed, stats)
    };
    Ok(report::print(summary, load.json))
}

async fn noop(args: NoopArgs) -> anyhow::Result<bool> {
    let mut clients = Vec::new();
    for _ in 0..args.load.connections.max(1) {
        clients.push(HealthClient::new(client::connect(&args.target).await?));
    }
    let workload = Arc::new(Workload::Noop(Noop {
        clients,
        next: AtomicU64::new(0),
        timeout: args.load.timeout(),
    }));
    let recorder = Arc::new(Recorder::default());
    let (watch, own) = cpu_watch(&args.load)?;
    let elapsed = drive::drive(
        workload,
        recorder.clone(),
        mode(&args.load),
        Some(Duration::from_secs_f64(args.duration_secs)),
        seed(&args.load),
        progress(&args.load, "noop"),
    )
    .await;
    let summary = Summary {
        cpu: Some((watch.usage(), own)),
        ..Summary::new(
            "noop",
            args.target.clone(),
            mode(&args.load),
            args.load.connections,
            elapsed,
            recorder.take(),
        )
    };
    Ok(report::print(summary, args.load.json))
}

async fn noop_server(listen: &str) -> anyhow::Result<bool> {
    let address = listen
        .parse()
        .with_context(|| format!("--listen {listen:?} is not host:port"))?;
    // The reporter answers SERVING for the whole server ("") from the start.
    let (_reporter, health) = tonic_health::server::health_reporter();
    eprintln!("loadgen noop-server: grpc.health.v1.Health on {address}");
    tonic::transport::Server::builder()
        .add_service(health)
        .serve_with_shutdown(address, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving")?;
    Ok(true)
}

//! `loadgen chaos`: the mixed workload against a stack loadgen starts for itself (a fresh
//! database, Redis prefix, topics and groups; every service a process; by default a broker of
//! its own), while it kills one kind of process (SIGKILL, at a random instant of each equal
//! slice of the load) and starts it again. Clients retry a CreateOrder that failed ambiguously
//! with the same key until it is answered, as the API asks. After the load every process runs
//! again, the pipeline drains and every invariant is checked as for `mixed` — so that every
//! acknowledged order is the one live order of its key, persisted as acknowledged, nothing is
//! oversold, and every unit held belongs to a live order once the orphan window has passed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;

use super::args::{self, ChaosArgs, Target, Victims};
use super::drive::Rng;
use super::Disrupted;
use orderflow_tests::private::PrivateBroker;
use orderflow_tests::service::Configure;
use orderflow_tests::stack::{Options, Stack};

pub async fn run(args: ChaosArgs) -> anyhow::Result<bool> {
    let ChaosArgs {
        mut load,
        workload,
        kill,
        kills,
        duration_secs,
        down_ms,
        create_timeout_ms,
        kafka_brokers,
    } = args;
    load.retry_same_key = true;
    let broker = match kafka_brokers {
        Some(_) => None,
        None => Some(PrivateBroker::start().await),
    };
    let brokers = kafka_brokers.or_else(|| broker.as_ref().map(|broker| broker.address.clone()));
    let consumers = kill == Victims::Consumers;
    let mut stack = Stack::start_with(Options {
        processes: Some(Vec::new()),
        kafka_brokers: brokers,
        kafka_ack_timeout_ms: Some((create_timeout_ms / 2).min(2_000)),
        create_timeout_ms: Some(create_timeout_ms),
        extra_order_apis: 1,
        extra_workers: usize::from(consumers),
        extra_notifies: usize::from(consumers),
        inventory_config: Configure::new(|config: &mut inventory_svc::Config| {
            config.orphan_grace_ms = 1000;
            config.reservation_sweep_interval_ms = 200;
            // An admission its killed process never recorded comes back in seconds.
            config.unrecorded_grace_secs = 2;
        }),
        ..Options::default()
    })
    .await;
    let target = Target {
        order_api: stack
            .order_api_addresses
            .iter()
            .map(|address| format!("http://{address}"))
            .collect::<Vec<_>>()
            .join(","),
        inventory: format!("http://{}", stack.addresses.inventory),
        database_url: stack.database_url().to_owned(),
        token: None,
        admin_token: None,
        user: None,
    };
    let victims: &[&str] = match kill {
        Victims::OrderApi => &["order-api"],
        Victims::InventorySvc => &["inventory-svc"],
        Victims::Consumers => &["consumer-worker", "notify-svc"],
    };
    let schedule = Schedule {
        kills,
        over: Duration::from_secs_f64(duration_secs),
        down: Duration::from_millis(down_ms),
        seed: super::seed(&load),
    };
    let passed = super::run_mixed(
        "chaos",
        args::Orders {
            target,
            load,
            workload,
        },
        duration_secs,
        None,
        kill_on_schedule(&mut stack, victims, schedule),
    )
    .await;
    stack.stop().await;
    drop(broker);
    passed
}

struct Schedule {
    kills: u32,
    /// The kills are spread over this long.
    over: Duration,
    /// How long a killed process stays down.
    down: Duration,
    seed: u64,
}

/// Kills a random process of `victims` at a random instant of each of `kills` equal slices of
/// the schedule, and starts it again after `down`; returns once every process runs again.
async fn kill_on_schedule(stack: &mut Stack, victims: &[&str], schedule: Schedule) -> Disrupted {
    let mut rng = Rng::new(schedule.seed ^ 0x5eed);
    let started = tokio::time::Instant::now();
    let slice = schedule.over / (schedule.kills.max(1) + 1);
    let mut killed: BTreeMap<&str, u64> = BTreeMap::new();
    let mut longest_restart = Duration::ZERO;
    for kill in 0..schedule.kills {
        // Within the first 60 % of its slice: the restart fits before the next one.
        let jitter = slice.mul_f64(rng.below(600) as f64 / 1000.0);
        tokio::time::sleep_until(started + slice * kill + jitter).await;
        let binary = victims[rng.below(victims.len() as u64) as usize];
        let index = rng.below(stack.process_count(binary) as u64) as usize;
        let process = stack.process(binary, index);
        process.kill().await;
        tokio::time::sleep(schedule.down).await;
        let restarting = Instant::now();
        process.restart().await;
        longest_restart = longest_restart.max(restarting.elapsed());
        *killed.entry(binary).or_default() += 1;
    }
    let total: u64 = killed.values().sum();
    let split: Vec<String> = killed
        .iter()
        .map(|(binary, count)| format!("{binary} × {count}"))
        .collect();
    let mut report = serde_json::Map::new();
    report.insert("kills".into(), json!(total));
    report.insert("killed".into(), json!(killed));
    report.insert("down_ms".into(), json!(schedule.down.as_millis() as u64));
    report.insert(
        "longest_restart_ms".into(),
        json!(longest_restart.as_millis() as u64),
    );
    Disrupted {
        notes: vec![format!(
            "killed (SIGKILL) and started again {total} times: {}; each down {:?}, the longest \
             restart took {:.1} s",
            split.join(", "),
            schedule.down,
            longest_restart.as_secs_f64()
        )],
        report,
    }
}

//! The report: a table for people on stdout and, with `--json`, one JSON object as the last
//! line for scripts (`scripts/bench.sh` reads it).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::cpu::Usage;
use super::drive::Mode;
use super::record::{Class, Stats};
use super::verify::Check;

/// Everything one run reports.
pub struct Summary {
    pub scenario: &'static str,
    pub run: String,
    pub mode: Mode,
    pub connections: usize,
    /// The load phase (not set-up, drain or verification).
    pub elapsed: Duration,
    pub stats: Stats,
    /// Orders acknowledged during the load phase.
    pub orders: u64,
    /// CPU used, and the labels of the processes that are orderflow's own (`--cpu-pid`), for
    /// the CPU per order.
    pub cpu: Option<(Usage, Vec<String>)>,
    pub checks: Vec<Check>,
    /// Scenario-specific fields of the JSON object, and lines of the table.
    pub extra: Map<String, Value>,
    pub notes: Vec<String>,
}

impl Summary {
    /// A summary of a load phase with nothing else to report yet.
    pub fn new(
        scenario: &'static str,
        run: String,
        mode: Mode,
        connections: usize,
        elapsed: Duration,
        stats: Stats,
    ) -> Self {
        Self {
            scenario,
            run,
            mode,
            connections,
            elapsed,
            stats,
            orders: 0,
            cpu: None,
            checks: Vec::new(),
            extra: Map::new(),
            notes: Vec::new(),
        }
    }
}

/// Latency percentiles in ms of `micros` (sorted in place).
fn percentiles(micros: &mut [u32]) -> Value {
    micros.sort_unstable();
    let at = |quantile: f64| {
        if micros.is_empty() {
            return 0.0;
        }
        let rank = (quantile * micros.len() as f64).ceil() as usize;
        f64::from(micros[rank.clamp(1, micros.len()) - 1]) / 1000.0
    };
    let mean = if micros.is_empty() {
        0.0
    } else {
        micros.iter().map(|&m| f64::from(m)).sum::<f64>() / micros.len() as f64 / 1000.0
    };
    json!({
        "p50": round(at(0.50)),
        "p90": round(at(0.90)),
        "p99": round(at(0.99)),
        "p999": round(at(0.999)),
        "max": round(at(1.0)),
        "mean": round(mean),
    })
}

fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

fn ms(latency: &Value, key: &str) -> String {
    format!("{:.2}", latency[key].as_f64().unwrap_or(0.0))
}

/// Prints the table and, with `json`, the JSON line; whether every invariant held.
pub fn print(mut summary: Summary, json: bool) -> bool {
    let seconds = summary.elapsed.as_secs_f64().max(1e-9);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "loadgen {}  run {}  {} over {} connection(s), {:.1} s",
        summary.scenario,
        summary.run,
        summary.mode.describe(),
        summary.connections,
        seconds
    );

    // Per RPC: answers of each class, with their latency.
    let mut rpcs = Map::new();
    let mut all_answers: Vec<u32> = Vec::new();
    let mut answered = 0u64;
    let _ = writeln!(
        out,
        "{:<26} {:>9} {:>9} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "rpc", "answers", "per s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
    );
    let keys: Vec<_> = summary.stats.latencies.keys().copied().collect();
    for (rpc, class) in keys {
        let mut micros = summary
            .stats
            .latencies
            .remove(&(rpc, class))
            .unwrap_or_default();
        let count = micros.len() as u64;
        if class != Class::Error {
            all_answers.extend_from_slice(&micros);
            answered += count;
        }
        let latency = percentiles(&mut micros);
        let label = match class {
            Class::Ok => rpc.name().to_owned(),
            Class::SoldOut => format!("{} (sold out)", rpc.name()),
            Class::Error => format!("{} (errors)", rpc.name()),
        };
        let _ = writeln!(
            out,
            "{label:<26} {count:>9} {:>9.0} {:>8} {:>8} {:>8} {:>9} {:>9}",
            count as f64 / seconds,
            ms(&latency, "p50"),
            ms(&latency, "p90"),
            ms(&latency, "p99"),
            ms(&latency, "p999"),
            ms(&latency, "max"),
        );
        let key = match class {
            Class::Ok => "ok",
            Class::SoldOut => "sold_out",
            Class::Error => "errors",
        };
        if let Some(fields) = rpcs
            .entry(rpc.name())
            .or_insert_with(|| json!({}))
            .as_object_mut()
        {
            fields.insert(key.into(), json!(count));
            fields.insert(format!("{key}_per_s"), json!(round(count as f64 / seconds)));
            fields.insert(format!("{key}_latency_ms"), latency);
        }
    }
    let overall = percentiles(&mut all_answers);
    let throughput = answered as f64 / seconds;
    let _ = writeln!(
        out,
        "{:<26} {answered:>9} {throughput:>9.0} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "all answers",
        ms(&overall, "p50"),
        ms(&overall, "p90"),
        ms(&overall, "p99"),
        ms(&overall, "p999"),
        ms(&overall, "max"),
    );

    let mut errors: BTreeMap<&str, u64> = BTreeMap::new();
    let mut errors_by_rpc: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    for ((rpc, code), count) in &summary.stats.errors {
        *errors.entry(code).or_default() += count;
        *errors_by_rpc
            .entry(rpc.name())
            .or_default()
            .entry(code)
            .or_default() += count;
    }
    if errors.is_empty() {
        let _ = writeln!(out, "errors: none");
    } else {
        for (code, count) in &errors {
            let sample = summary.stats.samples.get(code).cloned().unwrap_or_default();
            let _ = writeln!(out, "errors: {code} × {count} (e.g. {sample:?})");
        }
    }
    let retries: u64 = summary.stats.retries.values().sum();
    if retries > 0 {
        let by_code: Vec<String> = summary
            .stats
            .retries
            .iter()
            .map(|(code, count)| format!("{code} × {count}"))
            .collect();
        let _ = writeln!(
            out,
            "CreateOrder sent again with the same key: {retries} ({})",
            by_code.join(", ")
        );
    }
    for note in &summary.notes {
        let _ = writeln!(out, "{note}");
    }

    let mut windows = Vec::new();
    for (index, (mut micros, failed)) in std::mem::take(&mut summary.stats.windows)
        .into_iter()
        .enumerate()
    {
        let count = micros.len();
        windows.push(json!({
            "index": index,
            "answers": count,
            "errors": failed,
            "latency_ms": percentiles(&mut micros),
        }));
    }

    let mut cpu_json = Value::Null;
    if let Some((usage, own_processes)) = &summary.cpu {
        let own: f64 = own_processes
            .iter()
            .filter_map(|label| usage.seconds.get(label))
            .sum();
        let all: f64 = usage.seconds.values().sum();
        let per_order = |seconds: f64| {
            (summary.orders > 0).then(|| round(seconds * 1000.0 / summary.orders as f64))
        };
        let split: Vec<String> = usage
            .seconds
            .iter()
            .map(|(label, seconds)| format!("{label} {seconds:.2}"))
            .collect();
        let _ = writeln!(
            out,
            "cpu over {:.1} s (load and drain), seconds: {}; machine busy {:.1} of {:.1}",
            usage.window_s,
            split.join(", "),
            usage.machine_busy_s,
            usage.machine_capacity_s
        );
        if let (Some(own_ms), false) = (per_order(own), own_processes.is_empty()) {
            let _ = writeln!(
                out,
                "cpu per order: {own_ms:.3} ms in orderflow's processes ({}), {:.3} ms in \
                 everything counted",
                own_processes.join(", "),
                per_order(all).unwrap_or(0.0)
            );
        }
        cpu_json = json!({
            "window_s": round(usage.window_s),
            "seconds": usage.seconds.iter().map(|(label, seconds)| (label.clone(), json!(round(*seconds)))).collect::<Map<_, _>>(),
            "own_s": round(own),
            "all_s": round(all),
            "own_ms_per_order": per_order(own),
            "all_ms_per_order": per_order(all),
            "machine_busy_s": round(usage.machine_busy_s),
            "machine_capacity_s": round(usage.machine_capacity_s),
        });
    }

    let invariants_ok = summary.checks.iter().all(|check| check.ok);
    if !summary.checks.is_empty() {
        let _ = writeln!(out, "invariants:");
        for check in &summary.checks {
            let verdict = if check.ok { "ok  " } else { "FAIL" };
            let _ = writeln!(out, "  {verdict} {:<36} {}", check.name, check.detail);
        }
        let _ = writeln!(
            out,
            "{}",
            if invariants_ok {
                "every invariant held"
            } else {
                "INVARIANTS FAILED"
            }
        );
    }
    print!("{out}");

    if json {
        let (mode, concurrency, target_rate) = match summary.mode {
            Mode::Closed { concurrency } => ("closed", Some(concurrency), None),
            Mode::Open { rate, .. } => ("open", None, Some(rate)),
        };
        let mut object = json!({
            "scenario": summary.scenario,
            "run_id": summary.run,
            "mode": mode,
            "concurrency": concurrency,
            "target_rate_per_s": target_rate,
            "connections": summary.connections,
            "duration_s": round(seconds),
            "answers": answered,
            "throughput_per_s": round(throughput),
            "orders_acknowledged": summary.orders,
            "orders_per_s": round(summary.orders as f64 / seconds),
            "latency_ms": overall,
            "rpcs": rpcs,
            "errors": errors,
            "errors_by_rpc": errors_by_rpc,
            "error_samples": summary.stats.samples,
            "retries": summary.stats.retries,
            "retries_total": retries,
            "cpu": cpu_json,
            "invariants": summary.checks.iter().map(|check| json!({
                "name": check.name, "ok": check.ok, "detail": check.detail,
            })).collect::<Vec<_>>(),
            "invariants_ok": invariants_ok,
        });
        if let Some(fields) = object.as_object_mut() {
            fields.extend(std::mem::take(&mut summary.extra));
            if !windows.is_empty() {
                fields.insert("windows".into(), Value::Array(windows));
            }
        }
        println!("{object}");
    }
    invariants_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_rank_at_or_above() {
        let mut micros: Vec<u32> = (1..=1000).rev().map(|ms| ms * 1000).collect();
        let latency = percentiles(&mut micros);
        assert_eq!(latency["p50"], json!(500.0));
        assert_eq!(latency["p99"], json!(990.0));
        assert_eq!(latency["p999"], json!(999.0));
        assert_eq!(latency["max"], json!(1000.0));
        assert_eq!(percentiles(&mut [])["p50"], json!(0.0));
    }
}

//! What the small closed-loop benchmarks share: run an operation back to back until a deadline,
//! and summarise the latencies.

use std::future::Future;
use std::time::{Duration, Instant};

/// Runs `operation` back to back until `deadline`; the latencies of the successful ones and the
/// number of failures.
pub async fn run_until<F, Fut>(deadline: Instant, mut operation: F) -> (Vec<Duration>, u64)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let (mut latencies, mut errors) = (Vec::new(), 0);
    while Instant::now() < deadline {
        let started = Instant::now();
        if operation().await {
            latencies.push(started.elapsed());
        } else {
            errors += 1;
        }
    }
    (latencies, errors)
}

/// Waits for every worker of [`run_until`] and prints one line: `what`, count, rate,
/// latency p50 / p99 / max in ms, errors.
pub async fn report(
    what: &str,
    concurrency: usize,
    started: Instant,
    workers: Vec<tokio::task::JoinHandle<(Vec<Duration>, u64)>>,
) -> anyhow::Result<()> {
    let mut latencies = Vec::new();
    let mut errors = 0;
    for worker in workers {
        let (worker_latencies, worker_errors) = worker.await?;
        latencies.extend(worker_latencies);
        errors += worker_errors;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let percentile = |p: f64| {
        let index = ((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1));
        latencies
            .get(index)
            .map_or(0.0, |latency| latency.as_secs_f64() * 1000.0)
    };
    println!(
        "{what}: {} in {elapsed:.1} s = {:.0}/s, concurrency {concurrency}, latency ms p50 {:.2} \
         p99 {:.2} max {:.2}, errors {errors}",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        percentile(0.50),
        percentile(0.99),
        percentile(1.0),
    );
    Ok(())
}

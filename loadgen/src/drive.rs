//! Applies a workload: closed loop (a fixed number of requests in flight, each sent when the
//! previous answered) or open loop (requests started on a schedule whatever the answers take,
//! latency counted from the scheduled start, so a stalled server cannot hide its queue), with a
//! progress line on stderr.

use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::record::Recorder;
use super::workload::Workload;

/// A small, fast PRNG (SplitMix64): choices only need to be spread, not unpredictable.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    pub fn percent(&mut self, percent: u32) -> bool {
        self.below(100) < u64::from(percent)
    }
}

/// How requests are started.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    Closed { concurrency: usize },
    Open { rate: f64, max_in_flight: usize },
}

impl Mode {
    pub fn describe(self) -> String {
        match self {
            Self::Closed { concurrency } => format!("closed loop, {concurrency} in flight"),
            Self::Open { rate, .. } => format!("open loop, {rate:.0} requests/s scheduled"),
        }
    }
}

/// Runs `workload` until it has nothing more to do or `duration` passed; the load phase's
/// length.
pub async fn drive(
    workload: Arc<Workload>,
    recorder: Arc<Recorder>,
    mode: Mode,
    duration: Option<Duration>,
    seed: u64,
    progress: Option<String>,
) -> Duration {
    let started = Instant::now();
    let deadline = duration.map(|duration| started + duration);
    let expired = move || deadline.is_some_and(|deadline| Instant::now() >= deadline);
    let reporter = progress.map(|label| tokio::spawn(show_progress(label, recorder.clone())));
    match mode {
        Mode::Closed { concurrency } => {
            let mut workers = Vec::new();
            for worker in 0..concurrency.max(1) {
                let (workload, recorder) = (workload.clone(), recorder.clone());
                let mut rng = Rng::new(seed ^ (worker as u64).wrapping_mul(0xA24B_AED4_963E_E407));
                workers.push(tokio::spawn(async move {
                    while !expired() {
                        let Some(op) = workload.next(&mut rng) else {
                            break;
                        };
                        recorder.in_flight.fetch_add(1, Ordering::Relaxed);
                        workload.run(op, Instant::now(), &recorder).await;
                        recorder.in_flight.fetch_sub(1, Ordering::Relaxed);
                    }
                }));
            }
            for worker in workers {
                // A worker that panicked already printed why; the others' results still count.
                let _ = worker.await;
            }
        }
        Mode::Open {
            rate,
            max_in_flight,
        } => {
            let mut rng = Rng::new(seed);
            let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
            let mut tasks = tokio::task::JoinSet::new();
            let mut scheduled = started;
            while !expired() {
                let now = Instant::now();
                if scheduled > now {
                    tokio::time::sleep_until(scheduled.into()).await;
                }
                while recorder.in_flight.load(Ordering::Relaxed) >= max_in_flight as u64 {
                    // Behind schedule: the wait shows in the latency, measured from `scheduled`.
                    if tasks.join_next().await.is_none() {
                        break;
                    }
                }
                let Some(op) = workload.next(&mut rng) else {
                    break;
                };
                recorder.in_flight.fetch_add(1, Ordering::Relaxed);
                let (workload, recorder, at) = (workload.clone(), recorder.clone(), scheduled);
                tasks.spawn(async move {
                    workload.run(op, at, &recorder).await;
                    recorder.in_flight.fetch_sub(1, Ordering::Relaxed);
                });
                scheduled += interval;
                // Reap finished tasks as we go so the set stays small.
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
        }
    }
    let elapsed = started.elapsed();
    if let Some(reporter) = reporter {
        reporter.abort();
        eprintln!();
    }
    elapsed
}

/// Every second: elapsed time, answers, rate over the last second, in flight, errors. On a
/// terminal the line is rewritten in place; otherwise one line every 5 s.
async fn show_progress(label: String, recorder: Arc<Recorder>) {
    let terminal = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let mut last = 0;
    let mut ticks = 0u64;
    loop {
        ticker.tick().await;
        ticks += 1;
        let done = recorder.done.load(Ordering::Relaxed);
        let line = format!(
            "[{label}] {:5.1} s  {done:>9} answers  {:>7}/s  {:>6} in flight  {} errors",
            started.elapsed().as_secs_f64(),
            done - last,
            recorder.in_flight.load(Ordering::Relaxed),
            recorder.failed.load(Ordering::Relaxed),
        );
        last = done;
        let mut stderr = std::io::stderr().lock();
        if terminal {
            let _ = write!(stderr, "\r{line}\x1b[K");
        } else if ticks % 5 == 0 {
            let _ = writeln!(stderr, "{line}");
        }
        let _ = stderr.flush();
    }
}

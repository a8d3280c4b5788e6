//! What a run records: latency and outcome per RPC (the report), and every answer about every
//! order (the history the verification checks against PostgreSQL).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use orderflow_proto::order::v1::OrderStatus;
use tonic::Code;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rpc {
    CreateOrder,
    PayOrder,
    CancelOrder,
    ShipOrder,
    CompleteOrder,
    GetOrder,
    BatchGetOrders,
    HealthCheck,
}

impl Rpc {
    pub fn name(self) -> &'static str {
        match self {
            Self::CreateOrder => "CreateOrder",
            Self::PayOrder => "PayOrder",
            Self::CancelOrder => "CancelOrder",
            Self::ShipOrder => "ShipOrder",
            Self::CompleteOrder => "CompleteOrder",
            Self::GetOrder => "GetOrder",
            Self::BatchGetOrders => "BatchGetOrders",
            Self::HealthCheck => "Health/Check",
        }
    }
}

/// The canonical name of a gRPC status code, as in the gRPC spec (`FAILED_PRECONDITION`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The documented out-of-stock answer: an answer, not an error, for flash-sale accounting.
pub fn is_sold_out(status: &tonic::Status) -> bool {
    status.code() == Code::FailedPrecondition && status.message().contains("insufficient stock")
}

/// Whether a failed call may still have taken effect (the client cannot tell), so a change the
/// history shows without an acknowledgement is explained by it.
pub fn is_ambiguous(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Internal
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    Ok,
    SoldOut,
    Error,
}

/// Latencies (µs) and error codes per RPC.
#[derive(Debug, Default)]
pub struct Stats {
    pub latencies: BTreeMap<(Rpc, Class), Vec<u32>>,
    pub errors: BTreeMap<(Rpc, &'static str), u64>,
    /// The first message seen per code, to show what the errors were.
    pub samples: BTreeMap<&'static str, String>,
    /// Per window of the run (soak): latencies of the answers and the number of errors.
    pub windows: Vec<(Vec<u32>, u64)>,
    /// CreateOrder attempts sent again with the same key (`--retry-same-key`), by the code the
    /// failed attempt got.
    pub retries: BTreeMap<&'static str, u64>,
}

/// The report side of a run: every answer's latency and outcome, and live counters for the
/// progress line.
#[derive(Debug)]
pub struct Recorder {
    stats: Mutex<Stats>,
    started: Instant,
    window: Option<Duration>,
    pub done: AtomicU64,
    pub failed: AtomicU64,
    pub in_flight: AtomicU64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new(None)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn micros(duration: Duration) -> u32 {
    u32::try_from(duration.as_micros()).unwrap_or(u32::MAX)
}

impl Recorder {
    /// A recorder whose clock starts now; with `window`, answers are also counted per window.
    pub fn new(window: Option<Duration>) -> Self {
        Self {
            stats: Mutex::default(),
            started: Instant::now(),
            window,
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
        }
    }

    /// Records one answer of `rpc` to a request scheduled at `started`.
    pub fn record<T>(&self, rpc: Rpc, started: Instant, result: &Result<T, tonic::Status>) {
        let latency = micros(started.elapsed());
        let class = match result {
            Ok(_) => Class::Ok,
            Err(status) if is_sold_out(status) => Class::SoldOut,
            Err(_) => Class::Error,
        };
        self.done.fetch_add(1, Ordering::Relaxed);
        let mut stats = lock(&self.stats);
        if let Some(window) = self.window {
            let index = (self.started.elapsed().as_secs_f64() / window.as_secs_f64()) as usize;
            if stats.windows.len() <= index {
                stats.windows.resize_with(index + 1, Default::default);
            }
            let slot = &mut stats.windows[index];
            if class == Class::Error {
                slot.1 += 1;
            } else {
                slot.0.push(latency);
            }
        }
        stats
            .latencies
            .entry((rpc, class))
            .or_default()
            .push(latency);
        if let Err(status) = result {
            if class == Class::Error {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let name = code_name(status.code());
                *stats.errors.entry((rpc, name)).or_default() += 1;
                stats
                    .samples
                    .entry(name)
                    .or_insert_with(|| status.message().to_owned());
            }
        }
    }

    /// Counts an attempt that failed with `status` and is sent again with the same key.
    pub fn retried(&self, status: &tonic::Status) {
        *lock(&self.stats)
            .retries
            .entry(code_name(status.code()))
            .or_default() += 1;
    }

    pub fn take(&self) -> Stats {
        std::mem::take(&mut *lock(&self.stats))
    }
}

/// What one answer said about an order: its version and status, or that the call failed.
#[derive(Debug, Clone, Copy)]
pub enum Seen {
    /// An answer carrying the order (any RPC) at this version and status.
    State { version: i64, status: OrderStatus },
    /// A status change that failed with a code that leaves its outcome unknown.
    Unsure { target: OrderStatus },
}

/// One observation of one order, with when its request was sent and its answer came (µs since
/// the run's start).
#[derive(Debug, Clone, Copy)]
pub struct Observation {
    pub sent_us: u64,
    pub received_us: u64,
    pub seen: Seen,
}

/// An order CreateOrder acknowledged, as it was asked for and answered.
#[derive(Debug, Clone)]
pub struct Placed {
    pub order_id: Uuid,
    pub user_id: String,
    pub idempotency_key: String,
    /// (sku, quantity), as requested.
    pub items: Vec<(String, i64)>,
    pub total_cents: i64,
}

/// The history of a run: every acknowledged order, every answer about it, and what the client
/// already found wrong.
#[derive(Debug)]
pub struct Ledger {
    pub epoch: Instant,
    inner: Mutex<LedgerInner>,
}

#[derive(Debug)]
pub struct LedgerInner {
    /// The wall clock at the ledger's epoch, to compare with the times PostgreSQL recorded.
    pub epoch_wall: time::OffsetDateTime,
    pub placed: HashMap<Uuid, Placed>,
    /// Idempotency key → the order it answered.
    pub by_key: HashMap<String, Uuid>,
    pub observations: HashMap<Uuid, Vec<Observation>>,
    /// Keys whose CreateOrder failed ambiguously: an order may exist for them unacknowledged.
    pub unsure_keys: Vec<String>,
    /// The first [`KEPT_VIOLATIONS`] violations the client saw, and how many there were.
    pub violations: Vec<String>,
    pub violation_count: u64,
}

/// Violations kept word for word; the rest are only counted.
pub const KEPT_VIOLATIONS: usize = 20;

impl Default for LedgerInner {
    fn default() -> Self {
        Self {
            epoch_wall: time::OffsetDateTime::UNIX_EPOCH,
            placed: HashMap::new(),
            by_key: HashMap::new(),
            observations: HashMap::new(),
            unsure_keys: Vec::new(),
            violations: Vec::new(),
            violation_count: 0,
        }
    }
}

impl LedgerInner {
    /// The wall-clock time `micros` after the epoch.
    pub fn wall(&self, micros: u64) -> time::OffsetDateTime {
        self.epoch_wall + Duration::from_micros(micros)
    }

    fn push_violation(&mut self, what: String) {
        self.violation_count += 1;
        if self.violations.len() < KEPT_VIOLATIONS {
            self.violations.push(what);
        }
    }
}

impl Default for Ledger {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            inner: Mutex::new(LedgerInner {
                epoch_wall: time::OffsetDateTime::now_utc(),
                ..LedgerInner::default()
            }),
        }
    }
}

impl Ledger {
    pub fn since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX)
    }

    /// An acknowledged CreateOrder; a repeat of a key must answer the order it answered first.
    pub fn placed(&self, placed: Placed, sent: Instant, version: i64, status: OrderStatus) {
        let observation = Observation {
            sent_us: self.since_epoch(sent),
            received_us: self.since_epoch(Instant::now()),
            seen: Seen::State { version, status },
        };
        let mut inner = lock(&self.inner);
        let order_id = placed.order_id;
        match inner.by_key.get(&placed.idempotency_key) {
            Some(first) if *first != order_id => {
                let violation = format!(
                    "idempotency key {} answered order {first}, then order {order_id}",
                    placed.idempotency_key
                );
                inner.push_violation(violation);
            }
            Some(_) => {}
            None => {
                inner
                    .by_key
                    .insert(placed.idempotency_key.clone(), order_id);
                inner.placed.insert(order_id, placed);
            }
        }
        inner
            .observations
            .entry(order_id)
            .or_default()
            .push(observation);
    }

    pub fn observe(&self, order_id: Uuid, sent: Instant, seen: Seen) {
        let observation = Observation {
            sent_us: self.since_epoch(sent),
            received_us: self.since_epoch(Instant::now()),
            seen,
        };
        lock(&self.inner)
            .observations
            .entry(order_id)
            .or_default()
            .push(observation);
    }

    pub fn unsure_create(&self, idempotency_key: String) {
        lock(&self.inner).unsure_keys.push(idempotency_key);
    }

    pub fn violation(&self, what: String) {
        lock(&self.inner).push_violation(what);
    }

    pub fn acknowledged(&self) -> usize {
        lock(&self.inner).placed.len()
    }

    pub fn acknowledged_ids(&self) -> Vec<Uuid> {
        lock(&self.inner).placed.keys().copied().collect()
    }

    /// Everything recorded so far; the ledger starts over (same epoch).
    pub fn take(&self) -> LedgerInner {
        let mut inner = lock(&self.inner);
        let fresh = LedgerInner {
            epoch_wall: inner.epoch_wall,
            ..LedgerInner::default()
        };
        std::mem::replace(&mut *inner, fresh)
    }
}

//! loadgen's command line: one subcommand per scenario, sharing where to connect and how to
//! load.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "Load orderflow, report rate and latency per RPC, then verify the invariants",
    long_about = "Load orderflow, report throughput and latency per RPC and errors by gRPC code, \
                  wait for the pipeline to drain and verify the invariants (no oversell, every \
                  acknowledged order persisted once with the right status, statuses only moved \
                  forward, stock adds up, one notification per event). Exits non-zero if an \
                  invariant fails. See docs/loadgen.md."
)]
pub struct Cli {
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// N buyers race for K units of one hot SKU, one unit each.
    FlashSale(FlashSaleArgs),
    /// Create, pay, cancel, ship, complete, get and batch-get across many SKUs, in given ratios.
    Mixed(MixedArgs),
    /// The mixed workload at a steady rate (open loop) for a duration, with per-window figures.
    Soak(SoakArgs),
    /// The mixed workload against a stack of its own while processes of one kind are killed
    /// (SIGKILL) at random instants and started again; clients retry a key until answered.
    Chaos(ChaosArgs),
    /// grpc.health.v1.Health/Check as fast as a server answers: the no-op RPC ceiling.
    Noop(NoopArgs),
    /// Serve only the health service (bare tonic, nothing else), for `noop` to hammer.
    NoopServer(NoopServerArgs),
    /// Store many order-created-shaped events on a broker, in a topic no service reads.
    FillBroker(FillBrokerArgs),
}

/// Where orderflow is and how to authenticate.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// order-api (plaintext HTTP/2); several, comma-separated, share the connections.
    #[arg(
        long,
        env = "LOADGEN_ORDER_API",
        default_value = "http://127.0.0.1:50051"
    )]
    pub order_api: String,
    /// inventory-svc, for SetStock and the stock counters.
    #[arg(
        long,
        env = "LOADGEN_INVENTORY",
        default_value = "http://127.0.0.1:50052"
    )]
    pub inventory: String,
    /// The services' PostgreSQL database, read to verify the invariants.
    #[arg(
        long,
        env = "LOADGEN_DATABASE_URL",
        default_value = "postgres://orderflow:orderflow@127.0.0.1:5432/orderflow"
    )]
    pub database_url: String,
    /// Bearer token for buyer calls (orders scope) when authentication is on.
    #[arg(long, env = "LOADGEN_TOKEN")]
    pub token: Option<String>,
    /// Bearer token with the admin scope, for SetStock, ShipOrder and CompleteOrder (and for
    /// everything when --token is not given).
    #[arg(long, env = "LOADGEN_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// Place every order as this user (a buyer token may act only for its own subject);
    /// otherwise each buyer is a user of its own.
    #[arg(long)]
    pub user: Option<String>,
}

/// How the load is applied.
#[derive(Debug, Clone, Args)]
pub struct Load {
    /// HTTP/2 connections to order-api; requests are multiplexed over them.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Closed loop: requests in flight at once, each sent as soon as the previous answered.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Open loop: requests started per second whatever the answers take (latency is measured
    /// from each request's scheduled start); replaces --concurrency.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Open loop: most requests in flight; past it the schedule waits (and latency grows).
    #[arg(long, default_value_t = 20_000)]
    pub max_in_flight: usize,
    /// Deadline of each request.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Send a CreateOrder that failed with an error that leaves its outcome unknown
    /// (UNAVAILABLE, DEADLINE_EXCEEDED, …) again with the same idempotency key, until it is
    /// answered (as the API asks clients to); the retries are counted. Then every key ends with
    /// an answer, and the checks hold the run to exactly one order per answered key.
    #[arg(long)]
    pub retry_same_key: bool,
    /// With --retry-same-key: give a key up after this long since its first attempt.
    #[arg(long, default_value_t = 120)]
    pub retry_for_secs: u64,
    /// After the drain, the longest wait for the units of placements that answered an error
    /// before sending their event to come back (inventory-svc returns them once the order log
    /// holds no order for them).
    #[arg(long, default_value_t = 60)]
    pub orphan_window_secs: u64,
    /// Longest wait for the pipeline to drain (everything persisted, outbox empty,
    /// notifications stored) before verifying.
    #[arg(long, default_value_t = 120)]
    pub drain_timeout_secs: u64,
    /// Accepted clock difference between loadgen and the services when checking history times.
    #[arg(long, default_value_t = 1000)]
    pub clock_skew_ms: u64,
    /// Print one JSON object as the last line of stdout, after the table.
    #[arg(long)]
    pub json: bool,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Count the CPU time of this process of orderflow's during the run, as LABEL=PID
    /// (repeatable; a repeated label is summed): the CPU per order adds these up.
    #[arg(long = "cpu-pid", value_name = "LABEL=PID")]
    pub cpu_pids: Vec<String>,
    /// Count the CPU time of this process too, as LABEL=PID, but not as orderflow's own (a
    /// dependency such as a private broker).
    #[arg(long = "cpu-dependency", value_name = "LABEL=PID")]
    pub cpu_dependencies: Vec<String>,
    /// Count the CPU time of every process with this name (as `pgrep -x`), e.g. postgres.
    #[arg(long = "cpu-process", value_name = "NAME")]
    pub cpu_processes: Vec<String>,
    /// Seed of the random choices (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
}

impl Load {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn retry_for(&self) -> Option<Duration> {
        self.retry_same_key
            .then(|| Duration::from_secs(self.retry_for_secs))
    }
}

#[derive(Debug, Clone, Args)]
pub struct FlashSaleArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub load: Load,
    /// Buyers, one CreateOrder of one unit each.
    #[arg(long, default_value_t = 10_000)]
    pub buyers: u64,
    /// Units of the hot SKU on sale.
    #[arg(long, default_value_t = 100)]
    pub units: i64,
    /// After the sale, this many late buyers more, counting PostgreSQL transactions meanwhile:
    /// a sold-out answer should cost none. 0 skips it.
    #[arg(long, default_value_t = 5_000)]
    pub sold_out_probe: u64,
    /// inventory-svc's Prometheus endpoint (host:port): the probe then also counts the
    /// Release calls it served meanwhile (each is a PostgreSQL transaction).
    #[arg(long)]
    pub inventory_metrics: Option<String>,
    /// Stop the race after this many seconds even if buyers are left.
    #[arg(long)]
    pub duration_secs: Option<f64>,
}

#[derive(Debug, Clone, Args)]
pub struct Workload {
    /// Weights of the operations, e.g. `create=40,pay=20,cancel=10,get=20,batch-get=10`
    /// (also `ship`, `complete`); missing ones are 0. An operation without an order to act on
    /// yet places one instead.
    #[arg(long, default_value = "create=40,pay=20,cancel=10,get=20,batch-get=10")]
    pub mix: String,
    /// SKUs on sale (each a row of its own).
    #[arg(long, default_value_t = 1_000)]
    pub skus: usize,
    /// Units of each SKU.
    #[arg(long, default_value_t = 1_000_000)]
    pub stock: i64,
    /// Distinct buyers (ignored with --user).
    #[arg(long, default_value_t = 10_000)]
    pub users: u64,
    /// Most lines (distinct SKUs) per order; each order has 1 to this many.
    #[arg(long, default_value_t = 2)]
    pub max_lines: usize,
    /// Order ids per BatchGetOrders.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Percent of successful creates, payments and cancellations sent once more right away
    /// (same idempotency key or details): the repeat must answer the same order.
    #[arg(long, default_value_t = 5)]
    pub repeat_percent: u32,
    /// Place this many orders first, unmeasured (closed loop), so reads have orders to read.
    #[arg(long, default_value_t = 0)]
    pub preload: u64,
}

/// What the mixed and soak scenarios share.
#[derive(Debug, Clone, Args)]
pub struct Orders {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub load: Load,
    #[command(flatten)]
    pub workload: Workload,
}

#[derive(Debug, Clone, Args)]
pub struct MixedArgs {
    #[command(flatten)]
    pub orders: Orders,
    /// How long to load.
    #[arg(long, default_value_t = 10.0)]
    pub duration_secs: f64,
}

#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    #[command(flatten)]
    pub orders: Orders,
    /// How long to load.
    #[arg(long, default_value_t = 60.0)]
    pub duration_secs: f64,
    /// Length of each window the report shows throughput and p99 for.
    #[arg(long, default_value_t = 10.0)]
    pub window_secs: f64,
}

/// Which processes `chaos` kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Victims {
    /// The two order-api processes.
    OrderApi,
    /// The inventory-svc process.
    InventorySvc,
    /// The two consumer-worker and two notify-svc members of their groups (rebalances).
    Consumers,
}

#[derive(Debug, Clone, Args)]
pub struct ChaosArgs {
    #[command(flatten)]
    pub load: Load,
    #[command(flatten)]
    pub workload: Workload,
    /// Which processes to kill.
    #[arg(long, value_enum, default_value = "order-api")]
    pub kill: Victims,
    /// How many kills, spread over the load (one at a random instant of each equal slice).
    #[arg(long, default_value_t = 30)]
    pub kills: u32,
    /// How long the load runs.
    #[arg(long, default_value_t = 30.0)]
    pub duration_secs: f64,
    /// How long a killed process stays down before it is started again.
    #[arg(long, default_value_t = 200)]
    pub down_ms: u64,
    /// order-api's --create-timeout-ms (the lease a crashed placement leaves on its key is
    /// twice what was left of it).
    #[arg(long, default_value_t = 4_000)]
    pub create_timeout_ms: u64,
    /// The broker the stack uses (default: a tansu of its own, started and removed by loadgen).
    #[arg(long)]
    pub kafka_brokers: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct NoopArgs {
    /// The server whose health service is called.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub target: String,
    #[command(flatten)]
    pub load: Load,
    /// How long to load.
    #[arg(long, default_value_t = 5.0)]
    pub duration_secs: f64,
}

#[derive(Debug, Clone, Args)]
pub struct FillBrokerArgs {
    /// The broker to fill.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// The topic the events go to (created if missing).
    #[arg(long, default_value = "loadgen-fill")]
    pub topic: String,
    /// Its partitions, when it is created.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// How many events.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Bytes of each event's payload (an OrderCreated of one line is ~200).
    #[arg(long, default_value_t = 200)]
    pub payload_bytes: usize,
}

#[derive(Debug, Clone, Args)]
pub struct NoopServerArgs {
    #[arg(long, default_value = "127.0.0.1:50060")]
    pub listen: String,
}

/// One operation of the mixed workload and its weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Create,
    Pay,
    Cancel,
    Ship,
    Complete,
    Get,
    BatchGet,
}

/// Parses `create=40,pay=20,…` into weights.
pub fn parse_mix(spec: &str) -> Result<Vec<(Kind, u32)>, String> {
    let mut weights = Vec::new();
    for part in spec
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
    {
        let (name, weight) = part
            .split_once('=')
            .ok_or_else(|| format!("--mix: {part:?} is not name=weight"))?;
        let kind = match name.trim() {
            "create" => Kind::Create,
            "pay" => Kind::Pay,
            "cancel" => Kind::Cancel,
            "ship" => Kind::Ship,
            "complete" => Kind::Complete,
            "get" => Kind::Get,
            "batch-get" => Kind::BatchGet,
            other => {
                return Err(format!(
                    "--mix: unknown operation {other:?} (create, pay, cancel, ship, complete, \
                     get, batch-get)"
                ))
            }
        };
        let weight: u32 = weight
            .trim()
            .parse()
            .map_err(|_| format!("--mix: weight of {name} must be a whole number"))?;
        weights.push((kind, weight));
    }
    if weights.iter().map(|(_, weight)| weight).sum::<u32>() == 0 {
        return Err("--mix: every weight is 0".into());
    }
    Ok(weights)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parses_and_refuses_nonsense() {
        assert_eq!(
            parse_mix("create=3, batch-get=1").expect("valid"),
            vec![(Kind::Create, 3), (Kind::BatchGet, 1)]
        );
        assert!(parse_mix("create=0").is_err());
        assert!(parse_mix("buy=1").is_err());
        assert!(parse_mix("create").is_err());
    }
}

//! After a run: wait until the pipeline has drained, read what PostgreSQL (and inventory-svc's
//! live counters) hold for the run's orders and SKUs, and check it against what the run was
//! told. The checks are plain functions of those facts, so they are unit-tested on their own.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use orderflow_proto::inventory::v1::BatchGetStockRequest;
use orderflow_proto::order::v1::OrderStatus;
use orderflow_proto::order_status;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::client::InventoryClient;
use super::record::{LedgerInner, Seen};

/// One invariant's verdict.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
    failures: u64,
    examples: Vec<String>,
}

/// Examples of failures kept per check.
const EXAMPLES: usize = 3;

impl Check {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            ok: true,
            detail: String::new(),
            failures: 0,
            examples: Vec::new(),
        }
    }

    fn fail(&mut self, what: String) {
        self.ok = false;
        self.failures += 1;
        if self.examples.len() < EXAMPLES {
            self.examples.push(what);
        }
    }

    /// Sets the detail: `summary` when it held, else the failures and a few examples.
    fn done(mut self, summary: String) -> Self {
        self.detail = if self.ok {
            summary
        } else {
            let more = self.failures.saturating_sub(self.examples.len() as u64);
            let mut detail = format!("{} failures: {}", self.failures, self.examples.join("; "));
            if more > 0 {
                detail.push_str(&format!("; … {more} more"));
            }
            detail
        };
        self
    }
}

/// An order row of the run.
#[derive(Debug, Clone)]
pub struct OrderRow {
    pub order_id: Uuid,
    pub user_id: String,
    pub idempotency_key: String,
    pub status: OrderStatus,
    pub version: i64,
    pub total_cents: i64,
    /// Recorded without stock: its reservation was given back before its event was applied.
    pub voided: bool,
}

#[derive(Debug, Clone)]
pub struct HistoryRow {
    pub version: i64,
    pub status: OrderStatus,
    pub changed_at: OffsetDateTime,
}

/// What the stores hold for the run, once drained.
#[derive(Debug, Default)]
pub struct Facts {
    pub orders: Vec<OrderRow>,
    /// order → (sku, quantity, unit price), by line number.
    pub items: HashMap<Uuid, Vec<(String, i64, i64)>>,
    /// order → its history, by version.
    pub history: HashMap<Uuid, Vec<HistoryRow>>,
    /// order → (event type, notifications stored for it).
    pub notifications: HashMap<Uuid, Vec<(String, i64)>>,
    /// sku → available, reserved, sold in PostgreSQL.
    pub durable: HashMap<String, [i64; 3]>,
    /// sku → the same as GetStock answers (inventory-svc's live counters).
    pub live: HashMap<String, [i64; 3]>,
    /// Reservations PostgreSQL refused after Redis admitted them, for the run's SKUs.
    pub refusals: i64,
}

/// What the run itself knows beyond the ledger.
#[derive(Debug, Clone)]
pub struct Expected {
    /// Every SKU of the run and its initial stock.
    pub skus: Vec<(String, i64)>,
    pub flash_sale: Option<FlashSaleExpected>,
    pub clock_skew: Duration,
    /// When the pipeline was drained, or why not.
    pub drained: Result<Duration, String>,
    /// When, after the drain, every unit held belonged to a live order, or why not.
    pub orphans_returned: Result<Duration, String>,
}

#[derive(Debug, Clone)]
pub struct FlashSaleExpected {
    pub sku: String,
    pub units: i64,
    /// Buyers who got an answer (placed, sold out or an error).
    pub buyers: u64,
    /// Answers other than an order or the sold-out status.
    pub errors: u64,
    /// The race was stopped (`--duration-secs`) before every buyer had asked.
    pub cut_short: bool,
}

fn status_of(name: &str) -> OrderStatus {
    order_status::from_db(name).unwrap_or(OrderStatus::Unspecified)
}

/// Polls until every acknowledged order is persisted, none of their events or stock
/// settlements is pending, and every status they had has its notification; how long it took.
pub async fn drain(
    db: &PgPool,
    acknowledged: &[Uuid],
    timeout: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        let counts: Result<(i64, i64, i64, i64, i64), sqlx::Error> = sqlx::query_as(
            "SELECT (SELECT count(*) FROM orders WHERE order_id = ANY($1)), \
                    (SELECT count(*) FROM order_outbox WHERE order_id = ANY($1)), \
                    (SELECT count(*) FROM stock_settlements WHERE order_id = ANY($1)), \
                    (SELECT count(*) FROM order_status_history WHERE order_id = ANY($1)), \
                    (SELECT count(*) FROM notifications WHERE order_id = ANY($1))",
        )
        .bind(acknowledged)
        .fetch_one(db)
        .await;
        let last = match counts {
            Ok((persisted, outbox, settlements, statuses, notified)) => {
                if persisted == acknowledged.len() as i64
                    && outbox == 0
                    && settlements == 0
                    && notified >= statuses
                {
                    return Ok(started.elapsed());
                }
                format!(
                    "{persisted} of {} acknowledged orders persisted, {outbox} events in the \
                     outbox, {settlements} stock settlements pending, {notified} notifications \
                     for {statuses} statuses",
                    acknowledged.len()
                )
            }
            Err(error) => format!("reading PostgreSQL: {error}"),
        };
        if started.elapsed() >= timeout {
            return Err(format!("not drained after {timeout:?}: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Polls until every SKU of the run holds exactly the units of the run's live orders (reserved:
/// PENDING ones, sold: paid ones) in PostgreSQL and in Redis alike: the units of placements
/// that answered an error before they sent their event (a crash, a timeout) have come back.
/// inventory-svc returns them once their placement's deadline and grace passed and
/// consumer-worker applied the order log past them (and an admission its process never
/// recorded, after `--unrecorded-grace-secs`). How long it took.
pub async fn orphans_returned(
    db: &PgPool,
    inventory: &InventoryClient,
    skus: &[String],
    window: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        let live = live_counters(inventory, skus).await;
        type Row = (String, i64, i64, i64, i64, i64);
        let counts: Result<Vec<Row>, sqlx::Error> = sqlx::query_as(
            "SELECT s.sku, s.available, s.reserved, s.sold, \
                    coalesce(sum(i.quantity) FILTER (WHERE o.status = 'PENDING'), 0)::bigint, \
                    coalesce(sum(i.quantity) FILTER \
                      (WHERE o.status IN ('PAID', 'SHIPPED', 'COMPLETED')), 0)::bigint \
             FROM skus s LEFT JOIN order_items i ON i.sku = s.sku \
                  LEFT JOIN orders o ON o.order_id = i.order_id \
             WHERE s.sku = ANY($1) GROUP BY s.sku, s.available, s.reserved, s.sold",
        )
        .bind(skus)
        .fetch_all(db)
        .await;
        let last = match (counts, live) {
            (Ok(rows), Ok(live)) => {
                let off: Vec<String> =
                    rows.iter()
                        .filter_map(|(sku, available, reserved, sold, pending, paid)| {
                            let durable = [*available, *reserved, *sold];
                            let redis = live.get(sku).copied();
                            ((*reserved, *sold) != (*pending, *paid) || redis != Some(durable))
                                .then(|| {
                                    format!(
                                        "{sku}: {reserved} reserved for {pending} pending, {sold} \
                                     sold for {paid} paid; Redis {redis:?}"
                                    )
                                })
                        })
                        .collect();
                if off.is_empty() {
                    return Ok(started.elapsed());
                }
                off.join("; ")
            }
            (Err(error), _) => format!("reading PostgreSQL: {error}"),
            (_, Err(status)) => format!("GetStock: {status}"),
        };
        if started.elapsed() >= window {
            return Err(format!("units still held after {window:?}: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Reads the facts of run `run` (keys prefixed `run-`) and of `acknowledged` orders.
pub async fn load(
    db: &PgPool,
    inventory: &InventoryClient,
    run: &str,
    acknowledged: &[Uuid],
    skus: &[String],
) -> anyhow::Result<Facts> {
    type Row = (Uuid, String, String, String, i64, i64, bool);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT order_id, user_id, idempotency_key, status, version, total_cents, voided \
         FROM orders WHERE idempotency_key LIKE $1 OR order_id = ANY($2)",
    )
    .bind(format!("{run}-%"))
    .bind(acknowledged)
    .fetch_all(db)
    .await?;
    let orders: Vec<OrderRow> = rows
        .into_iter()
        .map(
            |(order_id, user_id, idempotency_key, status, version, total_cents, voided)| OrderRow {
                order_id,
                user_id,
                idempotency_key,
                status: status_of(&status),
                version,
                total_cents,
                voided,
            },
        )
        .collect();
    let ids: Vec<Uuid> = orders.iter().map(|order| order.order_id).collect();

    let items: Vec<(Uuid, String, i64, i64)> = sqlx::query_as(
        "SELECT order_id, sku, quantity, unit_price_cents FROM order_items \
         WHERE order_id = ANY($1) ORDER BY order_id, line_no",
    )
    .bind(&ids)
    .fetch_all(db)
    .await?;
    let history: Vec<(Uuid, i64, String, OffsetDateTime)> = sqlx::query_as(
        "SELECT order_id, version, status, changed_at FROM order_status_history \
         WHERE order_id = ANY($1) ORDER BY order_id, version",
    )
    .bind(&ids)
    .fetch_all(db)
    .await?;
    let notifications: Vec<(Uuid, String, i64)> = sqlx::query_as(
        "SELECT order_id, event_type, count(*) FROM notifications \
         WHERE order_id = ANY($1) GROUP BY order_id, event_type",
    )
    .bind(&ids)
    .fetch_all(db)
    .await?;
    let mut facts = Facts {
        orders,
        items: per_order(items, |(order_id, sku, quantity, price)| {
            (order_id, (sku, quantity, price))
        }),
        history: per_order(history, |(order_id, version, status, changed_at)| {
            let status = status_of(&status);
            (
                order_id,
                HistoryRow {
                    version,
                    status,
                    changed_at,
                },
            )
        }),
        notifications: per_order(notifications, |(order_id, event_type, count)| {
            (order_id, (event_type, count))
        }),
        ..Facts::default()
    };
    let durable: Vec<(String, i64, i64, i64)> =
        sqlx::query_as("SELECT sku, available, reserved, sold FROM skus WHERE sku = ANY($1)")
            .bind(skus)
            .fetch_all(db)
            .await?;
    facts.durable = durable
        .into_iter()
        .map(|(sku, available, reserved, sold)| (sku, [available, reserved, sold]))
        .collect();
    facts.refusals = sqlx::query_scalar("SELECT count(*) FROM stock_refusals WHERE sku = ANY($1)")
        .bind(skus)
        .fetch_one(db)
        .await?;
    facts.live = live_counters(inventory, skus).await?;
    Ok(facts)
}

/// What GetStock answers for `skus` (inventory-svc's live counters in Redis).
async fn live_counters(
    inventory: &InventoryClient,
    skus: &[String],
) -> Result<HashMap<String, [i64; 3]>, tonic::Status> {
    let mut live = HashMap::new();
    for chunk in skus.chunks(orderflow_proto::limits::MAX_BATCH_SKUS) {
        let mut request = tonic::Request::new(BatchGetStockRequest {
            skus: chunk.to_vec(),
        });
        request.set_timeout(Duration::from_secs(10));
        let answer = inventory
            .clone()
            .batch_get_stock(request)
            .await?
            .into_inner();
        for stock in answer.stocks {
            live.insert(stock.sku, [stock.available, stock.reserved, stock.sold]);
        }
    }
    Ok(live)
}

/// Rows grouped by the order each belongs to, in their order.
fn per_order<Row, T>(rows: Vec<Row>, split: impl Fn(Row) -> (Uuid, T)) -> HashMap<Uuid, Vec<T>> {
    let mut grouped: HashMap<Uuid, Vec<T>> = HashMap::new();
    for row in rows {
        let (order_id, value) = split(row);
        grouped.entry(order_id).or_default().push(value);
    }
    grouped
}

/// Every invariant, in the order the report lists them.
pub fn check(ledger: &LedgerInner, facts: &Facts, expected: &Expected) -> Vec<Check> {
    let by_id: HashMap<Uuid, &OrderRow> = facts
        .orders
        .iter()
        .map(|order| (order.order_id, order))
        .collect();
    vec![
        drained(expected),
        answers(ledger),
        persisted_once(ledger, facts, &by_id),
        acknowledged_live(ledger, &by_id),
        one_per_key(ledger, facts),
        orphans_returned_check(expected),
        no_oversell(ledger, facts, expected),
        counters_match(facts, expected),
        bank(facts, expected),
        stock_follows_orders(facts, expected),
        final_status(ledger, &by_id),
        history_forward(ledger, facts, expected),
        notifications_once(facts),
    ]
    .into_iter()
    .chain(
        expected
            .flash_sale
            .as_ref()
            .map(|sale| sells_every_unit(ledger, sale)),
    )
    .collect()
}

fn drained(expected: &Expected) -> Check {
    let mut check = Check::new("pipeline_drained");
    match &expected.drained {
        Ok(took) => check.done(format!(
            "every acknowledged order persisted, outbox and stock settlements empty, \
             notifications stored, {:.1} s after the load",
            took.as_secs_f64()
        )),
        Err(why) => {
            check.fail(why.clone());
            check.done(String::new())
        }
    }
}

fn answers(ledger: &LedgerInner) -> Check {
    let mut check = Check::new("answers_consistent");
    for violation in &ledger.violations {
        check.fail(violation.clone());
    }
    check.failures = ledger.violation_count.max(check.failures);
    check.done(
        "repeats answered the same order and version, reads found every acknowledged order".into(),
    )
}

fn persisted_once(ledger: &LedgerInner, facts: &Facts, by_id: &HashMap<Uuid, &OrderRow>) -> Check {
    let mut check = Check::new("acknowledged_orders_persisted_once");
    for placed in ledger.placed.values() {
        let Some(row) = by_id.get(&placed.order_id) else {
            check.fail(format!("order {} is not in PostgreSQL", placed.order_id));
            continue;
        };
        if row.user_id != placed.user_id || row.idempotency_key != placed.idempotency_key {
            check.fail(format!(
                "order {} is ({}, {}) in PostgreSQL, was placed as ({}, {})",
                placed.order_id,
                row.user_id,
                row.idempotency_key,
                placed.user_id,
                placed.idempotency_key
            ));
        }
        let items = facts
            .items
            .get(&placed.order_id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut stored: Vec<(&str, i64)> = items
            .iter()
            .map(|(sku, quantity, _)| (sku.as_str(), *quantity))
            .collect();
        let mut asked: Vec<(&str, i64)> = placed
            .items
            .iter()
            .map(|(sku, quantity)| (sku.as_str(), *quantity))
            .collect();
        stored.sort_unstable();
        asked.sort_unstable();
        let total: i64 = items
            .iter()
            .map(|(_, quantity, price)| quantity * price)
            .sum();
        if stored != asked || total != placed.total_cents || row.total_cents != placed.total_cents {
            check.fail(format!(
                "order {}: PostgreSQL has items {stored:?} totalling {total} (row {}), \
                 acknowledged {asked:?} totalling {}",
                placed.order_id, row.total_cents, placed.total_cents
            ));
        }
    }
    check.done(format!(
        "all {} acknowledged orders in PostgreSQL with their items and totals",
        ledger.placed.len()
    ))
}

/// An acknowledged order is the order: never persisted voided (without its stock).
fn acknowledged_live(ledger: &LedgerInner, by_id: &HashMap<Uuid, &OrderRow>) -> Check {
    let mut check = Check::new("acknowledged_orders_live");
    for placed in ledger.placed.values() {
        if by_id.get(&placed.order_id).is_some_and(|row| row.voided) {
            check.fail(format!(
                "order {} ({}) was acknowledged but is persisted voided",
                placed.order_id, placed.idempotency_key
            ));
        }
    }
    check.done(format!(
        "every acknowledged order persisted as acknowledged, none voided; {} keys never \
         answered",
        ledger.unsure_keys.len()
    ))
}

fn orphans_returned_check(expected: &Expected) -> Check {
    let mut check = Check::new("orphans_returned");
    match &expected.orphans_returned {
        Ok(took) => check.done(format!(
            "every unit held belongs to a live order {:.1} s after the drain (units of \
             placements that never sent their order came back)",
            took.as_secs_f64()
        )),
        Err(why) => {
            check.fail(why.clone());
            check.done(String::new())
        }
    }
}

fn one_per_key(ledger: &LedgerInner, facts: &Facts) -> Check {
    let mut check = Check::new("one_order_per_idempotency_key");
    let mut per_key: HashMap<(&str, &str), u64> = HashMap::new();
    let unsure: HashSet<&str> = ledger.unsure_keys.iter().map(String::as_str).collect();
    let mut unacknowledged = 0;
    for row in &facts.orders {
        if !row.voided {
            *per_key
                .entry((&row.user_id, &row.idempotency_key))
                .or_default() += 1;
        }
        if ledger.placed.contains_key(&row.order_id) {
            continue;
        }
        unacknowledged += 1;
        // The one documented way an order nobody acknowledged reaches PostgreSQL: the broker
        // kept an event whose ack was lost, and its client heard an error and never retried
        // the key (a retry would have answered that order).
        let explained = unsure.contains(row.idempotency_key.as_str());
        if !explained {
            check.fail(format!(
                "order {} ({}) is in PostgreSQL as {:?} but was never acknowledged",
                row.order_id, row.idempotency_key, row.status
            ));
        }
    }
    for ((user, key), count) in per_key {
        if count > 1 {
            check.fail(format!("{count} orders for user {user}, key {key}"));
        }
    }
    check.done(format!(
        "{} keys, one order each; {unacknowledged} unacknowledged orders (all of keys whose \
         client heard an error and did not retry)",
        ledger.by_key.len()
    ))
}

fn no_oversell(ledger: &LedgerInner, facts: &Facts, expected: &Expected) -> Check {
    let mut check = Check::new("no_oversell");
    for (sku, initial) in &expected.skus {
        let Some([available, reserved, sold]) = facts.durable.get(sku) else {
            check.fail(format!("SKU {sku} is not in PostgreSQL"));
            continue;
        };
        if reserved + sold > *initial || *available < 0 {
            check.fail(format!(
                "SKU {sku}: {reserved} reserved + {sold} sold of {initial} units, {available} \
                 available"
            ));
        }
    }
    let mut summary = format!(
        "no SKU reserved or sold beyond its stock ({} refusals in PostgreSQL)",
        facts.refusals
    );
    if let Some(sale) = &expected.flash_sale {
        let acknowledged = ledger.placed.len() as i64;
        let persisted = facts.orders.iter().filter(|row| !row.voided).count() as i64;
        if acknowledged > sale.units || persisted > sale.units {
            check.fail(format!(
                "{acknowledged} orders acknowledged, {persisted} in PostgreSQL, for {} units",
                sale.units
            ));
        }
        summary = format!(
            "{acknowledged} orders acknowledged, {persisted} in PostgreSQL, for {} units of {}; \
             {summary}",
            sale.units, sale.sku
        );
    }
    check.done(summary)
}

fn counters_match(facts: &Facts, expected: &Expected) -> Check {
    let mut check = Check::new("stock_counters_match");
    for (sku, _) in &expected.skus {
        let (live, durable) = (facts.live.get(sku), facts.durable.get(sku));
        if live != durable {
            check.fail(format!(
                "SKU {sku}: GetStock answers {live:?}, PostgreSQL has {durable:?} \
                 (available, reserved, sold)"
            ));
        }
    }
    check.done(format!(
        "GetStock equals the PostgreSQL row for all {} SKUs",
        expected.skus.len()
    ))
}

fn bank(facts: &Facts, expected: &Expected) -> Check {
    let mut check = Check::new("bank");
    for (sku, initial) in &expected.skus {
        if let Some([available, reserved, sold]) = facts.durable.get(sku) {
            if available + reserved + sold != *initial {
                check.fail(format!(
                    "SKU {sku}: {available} available + {reserved} reserved + {sold} sold ≠ \
                     {initial}"
                ));
            }
        }
    }
    check.done(format!(
        "available + reserved + sold = initial stock for all {} SKUs",
        expected.skus.len()
    ))
}

fn stock_follows_orders(facts: &Facts, expected: &Expected) -> Check {
    let mut check = Check::new("stock_follows_orders");
    let mut held: HashMap<&str, [i64; 2]> = HashMap::new();
    for row in &facts.orders {
        let slot = match row.status {
            OrderStatus::Pending => 0,
            OrderStatus::Paid | OrderStatus::Shipped | OrderStatus::Completed => 1,
            _ => continue,
        };
        for (sku, quantity, _) in facts.items.get(&row.order_id).into_iter().flatten() {
            held.entry(sku.as_str()).or_default()[slot] += quantity;
        }
    }
    for (sku, _) in &expected.skus {
        let [pending, paid] = held.get(sku.as_str()).copied().unwrap_or_default();
        if let Some([_, reserved, sold]) = facts.durable.get(sku) {
            if (*reserved, *sold) != (pending, paid) {
                check.fail(format!(
                    "SKU {sku}: {reserved} reserved, {sold} sold; its orders hold {pending} \
                     pending, {paid} paid"
                ));
            }
        }
    }
    check
        .done("reserved = units of PENDING orders, sold = units of paid ones, for every SKU".into())
}

/// One answer that showed an order's state.
#[derive(Debug, Clone, Copy)]
struct State {
    sent_us: u64,
    received_us: u64,
    version: i64,
    status: OrderStatus,
}

/// Every answer that showed one order's state, and the statuses of changes whose outcome the
/// client could not know.
fn states(observations: &[super::record::Observation]) -> (Vec<State>, Vec<OrderStatus>) {
    let mut states = Vec::new();
    let mut unsure = Vec::new();
    for observation in observations {
        match observation.seen {
            Seen::State { version, status } => states.push(State {
                sent_us: observation.sent_us,
                received_us: observation.received_us,
                version,
                status,
            }),
            Seen::Unsure { target } => unsure.push(target),
        }
    }
    (states, unsure)
}

fn final_status(ledger: &LedgerInner, by_id: &HashMap<Uuid, &OrderRow>) -> Check {
    let mut check = Check::new("final_status");
    let (mut changed, mut unexplained_expiries) = (0, 0);
    for (order_id, observations) in &ledger.observations {
        let Some(row) = by_id.get(order_id) else {
            continue; // persisted_once reports it
        };
        let (states, unsure) = states(observations);
        let Some(&State {
            version, status, ..
        }) = states.iter().max_by_key(|state| state.version)
        else {
            continue;
        };
        if version > 1 {
            changed += 1;
        }
        if row.version < version {
            check.fail(format!(
                "order {order_id}: acknowledged at version {version} ({status:?}), PostgreSQL \
                 has version {} ({:?})",
                row.version, row.status
            ));
        } else if row.version == version && row.status != status {
            check.fail(format!(
                "order {order_id}: acknowledged {status:?} at version {version}, PostgreSQL has \
                 {:?}",
                row.status
            ));
        } else if row.version > version {
            let explained = unsure.contains(&row.status) || row.status == OrderStatus::Expired;
            if row.status == OrderStatus::Expired {
                unexplained_expiries += 1;
            }
            if !explained {
                check.fail(format!(
                    "order {order_id}: PostgreSQL has {:?} at version {}, beyond anything \
                     acknowledged (version {version}, {status:?}) or attempted",
                    row.status, row.version
                ));
            }
        }
    }
    check.done(format!(
        "every order's status is the last one acknowledged ({changed} changed after placement, \
         {unexplained_expiries} expired)"
    ))
}

fn legal(from: OrderStatus, to: OrderStatus) -> bool {
    use OrderStatus::{Cancelled, Completed, Expired, Paid, Pending, Shipped};
    matches!(
        (from, to),
        (Pending, Paid | Cancelled | Expired) | (Paid, Shipped) | (Shipped, Completed)
    )
}

fn history_forward(ledger: &LedgerInner, facts: &Facts, expected: &Expected) -> Check {
    let mut check = Check::new("statuses_only_forward");
    let skew = time::Duration::try_from(expected.clock_skew).unwrap_or(time::Duration::SECOND);
    let wall = |micros: u64| ledger.wall(micros);
    let mut rows_checked = 0usize;
    let mut answers_checked = 0usize;
    for row in &facts.orders {
        let history = facts
            .history
            .get(&row.order_id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        rows_checked += history.len();
        let versions: Vec<i64> = history.iter().map(|entry| entry.version).collect();
        if versions != (1..=row.version).collect::<Vec<_>>() {
            check.fail(format!(
                "order {}: history versions {versions:?}, the order is at version {}",
                row.order_id, row.version
            ));
            continue;
        }
        if history.last().map(|entry| entry.status) != Some(row.status) {
            check.fail(format!(
                "order {}: status {:?}, its latest history entry {:?}",
                row.order_id,
                row.status,
                history.last().map(|entry| entry.status)
            ));
        }
        let first_ok = match history.first() {
            Some(first) => {
                first.status == OrderStatus::Pending
                    || (first.status == OrderStatus::Cancelled && row.voided)
            }
            None => false,
        };
        if !first_ok {
            check.fail(format!(
                "order {}: placed as {:?}",
                row.order_id,
                history.first().map(|entry| entry.status)
            ));
        }
        for pair in history.windows(2) {
            if !legal(pair[0].status, pair[1].status) {
                check.fail(format!(
                    "order {}: version {} went {:?} → {:?}",
                    row.order_id, pair[1].version, pair[0].status, pair[1].status
                ));
            }
            if pair[1].changed_at < pair[0].changed_at {
                check.fail(format!(
                    "order {}: version {} changed at {} before version {} at {}",
                    row.order_id,
                    pair[1].version,
                    pair[1].changed_at,
                    pair[0].version,
                    pair[0].changed_at
                ));
            }
        }

        let observations = ledger
            .observations
            .get(&row.order_id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let (mut states, unsure) = states(observations);
        answers_checked += states.len();
        // Every answer shows a state PostgreSQL recorded, under that version.
        for &State {
            version, status, ..
        } in &states
        {
            let recorded = usize::try_from(version - 1)
                .ok()
                .and_then(|index| history.get(index));
            if recorded.map(|entry| entry.status) != Some(status) {
                check.fail(format!(
                    "order {}: an answer showed {status:?} at version {version}, the history has \
                     {:?}",
                    row.order_id,
                    recorded.map(|entry| entry.status)
                ));
            }
        }
        // A version was recorded after the first request that could have caused it was sent
        // and before the first answer that showed it arrived.
        for entry in history {
            let first_shown = states
                .iter()
                .filter(|state| state.version >= entry.version)
                .map(|state| state.received_us)
                .min();
            if let Some(received) = first_shown {
                if entry.changed_at > wall(received) + skew {
                    check.fail(format!(
                        "order {}: version {} recorded at {}, after an answer showing it \
                         arrived ({})",
                        row.order_id,
                        entry.version,
                        entry.changed_at,
                        wall(received)
                    ));
                }
            }
            let first_cause = states
                .iter()
                .filter(|state| state.version >= entry.version)
                .map(|state| state.sent_us)
                .min();
            let caused_by_us = entry.status != OrderStatus::Expired && unsure.is_empty();
            if let (Some(sent), true) = (first_cause, caused_by_us) {
                if entry.changed_at + skew < wall(sent) {
                    check.fail(format!(
                        "order {}: version {} recorded at {}, before any request that could \
                         cause it was sent ({})",
                        row.order_id,
                        entry.version,
                        entry.changed_at,
                        wall(sent)
                    ));
                }
            }
        }
        // Once an answer arrived, no later request is answered with an older version.
        states.sort_unstable_by_key(|state| state.received_us);
        let mut newest = Vec::with_capacity(states.len());
        let mut highest = 0;
        for state in &states {
            highest = highest.max(state.version);
            newest.push((state.received_us, highest));
        }
        for &State {
            sent_us, version, ..
        } in &states
        {
            let before = newest.partition_point(|(received, _)| *received < sent_us);
            if let Some(&(_, seen)) = before.checked_sub(1).and_then(|index| newest.get(index)) {
                if version < seen {
                    check.fail(format!(
                        "order {}: answered version {version} to a request sent after version \
                         {seen} had been answered",
                        row.order_id
                    ));
                }
            }
        }
    }
    check.done(format!(
        "{rows_checked} history rows: versions 1..n, legal transitions, in time order; \
         {answers_checked} answers match them and never went back"
    ))
}

/// The event type whose notification a history entry must have.
fn event_type(entry: &HistoryRow) -> &'static str {
    use orderflow_proto::topics;
    if entry.version == 1 {
        return topics::ORDER_CREATED;
    }
    match entry.status {
        OrderStatus::Paid => topics::ORDER_PAID,
        OrderStatus::Shipped => topics::ORDER_SHIPPED,
        OrderStatus::Completed => topics::ORDER_COMPLETED,
        _ => topics::ORDER_CANCELLED,
    }
}

fn notifications_once(facts: &Facts) -> Check {
    let mut check = Check::new("notifications_once");
    let mut total = 0;
    for row in &facts.orders {
        let expected: BTreeMap<&str, i64> = facts
            .history
            .get(&row.order_id)
            .into_iter()
            .flatten()
            .map(|entry| (event_type(entry), 1))
            .collect();
        let stored: BTreeMap<&str, i64> = facts
            .notifications
            .get(&row.order_id)
            .into_iter()
            .flatten()
            .map(|(event_type, count)| (event_type.as_str(), *count))
            .collect();
        total += stored.values().sum::<i64>();
        if stored != expected {
            check.fail(format!(
                "order {}: notifications {stored:?}, its history calls for {expected:?}",
                row.order_id
            ));
        }
    }
    check.done(format!(
        "{total} notifications, exactly one per event of every order"
    ))
}

fn sells_every_unit(ledger: &LedgerInner, sale: &FlashSaleExpected) -> Check {
    let mut check = Check::new("sells_every_unit");
    let acknowledged = ledger.placed.len() as i64;
    let expected = sale
        .units
        .min(i64::try_from(sale.buyers).unwrap_or(i64::MAX));
    if sale.errors > 0 {
        return check.done(format!(
            "not judged: {} answers were errors, so some buyers never competed",
            sale.errors
        ));
    }
    if sale.cut_short && acknowledged < expected {
        return check.done(format!(
            "not judged: the race was stopped after {} buyers, {acknowledged} orders",
            sale.buyers
        ));
    }
    if acknowledged != expected {
        check.fail(format!(
            "{acknowledged} orders for {} units and {} buyers, every answer an order or sold out",
            sale.units, sale.buyers
        ));
    }
    check.done(format!(
        "exactly {expected} orders: every unit sold, every other buyer told it is sold out"
    ))
}

#[cfg(test)]
mod tests {
    use super::super::record::{Observation, Placed};
    use super::*;

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(seconds)
    }

    /// One order placed at t=1 s and paid at t=2 s, as the client saw it and as stored.
    fn paid_order() -> (LedgerInner, Facts, Expected) {
        let order_id = Uuid::now_v7();
        let mut ledger = LedgerInner {
            epoch_wall: at(0),
            ..LedgerInner::default()
        };
        ledger.placed.insert(
            order_id,
            Placed {
                order_id,
                user_id: "u".into(),
                idempotency_key: "r-k1".into(),
                items: vec![("S".into(), 2)],
                total_cents: 200,
            },
        );
        ledger.by_key.insert("r-k1".into(), order_id);
        let state = |sent_s: u64, version, status| Observation {
            sent_us: sent_s * 1_000_000,
            received_us: sent_s * 1_000_000 + 100_000,
            seen: Seen::State { version, status },
        };
        ledger.observations.insert(
            order_id,
            vec![
                state(1, 1, OrderStatus::Pending),
                state(2, 2, OrderStatus::Paid),
            ],
        );
        let facts = Facts {
            orders: vec![OrderRow {
                order_id,
                user_id: "u".into(),
                idempotency_key: "r-k1".into(),
                status: OrderStatus::Paid,
                version: 2,
                total_cents: 200,
                voided: false,
            }],
            items: HashMap::from([(order_id, vec![("S".into(), 2, 100)])]),
            history: HashMap::from([(
                order_id,
                vec![
                    HistoryRow {
                        version: 1,
                        status: OrderStatus::Pending,
                        changed_at: at(1),
                    },
                    HistoryRow {
                        version: 2,
                        status: OrderStatus::Paid,
                        changed_at: at(2),
                    },
                ],
            )]),
            notifications: HashMap::from([(
                order_id,
                vec![("order-created".into(), 1), ("order-paid".into(), 1)],
            )]),
            durable: HashMap::from([("S".into(), [8, 0, 2])]),
            live: HashMap::from([("S".into(), [8, 0, 2])]),
            refusals: 0,
        };
        let expected = Expected {
            skus: vec![("S".into(), 10)],
            flash_sale: None,
            clock_skew: Duration::from_millis(200),
            drained: Ok(Duration::from_millis(10)),
            orphans_returned: Ok(Duration::ZERO),
        };
        (ledger, facts, expected)
    }

    fn failed(ledger: &LedgerInner, facts: &Facts, expected: &Expected) -> Vec<&'static str> {
        check(ledger, facts, expected)
            .into_iter()
            .filter(|check| !check.ok)
            .map(|check| check.name)
            .collect()
    }

    #[test]
    fn a_consistent_run_passes_every_check() {
        let (ledger, facts, expected) = paid_order();
        assert_eq!(failed(&ledger, &facts, &expected), Vec::<&str>::new());
    }

    #[test]
    fn each_kind_of_damage_fails_its_check() {
        let (ledger, mut facts, expected) = paid_order();
        facts.durable.insert("S".into(), [7, 0, 2]);
        let failures = failed(&ledger, &facts, &expected);
        assert!(failures.contains(&"bank") && failures.contains(&"stock_counters_match"));

        let (ledger, mut facts, expected) = paid_order();
        facts.orders[0].status = OrderStatus::Cancelled;
        facts.history.values_mut().for_each(|history| {
            history[1].status = OrderStatus::Cancelled;
        });
        facts.durable.insert("S".into(), [10, 0, 0]);
        facts.live.insert("S".into(), [10, 0, 0]);
        facts.notifications.values_mut().for_each(|stored| {
            stored[1].0 = "order-cancelled".into();
        });
        assert_eq!(
            failed(&ledger, &facts, &expected),
            ["final_status", "statuses_only_forward"]
        );

        let (ledger, mut facts, expected) = paid_order();
        facts.notifications.values_mut().for_each(|stored| {
            stored[1].1 = 2;
        });
        assert_eq!(failed(&ledger, &facts, &expected), ["notifications_once"]);

        let (ledger, mut facts, expected) = paid_order();
        facts.orders.clear();
        let failures = failed(&ledger, &facts, &expected);
        assert!(failures.contains(&"acknowledged_orders_persisted_once"));

        let (mut ledger, facts, expected) = paid_order();
        // A read sent after the payment was answered still showed the order unpaid.
        let order_id = *ledger.placed.keys().next().expect("one order");
        ledger
            .observations
            .get_mut(&order_id)
            .expect("observed")
            .push(Observation {
                sent_us: 3_000_000,
                received_us: 3_100_000,
                seen: Seen::State {
                    version: 1,
                    status: OrderStatus::Pending,
                },
            });
        assert_eq!(
            failed(&ledger, &facts, &expected),
            ["statuses_only_forward"]
        );

        let (ledger, mut facts, expected) = paid_order();
        // Recorded long after the client had its answer.
        facts.history.values_mut().for_each(|history| {
            history[1].changed_at = at(5);
        });
        assert_eq!(
            failed(&ledger, &facts, &expected),
            ["statuses_only_forward"]
        );
    }

    #[test]
    fn an_unacknowledged_order_is_allowed_only_for_a_key_whose_client_heard_an_error() {
        let (mut ledger, mut facts, expected) = paid_order();
        let ghost = Uuid::now_v7();
        facts.orders.push(OrderRow {
            order_id: ghost,
            user_id: "u".into(),
            idempotency_key: "r-k2".into(),
            status: OrderStatus::Cancelled,
            version: 1,
            total_cents: 100,
            voided: true,
        });
        facts.history.insert(
            ghost,
            vec![HistoryRow {
                version: 1,
                status: OrderStatus::Cancelled,
                changed_at: at(1),
            }],
        );
        facts
            .notifications
            .insert(ghost, vec![("order-created".into(), 1)]);
        assert_eq!(
            failed(&ledger, &facts, &expected),
            ["one_order_per_idempotency_key"]
        );
        ledger.unsure_keys.push("r-k2".into());
        assert_eq!(failed(&ledger, &facts, &expected), Vec::<&str>::new());
    }

    #[test]
    fn a_flash_sale_must_sell_exactly_its_units() {
        let (ledger, facts, mut expected) = paid_order();
        let sale = |units, errors| FlashSaleExpected {
            sku: "S".into(),
            units,
            buyers: 100,
            errors,
            cut_short: false,
        };
        expected.flash_sale = Some(sale(1, 0));
        assert_eq!(failed(&ledger, &facts, &expected), Vec::<&str>::new());
        expected.flash_sale = Some(sale(2, 0));
        assert_eq!(failed(&ledger, &facts, &expected), ["sells_every_unit"]);
        expected.flash_sale = Some(sale(2, 3));
        assert_eq!(failed(&ledger, &facts, &expected), Vec::<&str>::new());
        expected.flash_sale = Some(sale(0, 0));
        let failures = failed(&ledger, &facts, &expected);
        assert!(failures.contains(&"no_oversell"), "{failures:?}");
    }
}

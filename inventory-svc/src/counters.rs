//! The live stock counters and reservations in Redis: the fast admission gate.
//!
//! Key layout (every key carries the deployment prefix as its hash tag, so one script may touch
//! them together on a Redis Cluster too):
//! - `{prefix}:stock:<sku>`: hash `available`, `reserved`, `sold`, `price_cents`, `fence`
//! - `{prefix}:reservation:<order_id>`: hash `state` and one `item:<sku>` =
//!   `quantity:unit_price` per line; it expires a while after the reservation could.
//!
//! Every change is one Lua script (`scripts/*.lua`, loaded at start-up and run by SHA), so it is
//! atomic: admission checks every item and only then decrements, and concurrent buyers can never
//! take more units than `available` holds. PostgreSQL (`ledger`) stays the truth; these counters
//! only ever run behind it (units not yet recorded there are counted as taken), except after a
//! rebuild while reservations were in flight, which PostgreSQL's own check then catches.

use std::time::Duration;

use orderflow_runtime::redis::RedisArgs;
use orderflow_runtime::redis::RedisConnection;
use redis::{Script, ScriptInvocation};

use crate::error::InventoryError;
use crate::stock::SkuRow;
use crate::stock::{Line, ReservationState, ReservedLine, Settlement, StockLevel};

/// A reservation as Redis holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedReservation {
    /// `None` while PostgreSQL has not yet recorded it.
    pub state: Option<ReservationState>,
    pub lines: Vec<ReservedLine>,
}

/// What the admission script decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Admitted {
    /// This call took the units; PostgreSQL must record it next.
    New(CachedReservation),
    /// The order already had a reservation (a retry): nothing was taken again.
    Existing(CachedReservation),
    /// No counters for the line at this index.
    Missing(usize),
    /// Not enough stock for the line at this index; `available` is what there was.
    Short { index: usize, available: i64 },
}

/// How to undo an admission PostgreSQL did not record.
#[derive(Debug, Clone, Copy)]
pub enum Undo<'a> {
    /// PostgreSQL did not take the units: give them back.
    GiveBack,
    /// PostgreSQL refused because it had less than Redis thought: per line, the units it had.
    /// Redis ran ahead, so its `available` is lowered to those instead.
    Clamp(&'a [i64]),
}

#[derive(Clone)]
pub struct Counters {
    redis: RedisConnection,
    keys: RedisArgs,
    scripts: Scripts,
}

#[derive(Clone)]
struct Scripts {
    reserve: Script,
    confirm: Script,
    undo: Script,
    settle: Script,
    restore: Script,
    set_stock: Script,
    reconcile: Script,
    unrecorded: Script,
}

impl Counters {
    pub fn new(redis: RedisConnection, keys: RedisArgs) -> Self {
        Self {
            redis,
            keys,
            scripts: Scripts {
                reserve: Script::new(include_str!("scripts/reserve.lua")),
                confirm: Script::new(include_str!("scripts/confirm.lua")),
                undo: Script::new(include_str!("scripts/undo.lua")),
                settle: Script::new(include_str!("scripts/settle.lua")),
                restore: Script::new(include_str!("scripts/restore.lua")),
                set_stock: Script::new(include_str!("scripts/set_stock.lua")),
                reconcile: Script::new(include_str!("scripts/reconcile.lua")),
                // KEYS: the unrecorded set; ARGV: age (ms), limit. On Redis's clock.
                unrecorded: Script::new(
                    "local now = redis.call('TIME') \
                     local cutoff = now[1] * 1000 + math.floor(now[2] / 1000) - tonumber(ARGV[1]) \
                     return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff, \
                                       'LIMIT', 0, tonumber(ARGV[2]))",
                ),
            },
        }
    }

    /// Loads every script into Redis so calls go by SHA (`EVALSHA`) from the first one. A Redis
    /// that restarted and forgot them gets them again transparently on first use.
    pub async fn preload(&self) -> Result<(), redis::RedisError> {
        let scripts = &self.scripts;
        for script in [
            &scripts.reserve,
            &scripts.confirm,
            &scripts.undo,
            &scripts.settle,
            &scripts.restore,
            &scripts.set_stock,
            &scripts.reconcile,
            &scripts.unrecorded,
        ] {
            script.load_async(&mut self.redis.clone()).await?;
        }
        Ok(())
    }

    fn stock_key(&self, sku: &str) -> String {
        self.keys.key(&["stock", sku])
    }

    fn reservation_key(&self, order_id: &str) -> String {
        self.keys.key(&["reservation", order_id])
    }

    /// The sorted set of admissions PostgreSQL has not recorded yet, scored by admission time.
    fn unrecorded_key(&self) -> String {
        self.keys.key(&["unrecorded"])
    }

    /// The counters of each SKU, in order, `None` where Redis has none; one round trip.
    pub async fn stock_levels(
        &self,
        skus: &[String],
    ) -> Result<Vec<Option<StockLevel>>, InventoryError> {
        let mut pipe = redis::pipe();
        for sku in skus {
            pipe.hget(
                self.stock_key(sku),
                &["available", "reserved", "sold", "price_cents"],
            );
        }
        let rows: Vec<[Option<i64>; 4]> = pipe.query_async(&mut self.redis.clone()).await?;
        Ok(skus
            .iter()
            .zip(rows)
            .map(|(sku, [available, reserved, sold, price])| {
                Some(StockLevel {
                    sku: sku.clone(),
                    available: available?,
                    reserved: reserved.unwrap_or(0),
                    sold: sold.unwrap_or(0),
                    price_cents: price?,
                })
            })
            .collect())
    }

    /// Takes the units of every line, or none; keeps the reservation hash for `keep`.
    pub async fn admit(
        &self,
        order_id: &str,
        lines: &[Line],
        keep: Duration,
    ) -> Result<Admitted, InventoryError> {
        let mut invocation = self.scripts.reserve.prepare_invoke();
        invocation
            .key(self.reservation_key(order_id))
            .key(self.unrecorded_key())
            .arg(u64::try_from(keep.as_millis()).unwrap_or(u64::MAX))
            .arg(order_id);
        for line in lines {
            invocation
                .key(self.stock_key(&line.sku))
                .arg(&line.sku)
                .arg(line.quantity);
        }
        let reply: Vec<String> = invocation.invoke_async(&mut self.redis.clone()).await?;
        parse_admission(&reply)
    }

    /// Marks the batch's reservations as recorded by PostgreSQL; one round trip.
    pub async fn confirm(&self, order_ids: &[String]) -> Result<(), InventoryError> {
        if order_ids.is_empty() {
            return Ok(());
        }
        let mut invocation = self.scripts.confirm.prepare_invoke();
        invocation.key(self.unrecorded_key());
        for order_id in order_ids {
            invocation.key(self.reservation_key(order_id)).arg(order_id);
        }
        let _confirmed: i64 = invocation.invoke_async(&mut self.redis.clone()).await?;
        Ok(())
    }

    pub async fn undo(
        &self,
        order_id: &str,
        lines: &[ReservedLine],
        undo: Undo<'_>,
    ) -> Result<(), InventoryError> {
        let mut invocation = self.scripts.undo.prepare_invoke();
        invocation
            .key(self.reservation_key(order_id))
            .key(self.unrecorded_key())
            .arg(order_id);
        for (index, line) in lines.iter().enumerate() {
            let ceiling = match undo {
                Undo::GiveBack => -1,
                Undo::Clamp(available) => available.get(index).copied().unwrap_or(0),
            };
            invocation
                .key(self.stock_key(&line.sku))
                .arg(line.quantity)
                .arg(ceiling);
        }
        let _undone: i64 = invocation.invoke_async(&mut self.redis.clone()).await?;
        Ok(())
    }

    /// Orders admitted more than `age` ago (by Redis's clock, the one admissions are stamped
    /// with) that PostgreSQL has not been confirmed to record: their admitting process may have
    /// died between Redis and PostgreSQL. At most `limit`, oldest first.
    pub async fn unrecorded_for(
        &self,
        age: Duration,
        limit: usize,
    ) -> Result<Vec<String>, InventoryError> {
        Ok(self
            .scripts
            .unrecorded
            .key(self.unrecorded_key())
            .arg(u64::try_from(age.as_millis()).unwrap_or(u64::MAX))
            .arg(limit)
            .invoke_async(&mut self.redis.clone())
            .await?)
    }

    /// The reserved lines of an order as Redis holds them (empty if Redis has no reservation).
    pub async fn reserved_lines(
        &self,
        order_id: &str,
    ) -> Result<Vec<ReservedLine>, InventoryError> {
        let fields: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.reservation_key(order_id))
            .query_async(&mut self.redis.clone())
            .await?;
        let mut lines = fields
            .into_iter()
            .filter_map(|(name, value)| {
                let sku = name.strip_prefix("item:")?.to_owned();
                Some((sku, value))
            })
            .map(|(sku, value)| {
                let (quantity, price) = value
                    .split_once(':')
                    .ok_or_else(|| corrupt(&format!("item {sku} = {value:?}")))?;
                Ok(ReservedLine {
                    sku,
                    quantity: parse_number(quantity)?,
                    unit_price_cents: parse_number(price)?,
                })
            })
            .collect::<Result<Vec<_>, InventoryError>>()?;
        lines.sort_by(|a, b| a.sku.cmp(&b.sku));
        Ok(lines)
    }

    /// Mirrors a settlement PostgreSQL made. Idempotent: a reservation already settled, or lost
    /// with Redis's data, is left alone.
    pub async fn settle(
        &self,
        order_id: &str,
        lines: &[ReservedLine],
        settlement: Settlement,
    ) -> Result<(), InventoryError> {
        let mut invocation = self.scripts.settle.prepare_invoke();
        invocation
            .key(self.reservation_key(order_id))
            .arg(settlement.target().as_str());
        for line in lines {
            invocation.key(self.stock_key(&line.sku)).arg(line.quantity);
        }
        let _before: String = invocation.invoke_async(&mut self.redis.clone()).await?;
        Ok(())
    }

    /// Recreates a SKU's counters from its PostgreSQL row unless they exist; true if it did.
    pub async fn restore(&self, row: &SkuRow, fence: i64) -> Result<bool, InventoryError> {
        let restored: i64 = self
            .with_row(&self.scripts.restore, row, fence)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(restored == 1)
    }

    /// An invocation of `script` on the row's stock hash with the row's values and `fence`.
    fn with_row<'a>(&self, script: &'a Script, row: &SkuRow, fence: i64) -> ScriptInvocation<'a> {
        let level = &row.level;
        let mut invocation = script.prepare_invoke();
        invocation
            .key(self.stock_key(&level.sku))
            .arg(level.available)
            .arg(level.reserved)
            .arg(level.sold)
            .arg(level.price_cents)
            .arg(fence);
        invocation
    }

    /// Drops a SKU's counters; the next use rebuilds them from PostgreSQL.
    pub async fn forget(&self, sku: &str) -> Result<(), InventoryError> {
        let () = redis::cmd("DEL")
            .arg(self.stock_key(sku))
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(())
    }

    /// Every order Redis admitted that PostgreSQL has not been confirmed to record.
    pub async fn unrecorded(&self) -> Result<Vec<String>, InventoryError> {
        Ok(redis::cmd("ZRANGE")
            .arg(self.unrecorded_key())
            .arg(0)
            .arg(-1)
            .query_async(&mut self.redis.clone())
            .await?)
    }

    /// Sets a SKU's counters to PostgreSQL's `row` plus the units of admissions PostgreSQL has
    /// not recorded (all unrecorded ones except `recorded`), atomically. Answers the counters
    /// before (`None` if there were none) and the units found in flight.
    pub async fn reconcile(
        &self,
        row: &SkuRow,
        fence: i64,
        recorded: &[String],
    ) -> Result<(Option<StockLevel>, i64), InventoryError> {
        let level = &row.level;
        let reply: Vec<String> = self
            .with_row(&self.scripts.reconcile, row, fence)
            .key(self.unrecorded_key())
            .arg(&level.sku)
            .arg(self.reservation_key(""))
            .arg(recorded)
            .invoke_async(&mut self.redis.clone())
            .await?;
        match reply.as_slice() {
            [kind] if kind == "fenced" => Err(InventoryError::Fenced {
                sku: level.sku.clone(),
                token: fence,
            }),
            [kind, available, reserved, sold, price, in_flight] if kind == "reconciled" => {
                let before = match [available, reserved, sold, price].map(|v| v.parse().ok()) {
                    [Some(available), Some(reserved), Some(sold), Some(price_cents)] => {
                        Some(StockLevel {
                            sku: level.sku.clone(),
                            available,
                            reserved,
                            sold,
                            price_cents,
                        })
                    }
                    _ => None,
                };
                Ok((before, parse_number(in_flight)?))
            }
            other => Err(corrupt(&format!("reconcile script answered {other:?}"))),
        }
    }

    /// Applies an operator's change of `available_delta` units (and the new price) made in
    /// PostgreSQL under fencing token `fence`.
    pub async fn set_stock(
        &self,
        available_delta: i64,
        row: &SkuRow,
        fence: i64,
    ) -> Result<(), InventoryError> {
        let outcome: String = self
            .with_row(&self.scripts.set_stock, row, fence)
            .arg(available_delta)
            .invoke_async(&mut self.redis.clone())
            .await?;
        if outcome == "fenced" {
            return Err(InventoryError::Fenced {
                sku: row.level.sku.clone(),
                token: fence,
            });
        }
        Ok(())
    }
}

fn corrupt(what: &str) -> InventoryError {
    InventoryError::Corrupt(what.to_owned())
}

fn parse_number(text: &str) -> Result<i64, InventoryError> {
    text.parse()
        .map_err(|_| corrupt(&format!("expected a number, got {text:?}")))
}

fn parse_index(text: Option<&String>) -> Result<usize, InventoryError> {
    text.and_then(|t| t.parse().ok())
        .ok_or_else(|| corrupt("reserve script answered without an item index"))
}

fn parse_admission(reply: &[String]) -> Result<Admitted, InventoryError> {
    let (kind, rest) = reply
        .split_first()
        .ok_or_else(|| corrupt("reserve script answered nothing"))?;
    match kind.as_str() {
        "missing" => Ok(Admitted::Missing(parse_index(rest.first())?)),
        "short" => Ok(Admitted::Short {
            index: parse_index(rest.first())?,
            available: parse_number(rest.get(1).map_or("", String::as_str))?,
        }),
        "admitted" | "existing" => {
            let [state, items @ ..] = rest else {
                return Err(corrupt("reserve script answered without a state"));
            };
            let state = match state.as_str() {
                "admitting" => None,
                other => Some(
                    ReservationState::parse(other)
                        .ok_or_else(|| corrupt(&format!("unknown reservation state {other:?}")))?,
                ),
            };
            let mut lines = items
                .chunks(3)
                .map(|chunk| match chunk {
                    [sku, quantity, price] => Ok(ReservedLine {
                        sku: sku.clone(),
                        quantity: parse_number(quantity)?,
                        unit_price_cents: parse_number(price)?,
                    }),
                    _ => Err(corrupt("reserve script answered a partial item")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            lines.sort_by(|a, b| a.sku.cmp(&b.sku));
            let reservation = CachedReservation { state, lines };
            if kind == "admitted" {
                Ok(Admitted::New(reservation))
            } else {
                Ok(Admitted::Existing(reservation))
            }
        }
        other => Err(corrupt(&format!("reserve script answered {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_every_reply_kind() {
        assert_eq!(
            parse_admission(&strings(&[
                "admitted",
                "admitting",
                "b",
                "2",
                "150",
                "a",
                "1",
                "99"
            ]))
            .unwrap(),
            Admitted::New(CachedReservation {
                state: None,
                lines: vec![
                    ReservedLine {
                        sku: "a".into(),
                        quantity: 1,
                        unit_price_cents: 99
                    },
                    ReservedLine {
                        sku: "b".into(),
                        quantity: 2,
                        unit_price_cents: 150
                    }
                ],
            })
        );
        assert_eq!(
            parse_admission(&strings(&["existing", "released"])).unwrap(),
            Admitted::Existing(CachedReservation {
                state: Some(ReservationState::Released),
                lines: vec![],
            })
        );
        assert_eq!(
            parse_admission(&strings(&["missing", "3"])).unwrap(),
            Admitted::Missing(3)
        );
        assert_eq!(
            parse_admission(&strings(&["short", "1", "0"])).unwrap(),
            Admitted::Short {
                index: 1,
                available: 0
            }
        );
    }

    #[test]
    fn refuses_malformed_replies() {
        for reply in [
            strings(&[]),
            strings(&["short", "x", "1"]),
            strings(&["admitted"]),
            strings(&["admitted", "reserved", "a", "2"]),
            strings(&["existing", "lost"]),
            strings(&["surprise"]),
        ] {
            assert!(matches!(
                parse_admission(&reply),
                Err(InventoryError::Corrupt(_))
            ));
        }
    }
}

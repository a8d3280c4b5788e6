//! The live stock counters and reservations in Redis.
//!
//! Key layout (every key carries the deployment prefix as its hash tag, so one script may touch
//! them together on a Redis Cluster too):
//! - `{prefix}:stock:<sku>`: hash `available`, `reserved`, `sold`, `price_cents`
//! - `{prefix}:reservation:<order_id>`: hash `state` and one `item:<sku>` = `quantity:unit_price`
//!
//! Admission is one Lua script (loaded once, then run by SHA): it checks every item and only then
//! decrements, so concurrent buyers can never take more units than `available` holds.

use orderflow_runtime::config::RedisArgs;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};

use crate::error::InventoryError;
use crate::stock::{Line, ReservationState, ReservedLine, StockLevel};

/// What the reserve script decided.
#[derive(Debug, PartialEq, Eq)]
pub enum ReserveOutcome {
    /// This call reserved the lines.
    Reserved(Vec<ReservedLine>),
    /// The order already had a reservation: the first answer, in the state it is in now.
    Existing(ReservationState, Vec<ReservedLine>),
    /// No counters for the line at this index.
    Missing(usize),
    /// Not enough stock for the line at this index; `available` is what there was.
    Short { index: usize, available: i64 },
}

/// A reservation as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReservation {
    pub state: ReservationState,
    pub lines: Vec<ReservedLine>,
}

#[derive(Clone)]
pub struct Counters {
    redis: ConnectionManager,
    keys: RedisArgs,
    reserve: Script,
    release: Script,
}

impl Counters {
    pub fn new(redis: ConnectionManager, keys: RedisArgs) -> Self {
        Self {
            redis,
            keys,
            reserve: Script::new(include_str!("scripts/reserve.lua")),
            release: Script::new(include_str!("scripts/release.lua")),
        }
    }

    fn stock_key(&self, sku: &str) -> String {
        self.keys.key(&["stock", sku])
    }

    fn reservation_key(&self, order_id: &str) -> String {
        self.keys.key(&["reservation", order_id])
    }

    pub async fn set_stock(
        &self,
        sku: &str,
        available: i64,
        price_cents: i64,
    ) -> Result<(), InventoryError> {
        let mut redis = self.redis.clone();
        let () = redis
            .hset_multiple(
                self.stock_key(sku),
                &[("available", available), ("price_cents", price_cents)],
            )
            .await?;
        Ok(())
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
        let mut redis = self.redis.clone();
        let rows: Vec<[Option<i64>; 4]> = pipe.query_async(&mut redis).await?;
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

    pub async fn reserve(
        &self,
        order_id: &str,
        lines: &[Line],
    ) -> Result<ReserveOutcome, InventoryError> {
        let mut invocation = self.reserve.prepare_invoke();
        invocation.key(self.reservation_key(order_id));
        for line in lines {
            invocation
                .key(self.stock_key(&line.sku))
                .arg(&line.sku)
                .arg(line.quantity);
        }
        let mut redis = self.redis.clone();
        let reply: Vec<String> = invocation.invoke_async(&mut redis).await?;
        parse_reserve_reply(&reply)
    }

    pub async fn reservation(
        &self,
        order_id: &str,
    ) -> Result<Option<StoredReservation>, InventoryError> {
        let mut redis = self.redis.clone();
        let fields: Vec<(String, String)> = redis.hgetall(self.reservation_key(order_id)).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let mut state = None;
        let mut lines = Vec::new();
        for (name, value) in fields {
            if name == "state" {
                state = ReservationState::parse(&value);
            } else if let Some(sku) = name.strip_prefix("item:") {
                let (quantity, price) = value
                    .split_once(':')
                    .ok_or_else(|| corrupt(&format!("item {name} = {value:?}")))?;
                lines.push(ReservedLine {
                    sku: sku.to_owned(),
                    quantity: parse_number(quantity)?,
                    unit_price_cents: parse_number(price)?,
                });
            }
        }
        lines.sort_by(|a, b| a.sku.cmp(&b.sku));
        let state = state.ok_or_else(|| corrupt("reservation without a state"))?;
        Ok(Some(StoredReservation { state, lines }))
    }

    /// Returns the reservation's units to stock if it is still reserved. Answers the state found
    /// before the call (`Reserved` means this call released it), `None` if there is none.
    pub async fn release(
        &self,
        order_id: &str,
        lines: &[ReservedLine],
    ) -> Result<Option<ReservationState>, InventoryError> {
        let mut invocation = self.release.prepare_invoke();
        invocation.key(self.reservation_key(order_id));
        for line in lines {
            invocation.key(self.stock_key(&line.sku)).arg(line.quantity);
        }
        let mut redis = self.redis.clone();
        let reply: String = invocation.invoke_async(&mut redis).await?;
        if reply == "missing" {
            return Ok(None);
        }
        ReservationState::parse(&reply)
            .map(Some)
            .ok_or_else(|| corrupt(&format!("release script answered {reply:?}")))
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

fn parse_reserve_reply(reply: &[String]) -> Result<ReserveOutcome, InventoryError> {
    let (kind, rest) = reply
        .split_first()
        .ok_or_else(|| corrupt("reserve script answered nothing"))?;
    match kind.as_str() {
        "missing" => Ok(ReserveOutcome::Missing(parse_index(rest.first())?)),
        "short" => Ok(ReserveOutcome::Short {
            index: parse_index(rest.first())?,
            available: parse_number(rest.get(1).map_or("", String::as_str))?,
        }),
        "reserved" | "existing" => {
            let (state, items) = rest
                .split_first()
                .ok_or_else(|| corrupt("reserve script answered without a state"))?;
            let state = ReservationState::parse(state)
                .ok_or_else(|| corrupt(&format!("unknown reservation state {state:?}")))?;
            let lines = items
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
            if kind == "reserved" {
                Ok(ReserveOutcome::Reserved(lines))
            } else {
                Ok(ReserveOutcome::Existing(state, lines))
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
            parse_reserve_reply(&strings(&["reserved", "reserved", "a", "2", "150"])).unwrap(),
            ReserveOutcome::Reserved(vec![ReservedLine {
                sku: "a".into(),
                quantity: 2,
                unit_price_cents: 150
            }])
        );
        assert_eq!(
            parse_reserve_reply(&strings(&["existing", "released"])).unwrap(),
            ReserveOutcome::Existing(ReservationState::Released, vec![])
        );
        assert_eq!(
            parse_reserve_reply(&strings(&["missing", "3"])).unwrap(),
            ReserveOutcome::Missing(3)
        );
        assert_eq!(
            parse_reserve_reply(&strings(&["short", "1", "0"])).unwrap(),
            ReserveOutcome::Short {
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
            strings(&["reserved", "reserved", "a", "2"]),
            strings(&["surprise"]),
        ] {
            assert!(matches!(
                parse_reserve_reply(&reply),
                Err(InventoryError::Corrupt(_))
            ));
        }
    }
}

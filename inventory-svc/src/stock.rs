//! The reservation rules, free of I/O: what a valid request is, and what a counter reply means.

use std::collections::HashSet;

use orderflow_proto::inventory::v1::ReserveItem;
use orderflow_proto::limits::{
    MAX_ITEMS_PER_ORDER, MAX_PRICE_CENTS, MAX_QUANTITY_PER_ITEM, MAX_SKU_LEN, MAX_STOCK_QUANTITY,
};
use orderflow_runtime::validate::{self, FieldError};

/// One validated line of a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub sku: String,
    pub quantity: i64,
}

/// A line as it was reserved, with the unit price at that moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedLine {
    pub sku: String,
    pub quantity: i64,
    pub unit_price_cents: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationState {
    Reserved,
    Committed,
    Released,
}

impl ReservationState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::Committed => "committed",
            Self::Released => "released",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Reserved, Self::Committed, Self::Released]
            .into_iter()
            .find(|state| state.as_str() == text)
    }
}

/// How a reservation ends: its units go back to stock, or they are sold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    Release,
    Commit,
}

impl Settlement {
    pub fn target(self) -> ReservationState {
        match self {
            Self::Release => ReservationState::Released,
            Self::Commit => ReservationState::Committed,
        }
    }

    /// The verb for error messages: "… it cannot be released".
    pub fn past_participle(self) -> &'static str {
        match self {
            Self::Release => "released",
            Self::Commit => "committed",
        }
    }
}

/// What settling a reservation in `current` state does. The reservation state machine is
/// `reserved → committed` and `reserved → released`, nothing else; repeating the transition
/// that already happened is a no-op, so retries are safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleStep {
    Apply,
    AlreadyDone,
    Refuse,
}

pub fn settle_step(current: ReservationState, settlement: Settlement) -> SettleStep {
    if current == settlement.target() {
        SettleStep::AlreadyDone
    } else if current == ReservationState::Reserved {
        SettleStep::Apply
    } else {
        SettleStep::Refuse
    }
}

/// Which counters a movement of units changes, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Movement {
    Reserve,
    Settle(Settlement),
}

/// A change to one SKU's counters. Every movement keeps `available + reserved + sold` constant:
/// units move between the counters, they are never created or lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockDelta {
    pub sku: String,
    pub available: i64,
    pub reserved: i64,
    pub sold: i64,
}

/// The per-SKU changes of moving `lines` (from one or several reservations), one delta per SKU,
/// sorted by SKU: the order in which PostgreSQL rows are locked, so concurrent transactions
/// never deadlock.
pub fn stock_deltas<'a>(
    movement: Movement,
    lines: impl IntoIterator<Item = (&'a str, i64)>,
) -> Vec<StockDelta> {
    let mut totals: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
    for (sku, quantity) in lines {
        *totals.entry(sku).or_default() += quantity;
    }
    totals
        .into_iter()
        .map(|(sku, units)| {
            let (available, reserved, sold) = match movement {
                Movement::Reserve => (-units, units, 0),
                Movement::Settle(Settlement::Release) => (units, -units, 0),
                Movement::Settle(Settlement::Commit) => (0, -units, units),
            };
            StockDelta {
                sku: sku.to_owned(),
                available,
                reserved,
                sold,
            }
        })
        .collect()
}

/// A SKU's counters as the operator sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockLevel {
    pub sku: String,
    pub available: i64,
    pub reserved: i64,
    pub sold: i64,
    pub price_cents: i64,
}

/// A SKU's durable state: its counters and the fence of the last locked change that wrote them
/// (PostgreSQL holds it; the Redis counters are restored from it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkuRow {
    pub level: StockLevel,
    pub fence: i64,
}

pub fn sku(field: &str, sku: &str) -> Result<(), FieldError> {
    validate::identifier(field, sku, MAX_SKU_LEN)
}

/// SetStock's arguments: a SKU, a quantity and a price within the contract's limits.
pub fn stock_setting(sku_value: &str, quantity: i64, price_cents: i64) -> Result<(), FieldError> {
    sku("sku", sku_value)?;
    validate::in_range("quantity", quantity, 0, MAX_STOCK_QUANTITY)?;
    validate::in_range("price_cents", price_cents, 0, MAX_PRICE_CENTS)?;
    Ok(())
}

/// A reservation's lines: 1 to `MAX_ITEMS_PER_ORDER` distinct SKUs, each with a sane quantity.
pub fn reservation_lines(items: Vec<ReserveItem>) -> Result<Vec<Line>, FieldError> {
    if items.is_empty() {
        return Err(FieldError::new("items", "must contain at least one item"));
    }
    if items.len() > MAX_ITEMS_PER_ORDER {
        return Err(FieldError::new(
            "items",
            format!(
                "must contain at most {MAX_ITEMS_PER_ORDER} items, got {}",
                items.len()
            ),
        ));
    }
    let mut seen = HashSet::with_capacity(items.len());
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            sku(&format!("items[{index}].sku"), &item.sku)?;
            validate::in_range(
                &format!("items[{index}].quantity"),
                item.quantity,
                1,
                MAX_QUANTITY_PER_ITEM,
            )?;
            if !seen.insert(item.sku.clone()) {
                return Err(FieldError::new(
                    format!("items[{index}].sku"),
                    format!("SKU {:?} appears more than once", item.sku),
                ));
            }
            Ok(Line {
                sku: item.sku,
                quantity: item.quantity,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(sku: &str, quantity: i64) -> ReserveItem {
        ReserveItem {
            sku: sku.into(),
            quantity,
        }
    }

    #[test]
    fn accepts_distinct_skus_with_positive_quantities() {
        let lines = reservation_lines(vec![item("a", 1), item("b", 2)]).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].quantity, 2);
    }

    #[test]
    fn names_the_offending_field() {
        let cases = [
            (vec![], "items: must contain at least one item"),
            (vec![item("", 1)], "items[0].sku: must not be empty"),
            (
                vec![item("a", 1), item("b", 0)],
                "items[1].quantity: must be between 1 and 10000, got 0",
            ),
            (
                vec![item("a", -3)],
                "items[0].quantity: must be between 1 and 10000, got -3",
            ),
            (
                vec![item("a", 1), item("a", 2)],
                "items[1].sku: SKU \"a\" appears more than once",
            ),
        ];
        for (items, expected) in cases {
            assert_eq!(reservation_lines(items).unwrap_err().to_string(), expected);
        }
        let too_many = (0..=MAX_ITEMS_PER_ORDER)
            .map(|i| item(&i.to_string(), 1))
            .collect();
        assert!(reservation_lines(too_many)
            .unwrap_err()
            .to_string()
            .starts_with("items: must contain at most 100 items"));
    }

    #[test]
    fn stock_settings_are_bounded() {
        assert!(stock_setting("a", 0, 0).is_ok());
        assert_eq!(stock_setting("a", -1, 0).unwrap_err().field, "quantity");
        assert_eq!(stock_setting("a", 1, -1).unwrap_err().field, "price_cents");
    }

    #[test]
    fn reservations_settle_once_and_only_from_reserved() {
        use ReservationState::{Committed, Released, Reserved};
        use Settlement::{Commit, Release};
        let expected = [
            (Reserved, Release, SettleStep::Apply),
            (Reserved, Commit, SettleStep::Apply),
            (Released, Release, SettleStep::AlreadyDone),
            (Committed, Commit, SettleStep::AlreadyDone),
            (Committed, Release, SettleStep::Refuse),
            (Released, Commit, SettleStep::Refuse),
        ];
        for (current, settlement, step) in expected {
            assert_eq!(
                settle_step(current, settlement),
                step,
                "{current:?} {settlement:?}"
            );
        }
    }

    #[test]
    fn movements_keep_every_unit_and_sum_per_sku() {
        let lines = [("b", 2), ("a", 1), ("b", 3)];
        for movement in [
            Movement::Reserve,
            Movement::Settle(Settlement::Release),
            Movement::Settle(Settlement::Commit),
        ] {
            let deltas = stock_deltas(movement, lines);
            assert_eq!(
                deltas.iter().map(|d| d.sku.as_str()).collect::<Vec<_>>(),
                ["a", "b"]
            );
            for delta in &deltas {
                assert_eq!(delta.available + delta.reserved + delta.sold, 0);
            }
        }
        let reserve = stock_deltas(Movement::Reserve, lines);
        assert_eq!((reserve[1].available, reserve[1].reserved), (-5, 5));
        let commit = stock_deltas(Movement::Settle(Settlement::Commit), lines);
        assert_eq!((commit[1].reserved, commit[1].sold), (-5, 5));
    }

    #[test]
    fn states_round_trip() {
        for state in [
            ReservationState::Reserved,
            ReservationState::Committed,
            ReservationState::Released,
        ] {
            assert_eq!(ReservationState::parse(state.as_str()), Some(state));
        }
        assert_eq!(ReservationState::parse("other"), None);
    }
}

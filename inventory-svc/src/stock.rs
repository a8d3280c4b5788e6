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

/// A SKU's counters as the operator sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockLevel {
    pub sku: String,
    pub available: i64,
    pub reserved: i64,
    pub sold: i64,
    pub price_cents: i64,
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

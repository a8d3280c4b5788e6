//! Order rules free of I/O: what a valid CreateOrder request is, its fingerprint for the
//! idempotency check, and how a reservation becomes a priced order.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use orderflow_proto::inventory::v1::ReservedItem;
use orderflow_proto::limits::{
    MAX_ID_LEN, MAX_ITEMS_PER_ORDER, MAX_QUANTITY_PER_ITEM, MAX_SKU_LEN,
};
use orderflow_proto::order::v1::{CreateOrderRequest, Order, OrderItem, OrderStatus};
use orderflow_runtime::timestamp;
use orderflow_runtime::validate::{self, FieldError};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

/// A CreateOrder request that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub idempotency_key: String,
    pub user_id: String,
    pub lines: Vec<Line>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub sku: String,
    pub quantity: i64,
}

impl NewOrder {
    pub fn validate(request: CreateOrderRequest) -> Result<Self, FieldError> {
        validate::identifier("idempotency_key", &request.idempotency_key, MAX_ID_LEN)?;
        validate::identifier("user_id", &request.user_id, MAX_ID_LEN)?;
        if request.items.is_empty() {
            return Err(FieldError::new("items", "must contain at least one item"));
        }
        if request.items.len() > MAX_ITEMS_PER_ORDER {
            return Err(FieldError::new(
                "items",
                format!(
                    "must contain at most {MAX_ITEMS_PER_ORDER} items, got {}",
                    request.items.len()
                ),
            ));
        }
        let mut seen = HashSet::with_capacity(request.items.len());
        let lines = request
            .items
            .into_iter()
            .enumerate()
            .map(|(index, item)| {
                let field = format!("items[{index}].sku");
                validate::identifier(&field, &item.sku, MAX_SKU_LEN)?;
                if !seen.insert(item.sku.clone()) {
                    return Err(FieldError::new(
                        field,
                        format!(
                            "SKU {:?} appears more than once; put the whole quantity on one line",
                            item.sku
                        ),
                    ));
                }
                let quantity = validate::in_range(
                    &format!("items[{index}].quantity"),
                    item.quantity,
                    1,
                    MAX_QUANTITY_PER_ITEM,
                )?;
                Ok(Line {
                    sku: item.sku,
                    quantity,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            idempotency_key: request.idempotency_key,
            user_id: request.user_id,
            lines,
        })
    }

    /// Identifies the request's content: the same user and the same lines, in any order, give
    /// the same fingerprint; anything else gives another.
    pub fn fingerprint(&self) -> String {
        fingerprint(
            &self.user_id,
            self.lines
                .iter()
                .map(|line| (line.sku.as_str(), line.quantity)),
        )
    }
}

/// The fingerprint of the request that placed `order` (see [`NewOrder::fingerprint`]).
pub fn order_fingerprint(order: &Order) -> String {
    fingerprint(
        &order.user_id,
        order
            .items
            .iter()
            .map(|item| (item.sku.as_str(), item.quantity)),
    )
}

/// Identifies a request by `user_id` for `lines` (sku, quantity), in any order.
pub fn fingerprint<'a>(user_id: &str, lines: impl Iterator<Item = (&'a str, i64)>) -> String {
    let mut lines: Vec<(&str, i64)> = lines.collect();
    lines.sort_unstable();
    let mut hasher = Sha256::new();
    hasher.update(user_id.as_bytes());
    for (sku, quantity) in lines {
        hasher.update([0]);
        hasher.update(sku.as_bytes());
        hasher.update([0]);
        hasher.update(quantity.to_be_bytes());
    }
    hex::encode(&hasher.finalize()[..16])
}

/// Why reserved items cannot be priced into an order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    #[error("the reservation has no price for SKU {0:?}")]
    MissingItem(String),
    #[error("the order total does not fit in 64 bits")]
    Overflow,
}

/// The PENDING order for `new_order` (version 1), priced with the unit prices of its
/// reservation, to be paid before `payment_window` has passed.
pub fn pending_order(
    order_id: Uuid,
    new_order: &NewOrder,
    reserved: &[ReservedItem],
    currency: &str,
    created_at: OffsetDateTime,
    payment_window: Duration,
) -> Result<Order, PricingError> {
    let prices: HashMap<&str, i64> = reserved
        .iter()
        .map(|item| (item.sku.as_str(), item.unit_price_cents))
        .collect();
    let mut total: i64 = 0;
    let mut items = Vec::with_capacity(new_order.lines.len());
    for line in &new_order.lines {
        let unit_price_cents = *prices
            .get(line.sku.as_str())
            .ok_or_else(|| PricingError::MissingItem(line.sku.clone()))?;
        total = unit_price_cents
            .checked_mul(line.quantity)
            .and_then(|line_total| total.checked_add(line_total))
            .ok_or(PricingError::Overflow)?;
        items.push(OrderItem {
            sku: line.sku.clone(),
            quantity: line.quantity,
            unit_price_cents,
        });
    }
    let at = Some(timestamp::to_proto(created_at));
    Ok(Order {
        order_id: order_id.to_string(),
        user_id: new_order.user_id.clone(),
        items,
        total_cents: total,
        currency: currency.to_owned(),
        status: OrderStatus::Pending.into(),
        created_at: at,
        updated_at: at,
        expires_at: Some(timestamp::to_proto(created_at + payment_window)),
        version: 1,
        ..Order::default()
    })
}

#[cfg(test)]
mod tests {
    use orderflow_proto::order::v1::OrderLine;

    use super::*;

    fn request(items: &[(&str, i64)]) -> CreateOrderRequest {
        CreateOrderRequest {
            idempotency_key: "key-1".into(),
            user_id: "user-1".into(),
            items: items
                .iter()
                .map(|(sku, quantity)| OrderLine {
                    sku: (*sku).into(),
                    quantity: *quantity,
                })
                .collect(),
        }
    }

    fn error(request: CreateOrderRequest) -> String {
        NewOrder::validate(request).unwrap_err().to_string()
    }

    #[test]
    fn accepts_a_plain_order() {
        let order = NewOrder::validate(request(&[("a", 1), ("b", 3)])).unwrap();
        assert_eq!(order.lines.len(), 2);
    }

    #[test]
    fn names_the_field_of_every_bad_input() {
        assert_eq!(error(request(&[])), "items: must contain at least one item");
        assert_eq!(
            error(request(&[("a", 0)])),
            "items[0].quantity: must be between 1 and 10000, got 0"
        );
        assert_eq!(
            error(request(&[("a", 1), ("b", -2)])),
            "items[1].quantity: must be between 1 and 10000, got -2"
        );
        assert_eq!(
            error(request(&[("a", i64::MAX)])),
            format!(
                "items[0].quantity: must be between 1 and 10000, got {}",
                i64::MAX
            )
        );
        assert_eq!(
            error(request(&[("", 1)])),
            "items[0].sku: must not be empty"
        );
        assert!(error(request(&[("a", 1), ("a", 1)])).starts_with("items[1].sku: SKU \"a\""));
        let mut no_key = request(&[("a", 1)]);
        no_key.idempotency_key.clear();
        assert_eq!(error(no_key), "idempotency_key: must not be empty");
        let mut huge_user = request(&[("a", 1)]);
        huge_user.user_id = "u".repeat(10 * 1024);
        assert_eq!(
            error(huge_user),
            "user_id: must be at most 128 bytes, got 10240"
        );
        let many: Vec<(String, i64)> = (0..1000).map(|i| (format!("s{i}"), 1)).collect();
        let many: Vec<(&str, i64)> = many.iter().map(|(s, q)| (s.as_str(), *q)).collect();
        assert_eq!(
            error(request(&many)),
            "items: must contain at most 100 items, got 1000"
        );
    }

    #[test]
    fn fingerprint_ignores_line_order_but_not_content() {
        let a = NewOrder::validate(request(&[("a", 1), ("b", 2)])).unwrap();
        let b = NewOrder::validate(request(&[("b", 2), ("a", 1)])).unwrap();
        let c = NewOrder::validate(request(&[("a", 1), ("b", 3)])).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
        let mut other_user = a.clone();
        other_user.user_id = "user-2".into();
        assert_ne!(a.fingerprint(), other_user.fingerprint());
        let placed = pending_order(
            Uuid::now_v7(),
            &b,
            &[reserved("a", 1), reserved("b", 1)],
            "CNY",
            timestamp::now(),
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(order_fingerprint(&placed), a.fingerprint());
    }

    fn reserved(sku: &str, unit_price_cents: i64) -> ReservedItem {
        ReservedItem {
            sku: sku.into(),
            quantity: 0,
            unit_price_cents,
        }
    }

    #[test]
    fn prices_from_the_reservation() {
        let new_order = NewOrder::validate(request(&[("a", 2), ("b", 1)])).unwrap();
        let order = pending_order(
            Uuid::now_v7(),
            &new_order,
            &[reserved("b", 500), reserved("a", 1999)],
            "CNY",
            timestamp::now(),
            Duration::from_secs(900),
        )
        .unwrap();
        assert_eq!(order.total_cents, 2 * 1999 + 500);
        assert_eq!(order.version, 1);
        assert_eq!(
            order.expires_at.unwrap().seconds - order.created_at.unwrap().seconds,
            900
        );
        assert_eq!(order.items[0].unit_price_cents, 1999);
        assert_eq!(order.status(), OrderStatus::Pending);
        assert_eq!(order.currency, "CNY");
    }

    const WINDOW: Duration = Duration::from_secs(60);

    #[test]
    fn refuses_missing_prices_and_overflow() {
        let new_order = NewOrder::validate(request(&[("a", 2)])).unwrap();
        let now = timestamp::now();
        assert_eq!(
            pending_order(Uuid::now_v7(), &new_order, &[], "CNY", now, WINDOW),
            Err(PricingError::MissingItem("a".into()))
        );
        assert_eq!(
            pending_order(
                Uuid::now_v7(),
                &new_order,
                &[reserved("a", i64::MAX)],
                "CNY",
                now,
                WINDOW
            ),
            Err(PricingError::Overflow)
        );
    }
}

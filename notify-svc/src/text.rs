//! The words of a notification, per kind of event: what the user reads. Plain Rust on decoded
//! values (no I/O), so every wording is unit tested here and `event` only decides which kind.
//!
//! The item count is the number of units (the sum of the quantities), so one line of two
//! units reads "2 items" as a buyer would say it; one unit reads "1 item".

use crate::money;

/// What happened to an order, with what its text needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Happened<'a> {
    Placed {
        units: i64,
        total_cents: i64,
        currency: &'a str,
    },
    Paid {
        units: i64,
        amount_cents: i64,
        currency: &'a str,
    },
    /// Cancelled by the buyer or an operator; `reason` may be empty.
    Cancelled {
        reason: &'a str,
    },
    /// Not paid before its deadline.
    Expired,
    /// `tracking_number` may be empty.
    Shipped {
        tracking_number: &'a str,
    },
    Completed,
}

/// The notification text, e.g. `Order 0193… paid: 2 items, ¥199.00`.
pub fn render(order_id: &str, happened: &Happened<'_>) -> String {
    let order = format!("Order {order_id}");
    let text = match happened {
        Happened::Placed {
            units,
            total_cents,
            currency,
        } => format!(
            "{order} placed: {}, {}",
            items(*units),
            money::format(*total_cents, currency)
        ),
        Happened::Paid {
            units,
            amount_cents,
            currency,
        } => format!(
            "{order} paid: {}, {}",
            items(*units),
            money::format(*amount_cents, currency)
        ),
        Happened::Cancelled { reason } => match clean(reason).trim() {
            "" => format!("{order} cancelled"),
            reason => format!("{order} cancelled: {reason}"),
        },
        Happened::Expired => format!("{order} expired: it was not paid in time"),
        Happened::Shipped { tracking_number } => match clean(tracking_number).trim() {
            "" => format!("{order} shipped"),
            tracking => format!("{order} shipped: tracking {tracking}"),
        },
        Happened::Completed => format!("{order} completed"),
    };
    clean(&text)
}

/// Units of an order: the sum of its lines' quantities (a malformed negative one counts as 0).
pub fn units<I: IntoIterator<Item = i64>>(quantities: I) -> i64 {
    quantities
        .into_iter()
        .fold(0_i64, |sum, quantity| sum.saturating_add(quantity.max(0)))
}

fn items(units: i64) -> String {
    if units == 1 {
        "1 item".to_owned()
    } else {
        format!("{units} items")
    }
}

/// Parts of the text come from outside (a reason typed by a person, a currency code) and the
/// text is one line shown to users: control characters (line breaks; NUL, which PostgreSQL
/// cannot store) become spaces.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0193a1b2-0000-7000-8000-000000000001";

    #[test]
    fn every_kind_of_event() {
        let cases = [
            (
                Happened::Placed {
                    units: 2,
                    total_cents: 19_900,
                    currency: "CNY",
                },
                format!("Order {ID} placed: 2 items, ¥199.00"),
            ),
            (
                Happened::Paid {
                    units: 2,
                    amount_cents: 19_900,
                    currency: "CNY",
                },
                format!("Order {ID} paid: 2 items, ¥199.00"),
            ),
            (
                Happened::Cancelled {
                    reason: "changed my mind",
                },
                format!("Order {ID} cancelled: changed my mind"),
            ),
            (
                Happened::Cancelled { reason: " " },
                format!("Order {ID} cancelled"),
            ),
            (
                Happened::Expired,
                format!("Order {ID} expired: it was not paid in time"),
            ),
            (
                Happened::Shipped {
                    tracking_number: "SF123",
                },
                format!("Order {ID} shipped: tracking SF123"),
            ),
            (
                Happened::Shipped {
                    tracking_number: "",
                },
                format!("Order {ID} shipped"),
            ),
            (Happened::Completed, format!("Order {ID} completed")),
        ];
        for (happened, expected) in cases {
            assert_eq!(render(ID, &happened), expected, "{happened:?}");
        }
    }

    #[test]
    fn one_item_is_singular() {
        let text = render(
            ID,
            &Happened::Placed {
                units: 1,
                total_cents: 500,
                currency: "USD",
            },
        );
        assert_eq!(text, format!("Order {ID} placed: 1 item, $5.00"));
    }

    #[test]
    fn units_are_the_sum_of_quantities() {
        assert_eq!(units([2]), 2);
        assert_eq!(units([1, 3, 1]), 5);
        assert_eq!(units([]), 0);
        assert_eq!(units([-4, 2]), 2);
        assert_eq!(units([i64::MAX, 1]), i64::MAX);
    }

    #[test]
    fn control_characters_do_not_reach_the_text() {
        let text = render(
            ID,
            &Happened::Placed {
                units: 1,
                total_cents: 100,
                currency: "X\0Y",
            },
        );
        assert_eq!(text, format!("Order {ID} placed: 1 item, 1.00 X Y"));
        let text = render(
            ID,
            &Happened::Cancelled {
                reason: "too\nlate\0",
            },
        );
        assert_eq!(text, format!("Order {ID} cancelled: too late"));
    }
}

//! PostgreSQL's admission rule, free of I/O: given the units PostgreSQL holds per SKU and a
//! batch of reservations Redis already admitted (in arrival order), which ones it accepts.
//!
//! This is the last line of defence against oversell. Redis should never admit what this
//! refuses; if its counters ran ahead of the truth (rebuilt while reservations were in flight,
//! or an operator lowered stock meanwhile), this rule decides and a refused reservation takes
//! nothing. Each reservation is all or nothing, as in Redis.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use crate::stock::ReservedLine;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Fits: take its units.
    Accept,
    /// PostgreSQL already holds a reservation for this order (a retry): take nothing more.
    Existing,
    /// Line `line` does not fit: `available` units were left for it.
    Refuse { line: usize, available: i64 },
}

/// Decides every reservation of a batch, in order, taking units from `available` as it accepts.
/// A SKU absent from `available` has no units.
pub fn decide<'a>(
    available: &mut HashMap<String, i64>,
    already_recorded: &HashSet<Uuid>,
    batch: impl IntoIterator<Item = (Uuid, &'a [ReservedLine])>,
) -> Vec<Decision> {
    let mut accepted = HashSet::new();
    batch
        .into_iter()
        .map(|(order_id, lines)| {
            if already_recorded.contains(&order_id) || accepted.contains(&order_id) {
                return Decision::Existing;
            }
            for (index, line) in lines.iter().enumerate() {
                let left = available.get(&line.sku).copied().unwrap_or(0);
                if left < line.quantity {
                    return Decision::Refuse {
                        line: index,
                        available: left,
                    };
                }
            }
            for line in lines {
                if let Some(left) = available.get_mut(&line.sku) {
                    *left -= line.quantity;
                }
            }
            accepted.insert(order_id);
            Decision::Accept
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sku: &str, quantity: i64) -> ReservedLine {
        ReservedLine {
            sku: sku.into(),
            quantity,
            unit_price_cents: 100,
        }
    }

    fn stock(levels: &[(&str, i64)]) -> HashMap<String, i64> {
        levels.iter().map(|(s, n)| ((*s).to_owned(), *n)).collect()
    }

    #[test]
    fn accepts_in_order_until_the_units_run_out() {
        let mut available = stock(&[("hot", 2)]);
        let orders: Vec<(Uuid, Vec<ReservedLine>)> = (0..3)
            .map(|_| (Uuid::new_v4(), vec![line("hot", 1)]))
            .collect();
        let decisions = decide(
            &mut available,
            &HashSet::new(),
            orders.iter().map(|(id, lines)| (*id, lines.as_slice())),
        );
        assert_eq!(
            decisions,
            [
                Decision::Accept,
                Decision::Accept,
                Decision::Refuse {
                    line: 0,
                    available: 0
                }
            ]
        );
        assert_eq!(available["hot"], 0);
    }

    #[test]
    fn a_refused_order_takes_nothing_from_its_other_lines() {
        let mut available = stock(&[("a", 5), ("b", 1)]);
        let order = vec![line("a", 3), line("b", 2)];
        let decisions = decide(
            &mut available,
            &HashSet::new(),
            [(Uuid::new_v4(), order.as_slice())],
        );
        assert_eq!(
            decisions,
            [Decision::Refuse {
                line: 1,
                available: 1
            }]
        );
        assert_eq!((available["a"], available["b"]), (5, 1));
    }

    #[test]
    fn recorded_or_repeated_orders_take_nothing_more() {
        let mut available = stock(&[("a", 10)]);
        let (old, new) = (Uuid::new_v4(), Uuid::new_v4());
        let lines = vec![line("a", 4)];
        let decisions = decide(
            &mut available,
            &HashSet::from([old]),
            [
                (old, lines.as_slice()),
                (new, lines.as_slice()),
                (new, lines.as_slice()),
            ],
        );
        assert_eq!(
            decisions,
            [Decision::Existing, Decision::Accept, Decision::Existing]
        );
        assert_eq!(available["a"], 6);
    }

    #[test]
    fn an_unknown_sku_has_no_units() {
        let mut available = stock(&[]);
        let lines = vec![line("ghost", 1)];
        assert_eq!(
            decide(
                &mut available,
                &HashSet::new(),
                [(Uuid::new_v4(), lines.as_slice())]
            ),
            [Decision::Refuse {
                line: 0,
                available: 0
            }]
        );
    }
}

//! The order state machine, free of I/O: which status changes exist, what each request asks
//! for, and whether it is applied, already done (a repeat), or refused.
//!
//! `PENDING → PAID → SHIPPED → COMPLETED`, `PENDING → CANCELLED`, `PENDING → EXPIRED`; nothing
//! else. Only a PENDING order holds a reservation, so only leaving PENDING moves stock.

use orderflow_proto::order::v1::{Order, OrderStatus};
use orderflow_runtime::timestamp;
use time::OffsetDateTime;

/// Why an order expired: the `cancel_reason` it gets and the reason its stock is released with.
pub const EXPIRED_REASON: &str = "expired";

/// What a request asks to do to an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Pay {
        payment_id: String,
        amount_cents: i64,
    },
    Cancel {
        reason: String,
    },
    Ship {
        tracking_number: String,
    },
    Complete,
    /// The expiry task: the order is unpaid past its deadline.
    Expire,
}

impl Action {
    /// The status the action moves an order to.
    pub fn target(&self) -> OrderStatus {
        match self {
            Self::Pay { .. } => OrderStatus::Paid,
            Self::Cancel { .. } => OrderStatus::Cancelled,
            Self::Ship { .. } => OrderStatus::Shipped,
            Self::Complete => OrderStatus::Completed,
            Self::Expire => OrderStatus::Expired,
        }
    }
}

/// Whether `from → to` is an edge of the state machine.
pub fn allowed(from: OrderStatus, to: OrderStatus) -> bool {
    use OrderStatus::{Cancelled, Completed, Expired, Paid, Pending, Shipped};
    matches!(
        (from, to),
        (Pending, Paid | Cancelled | Expired) | (Paid, Shipped) | (Shipped, Completed)
    )
}

/// No status leaves a terminal one.
pub fn is_terminal(status: OrderStatus) -> bool {
    matches!(
        status,
        OrderStatus::Completed | OrderStatus::Cancelled | OrderStatus::Expired
    )
}

/// The order as it was at an earlier `version` with `status` (from its history), rebuilt from
/// its current state. Exact, because each change only sets its own fields and never touches
/// them again: a payment id exists from PAID on, a tracking number from SHIPPED on, a cancel
/// reason only in CANCELLED and EXPIRED.
pub fn as_of(
    current: &Order,
    version: i64,
    status: OrderStatus,
    changed_at: OffsetDateTime,
) -> Order {
    let mut earlier = current.clone();
    earlier.version = version;
    earlier.status = status.into();
    earlier.updated_at = Some(timestamp::to_proto(changed_at));
    if status == OrderStatus::Pending {
        earlier.payment_id.clear();
    }
    if !matches!(status, OrderStatus::Shipped | OrderStatus::Completed) {
        earlier.tracking_number.clear();
    }
    if !matches!(status, OrderStatus::Cancelled | OrderStatus::Expired) {
        earlier.cancel_reason.clear();
    }
    earlier
}

/// What happens to the stock an order reserved when it leaves PENDING.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockSettlement {
    /// Paid: the reserved units are sold.
    Commit,
    /// Cancelled or expired: the reserved units go back on sale.
    Release,
}

impl StockSettlement {
    pub fn as_db(self) -> &'static str {
        match self {
            Self::Commit => "commit",
            Self::Release => "release",
        }
    }

    pub fn from_db(name: &str) -> Option<Self> {
        [Self::Commit, Self::Release]
            .into_iter()
            .find(|settlement| settlement.as_db() == name)
    }
}

/// An accepted status change.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The order after the change (version incremented).
    pub order: Order,
    pub stock: Option<StockSettlement>,
    /// The reason recorded in the history (and given to inventory-svc on a release).
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Apply(Box<Change>),
    /// The same action was applied before: the order answers as it is.
    AlreadyDone,
    /// `Expire` of an order whose deadline has not passed: nothing to do.
    NotDue,
}

/// Why an action is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("order {order_id} is {}; it cannot become {}", name(*from), name(*to))]
    Illegal {
        order_id: String,
        from: OrderStatus,
        to: OrderStatus,
    },
    #[error("amount_cents: must equal the order total {expected}, got {got}")]
    WrongAmount { expected: i64, got: i64 },
    #[error("order {order_id} was paid with payment {existing:?}; it cannot be paid again with another payment")]
    PaidWithAnotherPayment { order_id: String, existing: String },
    #[error("order {order_id} was shipped with tracking number {existing:?}; it cannot be shipped again with another")]
    ShippedWithAnotherTracking { order_id: String, existing: String },
    #[error(
        "order {order_id} was not paid before its payment deadline {deadline}; it is expiring"
    )]
    PaymentDeadlinePassed {
        order_id: String,
        deadline: OffsetDateTime,
    },
}

fn name(status: OrderStatus) -> &'static str {
    orderflow_proto::order_status::to_db(status)
}

/// Decides what `action` does to `order` at `now`.
pub fn decide(order: &Order, action: &Action, now: OffsetDateTime) -> Result<Decision, Refusal> {
    let from = order.status();
    let to = action.target();
    if let Action::Pay { amount_cents, .. } = action {
        if *amount_cents != order.total_cents {
            return Err(Refusal::WrongAmount {
                expected: order.total_cents,
                got: *amount_cents,
            });
        }
    }
    if let Some(decision) = repeat(order, action)? {
        return Ok(decision);
    }
    let deadline = order.expires_at.as_ref().and_then(timestamp::from_proto);
    let due = deadline.is_some_and(|deadline| deadline <= now);
    if *action == Action::Expire && !(from == OrderStatus::Pending && due) {
        return Ok(Decision::NotDue);
    }
    if !allowed(from, to) {
        return Err(Refusal::Illegal {
            order_id: order.order_id.clone(),
            from,
            to,
        });
    }
    let mut next = order.clone();
    next.status = to.into();
    next.version += 1;
    next.updated_at = Some(timestamp::to_proto(now));
    let (stock, reason) = match action {
        Action::Pay { payment_id, .. } => {
            if let (true, Some(deadline)) = (due, deadline) {
                return Err(Refusal::PaymentDeadlinePassed {
                    order_id: order.order_id.clone(),
                    deadline,
                });
            }
            next.payment_id.clone_from(payment_id);
            (Some(StockSettlement::Commit), None)
        }
        Action::Cancel { reason } => {
            next.cancel_reason.clone_from(reason);
            (Some(StockSettlement::Release), Some(reason.clone()))
        }
        Action::Expire => {
            next.cancel_reason = EXPIRED_REASON.into();
            (
                Some(StockSettlement::Release),
                Some(EXPIRED_REASON.to_owned()),
            )
        }
        Action::Ship { tracking_number } => {
            next.tracking_number.clone_from(tracking_number);
            (None, None)
        }
        Action::Complete => (None, None),
    };
    Ok(Decision::Apply(Box::new(Change {
        order: next,
        stock,
        reason,
    })))
}

/// An action that was applied before answers the order as it is (`Some(AlreadyDone)`); the
/// same action with other details is refused; `None` when it is not a repeat.
fn repeat(order: &Order, action: &Action) -> Result<Option<Decision>, Refusal> {
    let from = order.status();
    let reached = |status: OrderStatus| {
        from == status
            || matches!(
                (status, from),
                (
                    OrderStatus::Paid,
                    OrderStatus::Shipped | OrderStatus::Completed
                ) | (OrderStatus::Shipped, OrderStatus::Completed)
            )
    };
    let done = Some(Decision::AlreadyDone);
    match action {
        Action::Pay { payment_id, .. } if reached(OrderStatus::Paid) => {
            if *payment_id == order.payment_id {
                Ok(done)
            } else {
                Err(Refusal::PaidWithAnotherPayment {
                    order_id: order.order_id.clone(),
                    existing: order.payment_id.clone(),
                })
            }
        }
        Action::Ship { tracking_number } if reached(OrderStatus::Shipped) => {
            if *tracking_number == order.tracking_number {
                Ok(done)
            } else {
                Err(Refusal::ShippedWithAnotherTracking {
                    order_id: order.order_id.clone(),
                    existing: order.tracking_number.clone(),
                })
            }
        }
        Action::Cancel { .. } | Action::Complete | Action::Expire if from == action.target() => {
            Ok(done)
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use orderflow_proto::order_status::ALL;
    use time::Duration;

    use super::*;

    fn order(status: OrderStatus, now: OffsetDateTime) -> Order {
        Order {
            order_id: "o-1".into(),
            status: status.into(),
            total_cents: 500,
            version: 3,
            payment_id: if status == OrderStatus::Pending {
                String::new()
            } else {
                "pay-1".into()
            },
            tracking_number: match status {
                OrderStatus::Shipped | OrderStatus::Completed => "track-1".into(),
                _ => String::new(),
            },
            expires_at: Some(timestamp::to_proto(now + Duration::minutes(15))),
            ..Order::default()
        }
    }

    fn actions() -> [Action; 5] {
        [
            Action::Pay {
                payment_id: "pay-1".into(),
                amount_cents: 500,
            },
            Action::Cancel {
                reason: "changed my mind".into(),
            },
            Action::Ship {
                tracking_number: "track-1".into(),
            },
            Action::Complete,
            Action::Expire,
        ]
    }

    #[test]
    fn only_the_documented_edges_exist() {
        let edges: Vec<(OrderStatus, OrderStatus)> = ALL
            .iter()
            .flat_map(|from| ALL.iter().map(move |to| (*from, *to)))
            .filter(|(from, to)| allowed(*from, *to))
            .collect();
        use OrderStatus::*;
        assert_eq!(
            edges,
            [
                (Pending, Paid),
                (Pending, Cancelled),
                (Pending, Expired),
                (Paid, Shipped),
                (Shipped, Completed)
            ]
        );
        for status in ALL {
            let leaves = ALL.iter().any(|to| allowed(status, *to));
            assert_eq!(is_terminal(status), !leaves, "{status:?}");
        }
    }

    /// Every action on every status: applied exactly on the edges, a repeat where the order
    /// already got there with the same details, refused naming both states otherwise.
    #[test]
    fn every_action_from_every_status() {
        let now = timestamp::now();
        let due = now + Duration::minutes(20);
        for status in ALL {
            for action in actions() {
                let current = order(status, now);
                let at = if action == Action::Expire { due } else { now };
                let decision = decide(&current, &action, at);
                let target = action.target();
                let repeated = status == target
                    || matches!(
                        (&action, status),
                        (
                            Action::Pay { .. },
                            OrderStatus::Shipped | OrderStatus::Completed
                        ) | (Action::Ship { .. }, OrderStatus::Completed)
                    );
                match decision {
                    Ok(Decision::Apply(change)) => {
                        assert!(allowed(status, target), "{status:?} {action:?}");
                        assert_eq!(change.order.status(), target);
                        assert_eq!(change.order.version, 4);
                        assert_eq!(change.stock.is_some(), status == OrderStatus::Pending);
                    }
                    Ok(Decision::AlreadyDone) => assert!(repeated, "{status:?} {action:?}"),
                    Ok(Decision::NotDue) => {
                        assert_eq!(action, Action::Expire);
                        assert_ne!(status, OrderStatus::Pending);
                    }
                    Err(Refusal::Illegal { from, to, .. }) => {
                        assert!(!allowed(status, target) && !repeated);
                        assert_eq!((from, to), (status, target));
                    }
                    Err(other) => panic!("{status:?} {action:?}: {other}"),
                }
            }
        }
    }

    #[test]
    fn an_illegal_change_names_both_states() {
        let now = timestamp::now();
        let refusal = decide(&order(OrderStatus::Cancelled, now), &actions()[0], now)
            .unwrap_err()
            .to_string();
        assert_eq!(refusal, "order o-1 is CANCELLED; it cannot become PAID");
    }

    #[test]
    fn payment_checks_amount_payment_id_and_deadline() {
        let now = timestamp::now();
        let pending = order(OrderStatus::Pending, now);
        let pay = |payment_id: &str, amount_cents| Action::Pay {
            payment_id: payment_id.into(),
            amount_cents,
        };
        assert_eq!(
            decide(&pending, &pay("p", 499), now),
            Err(Refusal::WrongAmount {
                expected: 500,
                got: 499
            })
        );
        let Ok(Decision::Apply(change)) = decide(&pending, &pay("p", 500), now) else {
            panic!("a timely payment of the total is applied");
        };
        assert_eq!(change.order.payment_id, "p");
        assert_eq!(change.stock, Some(StockSettlement::Commit));
        let paid = change.order;
        assert_eq!(
            decide(&paid, &pay("p", 500), now),
            Ok(Decision::AlreadyDone)
        );
        assert!(matches!(
            decide(&paid, &pay("q", 500), now),
            Err(Refusal::PaidWithAnotherPayment { .. })
        ));
        let late = now + Duration::minutes(15);
        assert!(matches!(
            decide(&pending, &pay("p", 500), late),
            Err(Refusal::PaymentDeadlinePassed { .. })
        ));
    }

    #[test]
    fn expiry_waits_for_the_deadline_and_releases_stock() {
        let now = timestamp::now();
        let pending = order(OrderStatus::Pending, now);
        assert_eq!(decide(&pending, &Action::Expire, now), Ok(Decision::NotDue));
        let due = now + Duration::minutes(15);
        let Ok(Decision::Apply(change)) = decide(&pending, &Action::Expire, due) else {
            panic!("a due order expires");
        };
        assert_eq!(change.order.cancel_reason, EXPIRED_REASON);
        assert_eq!(change.stock, Some(StockSettlement::Release));
        let mut no_deadline = pending;
        no_deadline.expires_at = None;
        assert_eq!(
            decide(&no_deadline, &Action::Expire, due),
            Ok(Decision::NotDue)
        );
    }

    #[test]
    fn earlier_states_are_rebuilt_exactly() {
        let now = timestamp::now();
        let pending = order(OrderStatus::Pending, now);
        let step = |order: &Order, action: Action| match decide(order, &action, now) {
            Ok(Decision::Apply(change)) => change.order,
            other => panic!("{action:?} on {order:?}: {other:?}"),
        };
        let paid = step(&pending, actions()[0].clone());
        let shipped = step(&paid, actions()[2].clone());
        let completed = step(&shipped, Action::Complete);
        for earlier in [&pending, &paid, &shipped] {
            assert_eq!(
                as_of(&completed, earlier.version, earlier.status(), now),
                Order {
                    updated_at: Some(timestamp::to_proto(now)),
                    ..earlier.clone()
                }
            );
        }
        let cancelled = step(&pending, actions()[1].clone());
        assert_eq!(
            as_of(&cancelled, 3, OrderStatus::Pending, now).cancel_reason,
            ""
        );
    }

    #[test]
    fn shipping_again_needs_the_same_tracking_number() {
        let now = timestamp::now();
        let shipped = order(OrderStatus::Shipped, now);
        let ship = |tracking: &str| Action::Ship {
            tracking_number: tracking.into(),
        };
        assert_eq!(
            decide(&shipped, &ship("track-1"), now),
            Ok(Decision::AlreadyDone)
        );
        assert!(matches!(
            decide(&shipped, &ship("track-2"), now),
            Err(Refusal::ShippedWithAnotherTracking { .. })
        ));
    }
}

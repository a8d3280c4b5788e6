//! The order status names stored in PostgreSQL (`PENDING`, `PAID`, …): the protobuf enum names
//! without their `ORDER_STATUS_` prefix, shared by the writer (consumer-worker) and the readers.

use crate::order::v1::OrderStatus;

const PREFIX: &str = "ORDER_STATUS_";

/// Every status an order can have, in lifecycle order.
pub const ALL: [OrderStatus; 6] = [
    OrderStatus::Pending,
    OrderStatus::Paid,
    OrderStatus::Shipped,
    OrderStatus::Completed,
    OrderStatus::Cancelled,
    OrderStatus::Expired,
];

/// `OrderStatus::Paid` → `"PAID"`.
pub fn to_db(status: OrderStatus) -> &'static str {
    let name = status.as_str_name();
    name.strip_prefix(PREFIX).unwrap_or(name)
}

/// `"PAID"` → `OrderStatus::Paid`; `None` for anything else, including `UNSPECIFIED`.
pub fn from_db(name: &str) -> Option<OrderStatus> {
    OrderStatus::from_str_name(&format!("{PREFIX}{name}"))
        .filter(|status| *status != OrderStatus::Unspecified)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_status() {
        for status in ALL {
            assert_eq!(from_db(to_db(status)), Some(status));
        }
        assert_eq!(to_db(OrderStatus::Paid), "PAID");
        assert_eq!(from_db("UNSPECIFIED"), None);
        assert_eq!(from_db("paid"), None);
    }
}

//! Machine-readable refusals: the `google.rpc.ErrorInfo` a status carries next to its message,
//! so that a client in any language (and order-api, which passes inventory-svc's refusal on) can
//! act on a refusal without parsing English.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// `ErrorInfo.domain` of every orderflow refusal.
pub const DOMAIN: &str = "orderflow";

/// `ErrorInfo.reason` of a reservation refused because a SKU has too few units; its metadata
/// holds `sku`, `requested` and `available`.
pub const INSUFFICIENT_STOCK: &str = "INSUFFICIENT_STOCK";

/// One line of an order that the stock could not cover when it was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortage {
    pub sku: String,
    pub requested: i64,
    pub available: i64,
}

impl Shortage {
    /// FAILED_PRECONDITION with `message` and this shortage as its `ErrorInfo`.
    pub fn to_status(&self, message: impl Into<String>) -> Status {
        let metadata = HashMap::from([
            ("sku".to_owned(), self.sku.clone()),
            ("requested".to_owned(), self.requested.to_string()),
            ("available".to_owned(), self.available.to_string()),
        ]);
        Status::with_error_details(
            Code::FailedPrecondition,
            message,
            ErrorDetails::with_error_info(INSUFFICIENT_STOCK, DOMAIN, metadata),
        )
    }

    /// The shortage a status reports, if it is an orderflow insufficient-stock refusal.
    pub fn from_status(status: &Status) -> Option<Self> {
        if status.code() != Code::FailedPrecondition {
            return None;
        }
        let info = status.get_details_error_info()?;
        if info.reason != INSUFFICIENT_STOCK || info.domain != DOMAIN {
            return None;
        }
        let number = |key: &str| info.metadata.get(key)?.parse().ok();
        Some(Self {
            sku: info.metadata.get("sku")?.clone(),
            requested: number("requested")?,
            available: number("available")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shortage_survives_the_round_trip_through_a_status() {
        let shortage = Shortage {
            sku: "SKU-1".into(),
            requested: 3,
            available: 1,
        };
        let status = shortage.to_status("insufficient stock");
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "insufficient stock");
        assert_eq!(Shortage::from_status(&status), Some(shortage));
    }

    #[test]
    fn other_refusals_are_no_shortage() {
        assert_eq!(
            Shortage::from_status(&Status::failed_precondition("insufficient stock")),
            None
        );
        let other = ErrorDetails::with_error_info("OTHER", DOMAIN, HashMap::new());
        let status = Status::with_error_details(Code::FailedPrecondition, "x", other);
        assert_eq!(Shortage::from_status(&status), None);
    }
}

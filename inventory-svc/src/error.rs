//! Everything the inventory service can refuse or fail with, and the one place where each
//! becomes a gRPC status.

use orderflow_runtime::validate::FieldError;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(transparent)]
    InvalidArgument(#[from] FieldError),

    #[error("{field}: unknown SKU {sku:?}")]
    UnknownSku { field: String, sku: String },

    #[error("insufficient stock for SKU {sku:?}: requested {requested}, available {available}")]
    InsufficientStock {
        sku: String,
        requested: i64,
        available: i64,
    },

    #[error("no reservation for order {order_id}")]
    NoReservation { order_id: String },

    #[error("reservation of order {order_id} is {state}; it cannot be {action}")]
    WrongReservationState {
        order_id: String,
        state: &'static str,
        action: &'static str,
    },

    #[error("stock counters of SKU {sku:?} are not loaded in Redis; retry shortly")]
    CountersMissing { sku: String },

    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),

    #[error("PostgreSQL: {0}")]
    Postgres(#[from] sqlx::Error),

    #[error("unexpected data in Redis: {0}")]
    Corrupt(String),
}

impl From<InventoryError> for Status {
    fn from(error: InventoryError) -> Self {
        let message = error.to_string();
        match error {
            InventoryError::InvalidArgument(_) => Status::invalid_argument(message),
            InventoryError::UnknownSku { .. } | InventoryError::NoReservation { .. } => {
                Status::not_found(message)
            }
            InventoryError::InsufficientStock { .. }
            | InventoryError::WrongReservationState { .. } => Status::failed_precondition(message),
            InventoryError::CountersMissing { .. }
            | InventoryError::Redis(_)
            | InventoryError::Postgres(_) => {
                tracing::warn!(%message, "inventory dependency unavailable");
                Status::unavailable(message)
            }
            InventoryError::Corrupt(_) => {
                tracing::error!(%message, "inventory data is corrupt");
                Status::internal(message)
            }
        }
    }
}

//! Everything the inventory service can refuse or fail with, and the one place where each
//! becomes a gRPC status.

use orderflow_lock::LockError;
use orderflow_proto::refusals::Shortage;
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

    #[error("reservation of order {order_id} is still being recorded; retry shortly")]
    Recording { order_id: String },

    #[error("stock counters of SKU {sku:?} are not loaded in Redis; retry shortly")]
    CountersMissing { sku: String },

    #[error(
        "stock of SKU {sku:?} was changed by a newer lock holder; fencing token {token} is stale"
    )]
    Fenced { sku: String, token: i64 },

    #[error("distributed lock: {0}")]
    Lock(#[from] LockError),

    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),

    #[error("PostgreSQL: {0}")]
    Postgres(#[from] sqlx::Error),

    /// A failure shared by every request of one PostgreSQL batch.
    #[error("recording reservations in PostgreSQL failed: {0}")]
    Batch(String),

    #[error("unexpected data in Redis: {0}")]
    Corrupt(String),

    /// The order log could not be asked whether an orphan's order exists.
    #[error("{0}")]
    Barrier(String),
}

impl From<InventoryError> for Status {
    fn from(error: InventoryError) -> Self {
        let message = error.to_string();
        match error {
            InventoryError::InvalidArgument(_) => Status::invalid_argument(message),
            InventoryError::UnknownSku { .. } | InventoryError::NoReservation { .. } => {
                Status::not_found(message)
            }
            InventoryError::InsufficientStock {
                sku,
                requested,
                available,
            } => Shortage {
                sku,
                requested,
                available,
            }
            .to_status(message),
            InventoryError::WrongReservationState { .. } => Status::failed_precondition(message),
            InventoryError::Fenced { .. } => Status::aborted(message),
            InventoryError::Recording { .. }
            | InventoryError::CountersMissing { .. }
            | InventoryError::Lock(_)
            | InventoryError::Redis(_)
            | InventoryError::Postgres(_)
            | InventoryError::Batch(_)
            | InventoryError::Barrier(_) => {
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

//! Everything the order API can refuse or fail with, and the one place where each becomes a
//! gRPC status.

use orderflow_proto::refusals::Shortage;
use orderflow_runtime::validate::FieldError;

use crate::lifecycle::Refusal;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error(transparent)]
    InvalidArgument(#[from] FieldError),

    #[error("order {0} not found")]
    OrderNotFound(String),

    #[error("idempotency_key: already used for a different request (other items or quantities); use a new key for a new order")]
    IdempotencyKeyReused,

    #[error(
        "an earlier request with this idempotency_key is still being processed; retry shortly"
    )]
    InProgress,

    #[error("idempotency keys are being restored after Redis lost its data; retry shortly")]
    KeysRestoring,

    /// Too few units of a SKU: inventory-svc's refusal, or the same answer from the memo of
    /// SKUs it recently reported short (`sold_out`).
    #[error("insufficient stock for SKU {:?}: requested {}, available {}", .0.sku, .0.requested, .0.available)]
    InsufficientStock(Shortage),

    /// inventory-svc refused the reservation; its status (code and message) passes through.
    #[error("{}", .0.message())]
    InventoryRefused(Status),

    #[error("inventory service unavailable: {0}")]
    InventoryUnavailable(String),

    #[error("order event not acknowledged by the broker: {0}; the order was not placed, retry")]
    BrokerUnavailable(String),

    /// The call's time budget ran out during `step`; nothing was changed.
    #[error("{step} did not finish within {after:?} (the {}); nothing was changed, retry", if *.caller_deadline { "caller's deadline" } else { "server's limit" })]
    Timeout {
        step: &'static str,
        after: std::time::Duration,
        caller_deadline: bool,
    },

    /// The state machine refused the request.
    #[error(transparent)]
    Refused(#[from] Refusal),

    #[error("page_token: not a token this API issued; pass next_page_token from the previous page, or nothing for the first")]
    BadPageToken,

    #[error("user_id {user_id:?}: more than {per_second} orders per second (bursts of {burst}); retry in {retry_after_ms} ms")]
    RateLimited {
        user_id: String,
        per_second: f64,
        burst: u32,
        retry_after_ms: i64,
    },

    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),

    #[error("PostgreSQL: {0}")]
    Postgres(#[from] sqlx::Error),

    #[error("internal error: {0}")]
    Internal(String),
}

impl OrderError {
    /// Sorts inventory-svc's answer into a refusal to pass on or an outage.
    pub fn from_inventory(status: Status) -> Self {
        match status.code() {
            Code::FailedPrecondition => match Shortage::from_status(&status) {
                Some(shortage) => Self::InsufficientStock(shortage),
                None => Self::InventoryRefused(status),
            },
            Code::InvalidArgument | Code::NotFound => Self::InventoryRefused(status),
            _ => Self::InventoryUnavailable(format!("{:?}: {}", status.code(), status.message())),
        }
    }
}

impl From<OrderError> for Status {
    fn from(error: OrderError) -> Self {
        let message = error.to_string();
        match error {
            OrderError::InvalidArgument(_)
            | OrderError::BadPageToken
            | OrderError::Refused(Refusal::WrongAmount { .. }) => Status::invalid_argument(message),
            OrderError::Refused(_) => Status::failed_precondition(message),
            OrderError::Timeout {
                caller_deadline: true,
                ..
            } => Status::deadline_exceeded(message),
            OrderError::OrderNotFound(_) => Status::not_found(message),
            OrderError::IdempotencyKeyReused => Status::already_exists(message),
            OrderError::RateLimited { .. } => Status::resource_exhausted(message),
            OrderError::InsufficientStock(shortage) => shortage.to_status(message),
            OrderError::InventoryRefused(status) => Status::new(status.code(), message),
            OrderError::InProgress
            | OrderError::KeysRestoring
            | OrderError::InventoryUnavailable(_)
            | OrderError::BrokerUnavailable(_)
            | OrderError::Timeout { .. }
            | OrderError::Redis(_)
            | OrderError::Postgres(_) => {
                tracing::warn!(%message, "order API dependency unavailable");
                Status::unavailable(message)
            }
            OrderError::Internal(_) => {
                tracing::error!(%message, "order API internal error");
                Status::internal(message)
            }
        }
    }
}

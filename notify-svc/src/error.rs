//! Everything the notification API can refuse or fail with, and the one place where each becomes
//! a gRPC status.

use orderflow_runtime::validate::FieldError;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    InvalidArgument(#[from] FieldError),

    #[error("page_token: not a token this service issued; pass next_page_token from the previous page, or nothing for the first")]
    BadPageToken,

    #[error("PostgreSQL unavailable: {0}")]
    Postgres(#[from] sqlx::Error),

    #[error("the server is shutting down; subscribe again")]
    ShuttingDown,
}

impl From<NotifyError> for Status {
    fn from(error: NotifyError) -> Self {
        let message = error.to_string();
        match error {
            NotifyError::InvalidArgument(_) | NotifyError::BadPageToken => {
                Status::invalid_argument(message)
            }
            NotifyError::Postgres(_) => {
                tracing::warn!(%message, "notification API dependency unavailable");
                Status::unavailable(message)
            }
            NotifyError::ShuttingDown => Status::unavailable(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn each_error_has_its_code_and_names_its_cause() {
        let invalid = Status::from(NotifyError::from(FieldError::new(
            "user_id",
            "must not be empty",
        )));
        assert_eq!(invalid.code(), Code::InvalidArgument);
        assert_eq!(invalid.message(), "user_id: must not be empty");
        let token = Status::from(NotifyError::BadPageToken);
        assert_eq!(token.code(), Code::InvalidArgument);
        assert!(token.message().starts_with("page_token"));
        let down = Status::from(NotifyError::from(sqlx::Error::PoolTimedOut));
        assert_eq!(down.code(), Code::Unavailable);
        assert!(down.message().contains("PostgreSQL"));
        assert_eq!(
            Status::from(NotifyError::ShuttingDown).code(),
            Code::Unavailable
        );
    }
}

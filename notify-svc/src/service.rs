//! The gRPC edge of `orderflow.notify.v1.NotificationService`: request validation, then the
//! store (ListNotifications) or the live feed (SubscribeNotifications). Errors become statuses in
//! `error`.

use orderflow_grpc::auth::Caller;
use orderflow_grpc::streams::{self, OpenStreams};
use orderflow_proto::limits::{DEFAULT_PAGE_SIZE, MAX_ID_LEN, MAX_PAGE_SIZE};
use orderflow_proto::notify::v1::notification_service_server::NotificationService;
use orderflow_proto::notify::v1::{
    ListNotificationsRequest, ListNotificationsResponse, SubscribeNotificationsRequest,
    SubscribeNotificationsResponse,
};
use orderflow_runtime::validate::{self, FieldError};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use crate::error::NotifyError;
use crate::feed::Feed;
use crate::live;
use crate::store::Store;

pub struct NotificationApi {
    pub store: Store,
    pub feed: Feed,
    /// Ends the live streams (with UNAVAILABLE) so the server can drain.
    pub shutdown: CancellationToken,
    /// The cap on SubscribeNotifications streams open at once.
    pub streams: OpenStreams,
}

impl NotificationApi {
    async fn list(
        &self,
        request: ListNotificationsRequest,
    ) -> Result<ListNotificationsResponse, NotifyError> {
        let size = page_size(request.page_size)?;
        let after = if request.page_token.is_empty() {
            None
        } else {
            Some(
                orderflow_page_token::decode(&request.page_token)
                    .ok_or(NotifyError::BadPageToken)?,
            )
        };
        // One more than asked tells whether another page follows.
        let mut page = self
            .store
            .page(&request.user_id, after, i64::from(size) + 1)
            .await?;
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        let next_page_token = if page.len() > size {
            page.truncate(size);
            page.last()
                .map(|last| orderflow_page_token::encode(last.cursor()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(ListNotificationsResponse {
            notifications: page.iter().map(|stored| stored.to_proto()).collect(),
            next_page_token,
        })
    }
}

/// 0 means the default; otherwise 1 to [`MAX_PAGE_SIZE`].
fn page_size(requested: i32) -> Result<i32, FieldError> {
    if requested == 0 {
        return Ok(DEFAULT_PAGE_SIZE);
    }
    validate::in_range(
        "page_size",
        i64::from(requested),
        1,
        i64::from(MAX_PAGE_SIZE),
    )?;
    Ok(requested)
}

#[tonic::async_trait]
impl NotificationService for NotificationApi {
    async fn list_notifications(
        &self,
        request: Request<ListNotificationsRequest>,
    ) -> Result<Response<ListNotificationsResponse>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        validate::identifier("user_id", &request.user_id, MAX_ID_LEN).map_err(NotifyError::from)?;
        caller.may_act_for(&request.user_id)?;
        Ok(Response::new(self.list(request).await?))
    }

    type SubscribeNotificationsStream = BoxStream<SubscribeNotificationsResponse>;

    async fn subscribe_notifications(
        &self,
        request: Request<SubscribeNotificationsRequest>,
    ) -> Result<Response<Self::SubscribeNotificationsStream>, Status> {
        let caller = Caller::of(&request);
        let user_id = request.into_inner().user_id;
        validate::identifier("user_id", &user_id, MAX_ID_LEN).map_err(NotifyError::from)?;
        caller.may_act_for(&user_id)?;
        if self.shutdown.is_cancelled() {
            return Err(NotifyError::ShuttingDown.into());
        }
        let slot = self.streams.open()?;
        // Subscribed first, then the start read on the database's clock: whatever is stored
        // from then on reaches this stream.
        let subscription = self.feed.subscribe(&user_id);
        let started_at: OffsetDateTime = sqlx::query_scalar("SELECT now()")
            .fetch_one(self.store.pool())
            .await
            .map_err(NotifyError::from)?;
        let stream = live::stream(
            subscription,
            started_at,
            self.store.clone(),
            self.shutdown.clone(),
        );
        Ok(Response::new(Box::pin(streams::holding(stream, slot))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes() {
        assert_eq!(page_size(0), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(1), Ok(1));
        assert_eq!(page_size(MAX_PAGE_SIZE), Ok(MAX_PAGE_SIZE));
        for bad in [-1, MAX_PAGE_SIZE + 1, i32::MIN] {
            let error = page_size(bad).unwrap_err();
            assert_eq!(error.field, "page_size", "{bad}");
        }
    }
}

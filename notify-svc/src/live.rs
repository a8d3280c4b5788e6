//! One SubscribeNotifications stream: the user's notifications from the [`feed`](crate::feed),
//! each sent once, until the client goes away or the server shuts down (then `UNAVAILABLE`, so
//! the server can drain). A subscriber that fell behind the feed's backlog re-reads what it
//! missed from PostgreSQL instead of losing it.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use orderflow_proto::notify::v1::SubscribeNotificationsResponse;
use time::OffsetDateTime;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use uuid::Uuid;

use crate::error::NotifyError;
use crate::feed::{Item, Subscription, RESYNC_MARGIN};
use crate::store::{Store, Stored};

/// Ids of the notifications a stream sent last, to skip them when a resync repeats them. A
/// resync covers a short window, so the last few thousand are plenty.
const SENT_MEMORY: usize = 4_096;
/// Most notifications read back at once after falling behind.
const CATCH_UP_LIMIT: i64 = 1_000;

/// The stream of `subscription`'s notifications stored from `started_at` (database clock).
pub fn stream(
    mut subscription: Subscription,
    started_at: OffsetDateTime,
    store: Store,
    shutdown: CancellationToken,
) -> ReceiverStream<Result<SubscribeNotificationsResponse, Status>> {
    let (sender, receiver) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut sent = Recent::new(SENT_MEMORY);
        let mut newest = started_at;
        loop {
            let received = tokio::select! {
                () = sender.closed() => return,
                () = shutdown.cancelled() => {
                    let _ = sender.try_send(Err(NotifyError::ShuttingDown.into()));
                    return;
                }
                received = subscription.items.recv() => received,
            };
            let batch = match received {
                Ok(Item::Live(notification)) => vec![notification],
                Ok(Item::Resync(notification)) if notification.created_at >= started_at => {
                    vec![notification]
                }
                Ok(Item::Resync(_)) => continue,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(user_id = %subscription.key, missed, "subscriber fell behind; reading back");
                    let users = [subscription.key.clone()];
                    match store
                        .since(&users, newest - RESYNC_MARGIN, CATCH_UP_LIMIT)
                        .await
                    {
                        Ok(stored) => stored
                            .into_iter()
                            .filter(|notification| notification.created_at >= started_at)
                            .map(Arc::new)
                            .collect(),
                        Err(error) => {
                            let _ = sender.try_send(Err(NotifyError::from(error).into()));
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            for notification in batch {
                if !sent.insert(notification.notification_id) {
                    continue;
                }
                newest = newest.max(notification.created_at);
                if !send(&sender, &notification, &shutdown).await {
                    return;
                }
            }
        }
    });
    ReceiverStream::new(receiver)
}

/// Sends one notification; `false` once the client is gone or the server is shutting down.
async fn send(
    sender: &mpsc::Sender<Result<SubscribeNotificationsResponse, Status>>,
    notification: &Stored,
    shutdown: &CancellationToken,
) -> bool {
    let answer = SubscribeNotificationsResponse {
        notification: Some(notification.to_proto()),
    };
    tokio::select! {
        sent = sender.send(Ok(answer)) => sent.is_ok(),
        // A client that stopped reading must not hold the server's shutdown up.
        () = shutdown.cancelled() => {
            let _ = sender.try_send(Err(NotifyError::ShuttingDown.into()));
            false
        }
    }
}

/// A bounded set remembering the most recent ids inserted.
struct Recent {
    order: VecDeque<Uuid>,
    ids: HashSet<Uuid>,
    capacity: usize,
}

impl Recent {
    fn new(capacity: usize) -> Self {
        Self {
            order: VecDeque::with_capacity(capacity),
            ids: HashSet::with_capacity(capacity),
            capacity: capacity.max(1),
        }
    }

    /// `false` if `id` is already remembered.
    fn insert(&mut self, id: Uuid) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_most_recent_ids() {
        let mut recent = Recent::new(2);
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        assert!(recent.insert(a));
        assert!(!recent.insert(a));
        assert!(recent.insert(b));
        assert!(recent.insert(c));
        // `a` was forgotten to make room.
        assert!(recent.insert(a));
        assert!(!recent.insert(c));
    }
}

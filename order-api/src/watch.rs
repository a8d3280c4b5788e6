//! Live order status for WatchOrder without polling per watcher: each order-api process keeps
//! one PostgreSQL `LISTEN` connection; every committed status change notifies its order id
//! (in the change's transaction, so only committed changes are announced, whichever replica
//! made them). A notification for an order somebody here watches is read once and broadcast to
//! all of its watchers; one for an unwatched order costs a map lookup.
//!
//! If the listening connection drops, notifications may have been missed: on reconnecting,
//! every watched order is read again and broadcast, and watchers skip versions they have seen.
//! A state read may already be a few changes ahead (changes in quick succession): the watcher
//! then rebuilds the versions in between from the order's history, so it sends every change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use orderflow_proto::order::v1::{Order, WatchOrderResponse};
use orderflow_runtime::backoff;
use sqlx::postgres::PgListener;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use uuid::Uuid;

use crate::lifecycle;
use crate::reads::Reads;
use crate::store::OrderStore;
use crate::transitions::CHANGES_CHANNEL;

/// Changes a slow watcher may fall behind by before it re-reads the order.
const WATCHER_BACKLOG: usize = 16;

#[derive(Clone)]
pub struct ChangeFeed {
    inner: Arc<Inner>,
}

struct Inner {
    watched: Mutex<HashMap<Uuid, broadcast::Sender<Arc<Order>>>>,
    store: OrderStore,
}

/// One watcher's stream of an order's new states; unsubscribes when dropped.
pub struct Subscription {
    changes: broadcast::Receiver<Arc<Order>>,
    order_id: Uuid,
    feed: Arc<Inner>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut watched = self
            .feed
            .watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // This subscription's receiver is still counted.
        if watched
            .get(&self.order_id)
            .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            watched.remove(&self.order_id);
        }
    }
}

impl ChangeFeed {
    pub fn new(store: OrderStore) -> Self {
        Self {
            inner: Arc::new(Inner {
                watched: Mutex::new(HashMap::new()),
                store,
            }),
        }
    }

    pub fn subscribe(&self, order_id: Uuid) -> Subscription {
        let mut watched = self
            .inner
            .watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let changes = watched
            .entry(order_id)
            .or_insert_with(|| broadcast::channel(WATCHER_BACKLOG).0)
            .subscribe();
        Subscription {
            changes,
            order_id,
            feed: Arc::clone(&self.inner),
        }
    }

    /// Listens for changes until `shutdown`, reconnecting when the connection drops.
    pub async fn run(self, shutdown: CancellationToken) {
        backoff::until_done(
            "the order change feed (PostgreSQL LISTEN)",
            &shutdown,
            || self.listen(&shutdown),
        )
        .await;
    }

    async fn listen(&self, shutdown: &CancellationToken) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(self.inner.store.pool()).await?;
        listener.listen(CHANGES_CHANNEL).await?;
        // Whatever changed while nobody listened.
        self.broadcast_current(self.watched_ids()).await;
        loop {
            let notification = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                notification = listener.try_recv() => notification?,
            };
            match notification {
                Some(notification) => {
                    let Ok(order_id) = Uuid::try_parse(notification.payload()) else {
                        continue;
                    };
                    if self.is_watched(order_id) {
                        self.broadcast_current(vec![order_id]).await;
                    }
                }
                // The connection dropped and was re-established: anything may have changed.
                None => self.broadcast_current(self.watched_ids()).await,
            }
        }
    }

    fn is_watched(&self, order_id: Uuid) -> bool {
        let watched = self
            .inner
            .watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        watched.contains_key(&order_id)
    }

    fn watched_ids(&self) -> Vec<Uuid> {
        let watched = self
            .inner
            .watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        watched.keys().copied().collect()
    }

    async fn broadcast_current(&self, order_ids: Vec<Uuid>) {
        if order_ids.is_empty() {
            return;
        }
        let orders = match self.inner.store.get_many(&order_ids).await {
            Ok(orders) => orders,
            Err(error) => {
                tracing::warn!(%error, "could not read changed orders for their watchers");
                return;
            }
        };
        let watched = self
            .inner
            .watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for order in orders {
            let sender = Uuid::try_parse(&order.order_id)
                .ok()
                .and_then(|order_id| watched.get(&order_id));
            if let Some(sender) = sender {
                // No receiver left: the last watcher is unsubscribing right now.
                let _ = sender.send(Arc::new(order));
            }
        }
    }
}

/// The WatchOrder stream: `current`, then every later version of the order, in order; ends
/// after a terminal status, when the client goes away, or (with `UNAVAILABLE`) at `shutdown`.
pub fn stream(
    mut subscription: Subscription,
    current: Order,
    reads: Reads,
    shutdown: CancellationToken,
) -> ReceiverStream<Result<WatchOrderResponse, Status>> {
    let (sender, receiver) = mpsc::channel(4);
    tokio::spawn(async move {
        let order_id = subscription.order_id;
        let send = |order: Order| {
            let sender = sender.clone();
            async move {
                let answer = WatchOrderResponse { order: Some(order) };
                sender.send(Ok(answer)).await.is_ok()
            }
        };
        let mut last = current;
        if !send(last.clone()).await {
            return;
        }
        while !lifecycle::is_terminal(last.status()) {
            let next = tokio::select! {
                () = sender.closed() => return,
                () = shutdown.cancelled() => {
                    let _ = sender.send(Err(Status::unavailable("the server is shutting down; watch again"))).await;
                    return;
                }
                next = subscription.changes.recv() => next,
            };
            let next = match next {
                Ok(order) => Ok(Some(Order::clone(&order))),
                // Fell behind: the current state covers every change missed.
                Err(broadcast::error::RecvError::Lagged(_)) => reads.find(order_id).await,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let next = match next {
                Ok(Some(next)) if next.version > last.version => next,
                Ok(_) => continue,
                Err(error) => {
                    let _ = sender.send(Err(error.into())).await;
                    return;
                }
            };
            let between = match reads
                .store
                .history_between(order_id, last.version, next.version)
                .await
            {
                Ok(between) => between,
                Err(error) => {
                    let _ = sender.send(Err(error.into())).await;
                    return;
                }
            };
            for (version, status, at) in between {
                if !send(lifecycle::as_of(&next, version, status, at)).await {
                    return;
                }
            }
            last = next;
            if !send(last.clone()).await {
                return;
            }
        }
    });
    ReceiverStream::new(receiver)
}

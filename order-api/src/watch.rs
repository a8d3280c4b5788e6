//! Live order status for WatchOrder without polling per watcher (the shared
//! `orderflow_keyed_feed`, keyed by order id): each order-api process keeps one PostgreSQL
//! `LISTEN` connection; every committed status change notifies its order id
//! (in the change's transaction, so only committed changes are announced, whichever replica
//! made them). A notification for an order somebody here watches is read once and broadcast to
//! all of its watchers; one for an unwatched order costs a map lookup.
//!
//! If the listening connection drops, notifications may have been missed: on reconnecting,
//! every watched order is read again and broadcast, and watchers skip versions they have seen.
//! A state read may already be a few changes ahead (changes in quick succession): the watcher
//! then rebuilds the versions in between from the order's history, so it sends every change.

use std::sync::Arc;

use orderflow_keyed_feed::{Announcements, Subscribers};
use orderflow_proto::order::v1::{Order, WatchOrderResponse};
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
    watchers: Subscribers<Uuid, Arc<Order>>,
    store: OrderStore,
}

/// One watcher's stream of an order's new states; unsubscribes when dropped.
pub type Subscription = orderflow_keyed_feed::Subscription<Uuid, Arc<Order>>;

impl ChangeFeed {
    pub fn new(store: OrderStore) -> Self {
        Self {
            watchers: Subscribers::new(WATCHER_BACKLOG),
            store,
        }
    }

    pub fn subscribe(&self, order_id: Uuid) -> Subscription {
        self.watchers.subscribe(order_id)
    }

    /// Listens for changes until `shutdown`, reconnecting when the connection drops.
    pub async fn run(self, shutdown: CancellationToken) {
        let pool = self.store.pool().clone();
        orderflow_keyed_feed::listen(
            &pool,
            CHANGES_CHANNEL,
            "the order change feed (PostgreSQL LISTEN)",
            None,
            &shutdown,
            &self,
        )
        .await;
    }

    async fn broadcast_current(&self, order_ids: Vec<Uuid>) {
        if order_ids.is_empty() {
            return;
        }
        match self.store.get_many(&order_ids).await {
            Ok(orders) => self
                .watchers
                .send_all(orders.into_iter().map(Arc::new), |order| {
                    Uuid::try_parse(&order.order_id).ok()
                }),
            Err(error) => {
                tracing::warn!(%error, "could not read changed orders for their watchers");
            }
        }
    }
}

impl Announcements for ChangeFeed {
    /// Every watched order read again: any of them may have changed meanwhile.
    async fn catch_up(&self, _connection: &mut PgListener) -> Result<(), sqlx::Error> {
        self.broadcast_current(self.watchers.keys()).await;
        Ok(())
    }

    /// The payload is the id of a changed order.
    async fn announced(&self, payload: &str) {
        if let Ok(order_id) = Uuid::try_parse(payload) {
            if self.watchers.is_subscribed(&order_id) {
                self.broadcast_current(vec![order_id]).await;
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
        let order_id = subscription.key;
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
                next = subscription.items.recv() => next,
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

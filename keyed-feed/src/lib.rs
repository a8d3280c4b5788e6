//! Live updates for many in-process subscribers from one PostgreSQL `LISTEN` connection per
//! process, without polling per subscriber: WatchOrder (subscribers keyed by order id) and
//! SubscribeNotifications (keyed by user id) both work this way.
//!
//! [`Subscribers`] is the fan-out: one broadcast channel per key somebody subscribed to, dropped
//! with its last subscriber, so an announcement for a key nobody here follows costs a map
//! lookup. [`listen`] keeps the `LISTEN` connection: it hands every announcement to its
//! [`Announcements`] handler and, on connecting and after every reconnection (announcements
//! sent while the connection was down are lost), asks the handler to catch up.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// The subscribers of this process, by key; cheap to clone.
pub struct Subscribers<K, T> {
    inner: Arc<Registry<K, T>>,
}

impl<K, T> Clone for Subscribers<K, T> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Registry<K, T> {
    channels: Mutex<HashMap<K, broadcast::Sender<T>>>,
    /// Items a slow subscriber may fall behind by before its receiver reports `Lagged`.
    backlog: usize,
}

impl<K, T> Registry<K, T> {
    fn channels(&self) -> MutexGuard<'_, HashMap<K, broadcast::Sender<T>>> {
        self.channels.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One subscriber's items; unsubscribes when dropped.
pub struct Subscription<K: Eq + Hash, T> {
    pub items: broadcast::Receiver<T>,
    pub key: K,
    registry: Arc<Registry<K, T>>,
}

impl<K: Eq + Hash, T> Drop for Subscription<K, T> {
    fn drop(&mut self) {
        let mut channels = self.registry.channels();
        // This subscription's receiver is still counted.
        if channels
            .get(&self.key)
            .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            channels.remove(&self.key);
        }
    }
}

impl<K: Eq + Hash + Clone, T: Clone> Subscribers<K, T> {
    /// Subscribers who may each fall `backlog` items behind.
    pub fn new(backlog: usize) -> Self {
        Self {
            inner: Arc::new(Registry {
                channels: Mutex::new(HashMap::new()),
                backlog,
            }),
        }
    }

    pub fn subscribe(&self, key: K) -> Subscription<K, T> {
        let items = self
            .inner
            .channels()
            .entry(key.clone())
            .or_insert_with(|| broadcast::channel(self.inner.backlog).0)
            .subscribe();
        Subscription {
            items,
            key,
            registry: Arc::clone(&self.inner),
        }
    }

    pub fn is_subscribed<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.inner.channels().contains_key(key)
    }

    /// Every key somebody subscribed to.
    pub fn keys(&self) -> Vec<K> {
        self.inner.channels().keys().cloned().collect()
    }

    /// Sends each item to the subscribers of its key (`key_of`), if any.
    pub fn send_all(&self, items: impl IntoIterator<Item = T>, key_of: impl Fn(&T) -> Option<K>) {
        let channels = self.inner.channels();
        for item in items {
            if let Some(sender) = key_of(&item).and_then(|key| channels.get(&key)) {
                // No receiver left: the last subscriber is unsubscribing right now.
                let _ = sender.send(item);
            }
        }
    }
}

/// What [`listen`] does with its connection.
pub trait Announcements: Sync {
    /// Connected, or connected again after the connection dropped: anything announced while
    /// nobody listened is lost, so read what subscribers may have missed (an error of the
    /// connection makes the listener reconnect).
    fn catch_up(
        &self,
        connection: &mut PgListener,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// One announcement's payload.
    fn announced(&self, payload: &str) -> impl Future<Output = ()> + Send;

    /// Every heartbeat interval given to [`listen`]: a chance to use the connection (its error
    /// makes the listener reconnect).
    fn heartbeat(
        &self,
        _connection: &mut PgListener,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
        async { Ok(()) }
    }
}

/// Listens on `channel` until `shutdown`, reconnecting with back-off whenever the connection
/// fails (`what` names it in the logs), and calls `handler` as [`Announcements`] says.
pub async fn listen(
    pool: &PgPool,
    channel: &str,
    what: &str,
    heartbeat: Option<Duration>,
    shutdown: &CancellationToken,
    handler: &impl Announcements,
) {
    orderflow_runtime::backoff::until_done(what, shutdown, || {
        listen_once(pool, channel, heartbeat, shutdown, handler)
    })
    .await;
}

async fn listen_once(
    pool: &PgPool,
    channel: &str,
    heartbeat: Option<Duration>,
    shutdown: &CancellationToken,
    handler: &impl Announcements,
) -> Result<(), sqlx::Error> {
    let mut connection = PgListener::connect_with(pool).await?;
    connection.listen(channel).await?;
    handler.catch_up(&mut connection).await?;
    let mut ticks = heartbeat.map(|every| {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    });
    loop {
        enum Step {
            Stop,
            Heartbeat,
            Received(Option<sqlx::postgres::PgNotification>),
        }
        let tick = async {
            match ticks.as_mut() {
                Some(ticks) => {
                    ticks.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        let step = tokio::select! {
            () = shutdown.cancelled() => Step::Stop,
            () = tick => Step::Heartbeat,
            received = connection.try_recv() => Step::Received(received?),
        };
        match step {
            Step::Stop => return Ok(()),
            Step::Heartbeat => handler.heartbeat(&mut connection).await?,
            Step::Received(Some(announcement)) => handler.announced(announcement.payload()).await,
            // The connection dropped and was re-established (listening again).
            Step::Received(None) => handler.catch_up(&mut connection).await?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_lives_as_long_as_its_subscribers() {
        let subscribers: Subscribers<String, u32> = Subscribers::new(4);
        let first = subscribers.subscribe("a".to_owned());
        let second = subscribers.subscribe("a".to_owned());
        assert!(subscribers.is_subscribed("a"));
        drop(first);
        assert!(subscribers.is_subscribed("a"), "one subscriber left");
        drop(second);
        assert!(!subscribers.is_subscribed("a"));
        assert!(subscribers.keys().is_empty());
    }

    #[tokio::test]
    async fn items_reach_the_subscribers_of_their_key_only() {
        let subscribers: Subscribers<u32, (u32, &str)> = Subscribers::new(4);
        let mut one = subscribers.subscribe(1);
        let mut two = subscribers.subscribe(2);
        subscribers.send_all([(1, "x"), (3, "nobody"), (2, "y")], |item| Some(item.0));
        assert_eq!(one.items.recv().await.ok(), Some((1, "x")));
        assert_eq!(two.items.recv().await.ok(), Some((2, "y")));
        assert!(one.items.try_recv().is_err());
    }
}

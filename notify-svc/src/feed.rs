//! Live notifications for SubscribeNotifications without polling per subscriber: each notify-svc
//! process keeps one PostgreSQL `LISTEN` connection; every stored notification is announced on
//! [`CHANNEL`] in the transaction that stored it (so only committed ones, whichever replica
//! stored them). An announcement for a user somebody here subscribed to is read once and
//! broadcast to that user's subscribers; any other costs a map lookup.
//!
//! Announcements sent while the listening connection was down are lost. The listener notes the
//! database's clock on its connection every [`HEARTBEAT`]; after reconnecting it re-reads every
//! subscribed user's notifications stored since the last heartbeat (less [`RESYNC_MARGIN`], for
//! transactions that started before it and committed after) and broadcasts them as a resync.
//! Subscribers skip what they already sent, so nothing is sent twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use orderflow_runtime::backoff;
use sqlx::postgres::PgListener;
use time::OffsetDateTime;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::{self, Store, Stored, CHANNEL};

/// Notifications a slow subscriber may fall behind by before it re-reads what it missed.
const SUBSCRIBER_BACKLOG: usize = 64;
/// How often the listener checks its connection (and reads the database's clock on it).
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// How far before the last moment the connection was known good a resync re-reads: a batch
/// transaction that started that much before it and committed after is still found.
pub const RESYNC_MARGIN: time::Duration = time::Duration::seconds(30);
/// Most notifications one resync reads.
const RESYNC_LIMIT: i64 = 10_000;

/// What a subscriber receives.
#[derive(Debug, Clone)]
pub enum Item {
    /// Announced as it was stored.
    Live(Arc<Stored>),
    /// Re-read after the listener reconnected: possibly sent before, or stored before the
    /// subscription started.
    Resync(Arc<Stored>),
}

#[derive(Clone)]
pub struct Feed {
    inner: Arc<Inner>,
}

struct Inner {
    subscribed: Mutex<HashMap<String, broadcast::Sender<Item>>>,
    store: Store,
    /// The last time (database clock) the listening connection was known to be listening; a
    /// resync reads from there. Starts at the feed's creation (this process's clock), so
    /// subscribers who came before the first connection miss nothing either.
    listening_at: Mutex<OffsetDateTime>,
}

/// One subscriber's items; unsubscribes when dropped.
pub struct Subscription {
    pub items: broadcast::Receiver<Item>,
    pub user_id: String,
    feed: Arc<Inner>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut subscribed = self.feed.lock_subscribed();
        // This subscription's receiver is still counted.
        if subscribed
            .get(&self.user_id)
            .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            subscribed.remove(&self.user_id);
        }
    }
}

impl Inner {
    fn lock_subscribed(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, broadcast::Sender<Item>>> {
        self.subscribed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Feed {
    pub fn new(store: Store) -> Self {
        Self {
            inner: Arc::new(Inner {
                subscribed: Mutex::new(HashMap::new()),
                store,
                listening_at: Mutex::new(OffsetDateTime::now_utc()),
            }),
        }
    }

    pub fn subscribe(&self, user_id: &str) -> Subscription {
        let items = self
            .inner
            .lock_subscribed()
            .entry(user_id.to_owned())
            .or_insert_with(|| broadcast::channel(SUBSCRIBER_BACKLOG).0)
            .subscribe();
        Subscription {
            items,
            user_id: user_id.to_owned(),
            feed: Arc::clone(&self.inner),
        }
    }

    /// Listens until `shutdown`, reconnecting (and resyncing) when the connection drops.
    pub async fn run(self, shutdown: CancellationToken) {
        backoff::until_done(
            "the notification feed (PostgreSQL LISTEN)",
            &shutdown,
            || self.listen(&shutdown),
        )
        .await;
    }

    async fn listen(&self, shutdown: &CancellationToken) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(self.inner.store.pool()).await?;
        listener.listen(CHANNEL).await?;
        // Whatever was stored while nobody listened.
        self.resync().await;
        self.heartbeat(&mut listener).await?;
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            enum Step {
                Stop,
                Heartbeat,
                Announced(Option<sqlx::postgres::PgNotification>),
            }
            let step = tokio::select! {
                () = shutdown.cancelled() => Step::Stop,
                _ = heartbeat.tick() => Step::Heartbeat,
                received = listener.try_recv() => Step::Announced(received?),
            };
            match step {
                Step::Stop => return Ok(()),
                Step::Heartbeat => self.heartbeat(&mut listener).await?,
                Step::Announced(Some(announcement)) => {
                    let Some((notification_id, user_id)) =
                        store::parse_announcement(announcement.payload())
                    else {
                        tracing::warn!(payload = announcement.payload(), "unexpected announcement");
                        continue;
                    };
                    if self.is_subscribed(user_id) {
                        self.broadcast_stored(notification_id).await;
                    }
                }
                // The connection dropped and was re-established (listening again): whatever was
                // announced in between is lost, read it.
                Step::Announced(None) => self.resync().await,
            }
        }
    }

    /// Reads the database's clock on the listening connection: it is listening at that moment.
    async fn heartbeat(&self, listener: &mut PgListener) -> Result<(), sqlx::Error> {
        let now: OffsetDateTime = sqlx::query_scalar("SELECT now()")
            .fetch_one(&mut *listener)
            .await?;
        *self
            .inner
            .listening_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = now;
        Ok(())
    }

    fn is_subscribed(&self, user_id: &str) -> bool {
        self.inner.lock_subscribed().contains_key(user_id)
    }

    async fn broadcast_stored(&self, notification_id: Uuid) {
        match self.inner.store.get_many(&[notification_id]).await {
            Ok(stored) => self.broadcast(stored, Item::Live),
            Err(error) => {
                tracing::warn!(%error, %notification_id, "could not read a new notification for its subscribers");
            }
        }
    }

    /// Re-reads and broadcasts what subscribed users may have missed since the connection was
    /// last known good.
    async fn resync(&self) {
        let user_ids: Vec<String> = self.inner.lock_subscribed().keys().cloned().collect();
        if user_ids.is_empty() {
            return;
        }
        let since = *self
            .inner
            .listening_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            - RESYNC_MARGIN;
        match self.inner.store.since(&user_ids, since, RESYNC_LIMIT).await {
            Ok(stored) => {
                tracing::info!(users = user_ids.len(), notifications = stored.len(), %since, "notification feed resynced");
                self.broadcast(stored, Item::Resync);
            }
            Err(error) => {
                tracing::warn!(%error, "could not re-read notifications for their subscribers");
            }
        }
    }

    fn broadcast(&self, stored: Vec<Stored>, item: fn(Arc<Stored>) -> Item) {
        let subscribed = self.inner.lock_subscribed();
        for notification in stored {
            if let Some(sender) = subscribed.get(&notification.user_id) {
                // No receiver left: the last subscriber is unsubscribing right now.
                let _ = sender.send(item(Arc::new(notification)));
            }
        }
    }
}

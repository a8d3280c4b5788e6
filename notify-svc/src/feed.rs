//! Live notifications for SubscribeNotifications without polling per subscriber (the shared
//! `orderflow_keyed_feed`, keyed by user id): each notify-svc process keeps one PostgreSQL
//! `LISTEN` connection; every stored notification is announced on
//! [`CHANNEL`] in the transaction that stored it (so only committed ones, whichever replica
//! stored them). An announcement for a user somebody here subscribed to is read once and
//! broadcast to that user's subscribers; any other costs a map lookup.
//!
//! Announcements sent while the listening connection was down are lost. The listener notes the
//! database's clock on its connection every [`HEARTBEAT`]; after reconnecting it re-reads every
//! subscribed user's notifications stored since the last heartbeat (less [`RESYNC_MARGIN`], for
//! transactions that started before it and committed after) and broadcasts them as a resync.
//! Subscribers skip what they already sent, so nothing is sent twice.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use orderflow_keyed_feed::{Announcements, Subscribers};
use sqlx::postgres::PgListener;
use time::OffsetDateTime;
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

impl Item {
    fn stored(&self) -> &Stored {
        match self {
            Item::Live(stored) | Item::Resync(stored) => stored,
        }
    }
}

#[derive(Clone)]
pub struct Feed {
    subscribers: Subscribers<String, Item>,
    store: Store,
    /// The last time (database clock) the listening connection was known to be listening; a
    /// resync reads from there. Starts at the feed's creation (this process's clock), so
    /// subscribers who came before the first connection miss nothing either.
    listening_at: Arc<Mutex<OffsetDateTime>>,
}

/// One subscriber's items (its key is the user id); unsubscribes when dropped.
pub type Subscription = orderflow_keyed_feed::Subscription<String, Item>;

impl Feed {
    pub fn new(store: Store) -> Self {
        Self {
            subscribers: Subscribers::new(SUBSCRIBER_BACKLOG),
            store,
            listening_at: Arc::new(Mutex::new(OffsetDateTime::now_utc())),
        }
    }

    pub fn subscribe(&self, user_id: &str) -> Subscription {
        self.subscribers.subscribe(user_id.to_owned())
    }

    /// Listens until `shutdown`, reconnecting (and resyncing) when the connection drops.
    pub async fn run(self, shutdown: CancellationToken) {
        let pool = self.store.pool().clone();
        orderflow_keyed_feed::listen(
            &pool,
            CHANNEL,
            "the notification feed (PostgreSQL LISTEN)",
            Some(HEARTBEAT),
            &shutdown,
            &self,
        )
        .await;
    }

    async fn broadcast_stored(&self, notification_id: Uuid) {
        match self.store.get_many(&[notification_id]).await {
            Ok(stored) => self.broadcast(stored, Item::Live),
            Err(error) => {
                tracing::warn!(%error, %notification_id, "could not read a new notification for its subscribers");
            }
        }
    }

    /// Re-reads and broadcasts what subscribed users may have missed since the connection was
    /// last known good.
    async fn resync(&self) {
        let user_ids = self.subscribers.keys();
        if user_ids.is_empty() {
            return;
        }
        let since = *self
            .listening_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            - RESYNC_MARGIN;
        match self.store.since(&user_ids, since, RESYNC_LIMIT).await {
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
        self.subscribers.send_all(
            stored
                .into_iter()
                .map(|notification| item(Arc::new(notification))),
            |item| Some(item.stored().user_id.clone()),
        );
    }
}

impl Announcements for Feed {
    /// Whatever was stored while nobody listened, then the connection marked good.
    async fn catch_up(&self, connection: &mut PgListener) -> Result<(), sqlx::Error> {
        self.resync().await;
        self.heartbeat(connection).await
    }

    /// The payload is `<notification_id> <user_id>`.
    async fn announced(&self, payload: &str) {
        let Some((notification_id, user_id)) = store::parse_announcement(payload) else {
            tracing::warn!(payload, "unexpected announcement");
            return;
        };
        if self.subscribers.is_subscribed(user_id) {
            self.broadcast_stored(notification_id).await;
        }
    }

    /// Reads the database's clock on the listening connection: it is listening at that moment.
    async fn heartbeat(&self, connection: &mut PgListener) -> Result<(), sqlx::Error> {
        let now: OffsetDateTime = sqlx::query_scalar("SELECT now()")
            .fetch_one(&mut *connection)
            .await?;
        *self
            .listening_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = now;
        Ok(())
    }
}

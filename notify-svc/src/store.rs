//! The `notifications` table: storing a batch's notifications (deduplicated by event id, and
//! announced to live subscribers in the same statement, so only committed rows are announced),
//! and the reads of ListNotifications and the live feed. Delivery bookkeeping is in `delivery`.

use orderflow_proto::notify::v1::Notification;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::event::NewNotification;
use orderflow_page_token::Cursor;

/// The channel on which each stored notification is announced; the payload is
/// `<notification_id> <user_id>` (ids first: a user id has no whitespace).
pub const CHANNEL: &str = "orderflow_notifications";

const COLUMNS: &str = "notification_id, event_id, user_id, order_id, event_type, text, created_at";

/// A notification as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub notification_id: Uuid,
    pub event_id: Uuid,
    pub user_id: String,
    pub order_id: Uuid,
    pub event_type: String,
    pub text: String,
    pub created_at: OffsetDateTime,
}

impl Stored {
    pub fn to_proto(&self) -> Notification {
        Notification {
            notification_id: self.notification_id.to_string(),
            user_id: self.user_id.clone(),
            order_id: self.order_id.to_string(),
            event_id: self.event_id.to_string(),
            event_type: self.event_type.clone(),
            text: self.text.clone(),
            created_at: Some(orderflow_runtime::timestamp::to_proto(self.created_at)),
        }
    }

    pub fn cursor(&self) -> Cursor {
        Cursor {
            created_at: self.created_at,
            id: self.notification_id,
        }
    }

    pub(crate) fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            notification_id: row.try_get("notification_id")?,
            event_id: row.try_get("event_id")?,
            user_id: row.try_get("user_id")?,
            order_id: row.try_get("order_id")?,
            event_type: row.try_get("event_type")?,
            text: row.try_get("text")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// Parses a [`CHANNEL`] payload into the notification id and its user.
pub fn parse_announcement(payload: &str) -> Option<(Uuid, &str)> {
    let (notification_id, user_id) = payload.split_once(' ')?;
    Some((Uuid::try_parse(notification_id).ok()?, user_id))
}

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Stores the notifications whose event is new, and announces each stored one, in one
    /// statement (one transaction): all of them or none. Answers how many were new.
    pub async fn insert(&self, notifications: &[NewNotification]) -> Result<u64, sqlx::Error> {
        let mut ids = Vec::with_capacity(notifications.len());
        let mut event_ids = Vec::with_capacity(notifications.len());
        let mut user_ids = Vec::with_capacity(notifications.len());
        let mut order_ids = Vec::with_capacity(notifications.len());
        let mut event_types = Vec::with_capacity(notifications.len());
        let mut texts = Vec::with_capacity(notifications.len());
        for notification in notifications {
            ids.push(notification.notification_id);
            event_ids.push(notification.event_id);
            user_ids.push(notification.user_id.as_str());
            order_ids.push(notification.order_id);
            event_types.push(notification.event_type);
            texts.push(notification.text.as_str());
        }
        // Data-modifying CTEs run to completion; the outer SELECT announces each new row
        // (delivered to listeners at commit, so never for a row that did not commit).
        let stored = sqlx::query(
            "WITH stored AS ( \
               INSERT INTO notifications \
                 (notification_id, event_id, user_id, order_id, event_type, text) \
               SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], \
                                    $5::text[], $6::text[]) \
               ON CONFLICT (event_id) DO NOTHING \
               RETURNING notification_id, user_id) \
             SELECT pg_notify($7, notification_id::text || ' ' || user_id) FROM stored",
        )
        .bind(&ids)
        .bind(&event_ids)
        .bind(&user_ids)
        .bind(&order_ids)
        .bind(&event_types)
        .bind(&texts)
        .bind(CHANNEL)
        .execute(&self.pool)
        .await?;
        Ok(stored.rows_affected())
    }

    /// Up to `limit` of the user's notifications, newest first, older than `after`.
    pub async fn page(
        &self,
        user_id: &str,
        after: Option<Cursor>,
        limit: i64,
    ) -> Result<Vec<Stored>, sqlx::Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM notifications WHERE user_id = $1 \
               AND ($2::timestamptz IS NULL OR (created_at, notification_id) < ($2, $3)) \
             ORDER BY created_at DESC, notification_id DESC LIMIT $4"
        );
        sqlx::query(&sql)
            .bind(user_id)
            .bind(after.map(|cursor| cursor.created_at))
            .bind(after.map(|cursor| cursor.id))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(Stored::from_row)
            .collect()
    }

    /// The notifications with these ids (those that exist), oldest first.
    pub async fn get_many(&self, ids: &[Uuid]) -> Result<Vec<Stored>, sqlx::Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM notifications WHERE notification_id = ANY($1) \
             ORDER BY created_at, notification_id"
        );
        sqlx::query(&sql)
            .bind(ids)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(Stored::from_row)
            .collect()
    }

    /// The notifications of these users stored at or after `since`, oldest first, at most
    /// `limit` (the oldest ones).
    pub async fn since(
        &self,
        user_ids: &[String],
        since: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<Stored>, sqlx::Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM notifications WHERE user_id = ANY($1) AND created_at >= $2 \
             ORDER BY created_at, notification_id LIMIT $3"
        );
        sqlx::query(&sql)
            .bind(user_ids)
            .bind(since)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(Stored::from_row)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_parse() {
        let id = Uuid::now_v7();
        assert_eq!(
            parse_announcement(&format!("{id} alice")),
            Some((id, "alice"))
        );
        assert_eq!(parse_announcement("alice"), None);
        assert_eq!(parse_announcement("nope alice"), None);
    }
}

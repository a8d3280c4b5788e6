//! notify-svc's [`BatchHandler`] for the shared consume loop: a batch of order events becomes
//! notifications, stored (and announced) in one statement, so the batch commits whole or not at
//! all; an event that can never be a notification is handed back to be dead-lettered. After a
//! commit that stored something, the delivery task is woken so it does not wait for its tick.

use std::collections::HashSet;
use std::sync::Arc;

use orderflow_kafka::consume::{BatchError, BatchHandler, Received, Rejected};
use tokio::sync::Notify;
use tracing::Instrument;
use uuid::Uuid;

use crate::event;
use crate::store::Store;

pub struct Ingest {
    pub store: Store,
    /// Wakes the delivery task.
    pub delivery: Arc<Notify>,
}

impl BatchHandler for Ingest {
    async fn apply(&self, batch: &[Received]) -> Result<Vec<Rejected>, BatchError> {
        let mut rejected = Vec::new();
        let mut notifications = Vec::with_capacity(batch.len());
        let mut events = HashSet::with_capacity(batch.len());
        for (index, message) in batch.iter().enumerate() {
            match event::notification(message) {
                // The same event twice in one batch (a redelivery): the first one counts.
                Ok(notification) if !events.insert(notification.event_id) => {}
                Ok(notification) => notifications.push(notification),
                Err(reason) => rejected.push(Rejected { index, reason }),
            }
        }
        if notifications.is_empty() {
            return Ok(rejected);
        }
        // Ids are time-ordered and break ties between rows stored together: hand them out in
        // the order things happened.
        notifications.sort_by_key(|notification| notification.happened);
        for notification in &mut notifications {
            notification.notification_id = Uuid::now_v7();
        }
        let stored = self
            .store
            .insert(&notifications)
            .instrument(orderflow_runtime::postgres::span("INSERT", "notifications"))
            .await?;
        tracing::debug!(
            events = batch.len(),
            stored,
            rejected = rejected.len(),
            "batch applied"
        );
        if stored > 0 {
            self.delivery.notify_one();
        }
        Ok(rejected)
    }
}

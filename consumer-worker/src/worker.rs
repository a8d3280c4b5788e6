//! The consume loop: receive, decode, apply (retrying while PostgreSQL is unavailable), and only
//! then store the offset for the next commit.

use std::time::Duration;

use orderflow_proto::events::v1::OrderCreated;
use prost::Message as _;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::Message as _;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::apply::{self, Applied, ApplyError};
use crate::record;

pub struct Worker {
    pub consumer: StreamConsumer,
    pub pool: PgPool,
    pub topic: String,
    pub max_backoff: Duration,
    pub brokers: String,
}

/// Whether the loop goes on after a message.
enum Next {
    Continue,
    Stop,
}

impl Worker {
    pub async fn run(
        self,
        shutdown: CancellationToken,
    ) -> Result<(), orderflow_runtime::RuntimeError> {
        let kafka_error = |source| orderflow_runtime::RuntimeError::Kafka {
            brokers: self.brokers.clone(),
            source,
        };
        self.consumer
            .subscribe(&[&self.topic])
            .map_err(kafka_error)?;
        tracing::info!(topic = %self.topic, "consuming");
        loop {
            let received = tokio::select! {
                () = shutdown.cancelled() => break,
                received = self.consumer.recv() => received,
            };
            let message = match received {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(%error, "Kafka receive failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            if let Next::Stop = self.handle(&message, &shutdown).await {
                break;
            }
            self.consumer
                .store_offset_from_message(&message)
                .map_err(kafka_error)?;
        }
        // Commit what was applied before leaving, so the next owner starts right after it.
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => {}
            // Nothing stored since the last automatic commit.
            Err(rdkafka::error::KafkaError::ConsumerCommit(
                rdkafka::types::RDKafkaErrorCode::NoOffset,
            )) => {}
            Err(error) => tracing::warn!(%error, "final offset commit failed"),
        }
        tracing::info!("consumer stopped");
        Ok(())
    }

    async fn handle(&self, message: &BorrowedMessage<'_>, shutdown: &CancellationToken) -> Next {
        let position = (message.partition(), message.offset());
        let created = OrderCreated::decode(message.payload().unwrap_or_default())
            .map_err(|error| error.to_string())
            .and_then(|event| record::order_created(&event));
        let created = match created {
            Ok(created) => created,
            Err(reason) => {
                tracing::error!(?position, %reason, "skipping an event that can never be applied");
                return Next::Continue;
            }
        };

        let mut backoff = Duration::from_millis(100);
        loop {
            match apply::order_created(&self.pool, message.topic(), &created).await {
                Ok(applied) => {
                    match applied {
                        Applied::Inserted | Applied::DuplicateEvent | Applied::OrderExists => {
                            tracing::debug!(order_id = %created.row.order_id, ?applied, "applied");
                        }
                        Applied::InsertedCancelled => tracing::warn!(
                            order_id = %created.row.order_id,
                            "order recorded CANCELLED: its stock was released before it arrived"
                        ),
                        Applied::IdempotencyKeyTaken => tracing::error!(
                            order_id = %created.row.order_id,
                            user_id = %created.row.user_id,
                            "order not persisted: another order already holds its idempotency key"
                        ),
                    }
                    return Next::Continue;
                }
                Err(ApplyError::Refused(error)) => {
                    tracing::error!(?position, order_id = %created.row.order_id, %error, "skipping an event PostgreSQL refuses");
                    return Next::Continue;
                }
                Err(error @ ApplyError::Unavailable(_)) => {
                    tracing::warn!(order_id = %created.row.order_id, %error, ?backoff, "retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return Next::Stop,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.max_backoff);
                }
            }
        }
    }
}

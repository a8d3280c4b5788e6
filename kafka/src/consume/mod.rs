//! The consume loop of every process that applies order events (consumer-worker, notify-svc).
//! A service supplies a [`BatchHandler`]; this module owns everything around it that must be
//! right the same way everywhere:
//!
//! - **Batches**: up to `--batch-max-messages` messages, or what arrived within
//!   `--batch-max-wait-ms` of the first, handed over together so the handler can apply them in
//!   one transaction.
//! - **Offsets after effects**: a message's offset is stored for commit only after the handler
//!   committed its effect (and a message it rejected is on its dead-letter topic). A crash
//!   replays at most the messages since the last commit; handlers make replays no-ops.
//! - **Transient failures** (the handler says `Unavailable`): the same batch again after a
//!   capped exponential backoff; nothing is committed, nothing else is fetched meanwhile.
//! - **Poison**: a message that can never be applied goes to `<topic>.dlq` with headers saying
//!   why ([`dead_letter`]), then the loop goes on. A batch the database refuses as a whole is
//!   applied message by message to find the one to dead-letter.
//! - **Shutdown, bounded**: stop fetching, finish the batch in flight, commit, leave the group,
//!   all within the drain timeout (a small fixed margin more for the commit); whatever still
//!   waits for the broker then is abandoned ([`crate::blocking`]), so a dead broker cannot hold the
//!   process.
//! - **Stalled groups**: a member that sees partitions it does not hold stand still while behind
//!   leaves and rejoins the group with a fresh member id ([`stall`]).
//! - **Lag**: reported by the Kafka client per partition, logged and served ([`status`]).

pub mod dead_letter;
mod stall;
pub mod status;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::args::{ConsumerArgs, KafkaArgs};
use dead_letter::DeadLetters;
use orderflow_runtime::backoff::Backoff;
use orderflow_runtime::RuntimeError;
use orderflow_telemetry::metrics::{metrics, Group, Outcome};
use stall::{Stalled, Watch};
use status::{ConsumerStatus, LagContext};

/// The final commit and leaving the group get at least this long, even when the batch in hand
/// used up the whole drain timeout.
const CLOSE_AT_LEAST: Duration = Duration::from_secs(2);

/// One consumed message, detached from the Kafka client.
#[derive(Debug, Clone)]
pub struct Received {
    /// The unprefixed topic, one of those the loop was started with.
    pub topic: &'static str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// A message of a batch that can never be applied: it goes to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Its position in the batch.
    pub index: usize,
    pub reason: String,
}

/// Why a batch was not applied. Either way the handler committed nothing of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// A passing failure (database down, timeout, deadlock): the same batch is tried again.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The database refused the data (a constraint): some message of the batch can never be
    /// applied. The loop retries the messages one by one to find it.
    #[error("refused: {0}")]
    Refused(String),
}

impl From<sqlx::Error> for BatchError {
    /// SQLSTATE class 22 (data exception) and 23 (integrity constraint violation) are about the
    /// data: retrying cannot help, the loop isolates the message. Anything else (connections,
    /// timeouts, deadlocks, shutdowns) may pass.
    fn from(error: sqlx::Error) -> Self {
        let refused = error
            .as_database_error()
            .and_then(|db| db.code())
            .is_some_and(|code| code.starts_with("22") || code.starts_with("23"));
        if refused {
            Self::Refused(format!("PostgreSQL refused it: {error}"))
        } else {
            Self::Unavailable(format!("PostgreSQL: {error}"))
        }
    }
}

/// Applies batches of messages. `apply` commits the effects of every message it does not
/// return as rejected, atomically, or none of them (and then fails).
pub trait BatchHandler: Send + Sync {
    fn apply(
        &self,
        batch: &[Received],
    ) -> impl Future<Output = Result<Vec<Rejected>, BatchError>> + Send;
}

/// What to consume, and how.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub kafka: KafkaArgs,
    pub group_id: String,
    /// Unprefixed topic names (`orderflow_proto::topics`).
    pub topics: &'static [&'static str],
    pub consumer: ConsumerArgs,
    /// After shutdown, how long finishing the batch in hand, the final commit, leaving the group
    /// and flushing the dead letters may take in all (the server's `--drain-timeout-ms`): what
    /// still waits then is abandoned (uncommitted messages are replayed by the next owner, to
    /// no effect).
    pub drain_timeout: Duration,
}

impl Subscription {
    /// The status this subscription's loop reports into; serve it with
    /// [`ConsumerStatus::service`] before the loop starts.
    pub fn status(&self) -> ConsumerStatus {
        ConsumerStatus::new(&self.group_id)
    }
}

/// The loop stopped before the batch was applied (shutdown during a retry).
struct Stopped;

/// Creates the topics and their dead-letter topics if missing, joins the group and applies
/// batches with `handler` until `shutdown` is cancelled; then commits and leaves the group,
/// within `subscription.drain_timeout` (plus [`CLOSE_AT_LEAST`] for the commit).
pub async fn run(
    subscription: Subscription,
    handler: impl BatchHandler,
    status: ConsumerStatus,
    shutdown: CancellationToken,
) -> Result<(), RuntimeError> {
    let kafka = &subscription.kafka;
    let full_names: HashMap<String, &'static str> = subscription
        .topics
        .iter()
        .map(|topic| (kafka.topic(topic), *topic))
        .collect();
    let mut to_create: Vec<String> = full_names.keys().cloned().collect();
    to_create.extend(full_names.keys().map(|name| dead_letter::topic(name)));
    crate::client::ensure_topics(kafka, &to_create).await?;

    let consumer = Arc::new(create_consumer(&subscription, &status)?);
    let names: Vec<String> = full_names.keys().cloned().collect();
    subscribe(&consumer, &subscription, &names)?;
    tracing::info!(topics = ?names, group = %subscription.group_id, "consuming");

    let mut consuming = Consuming {
        consumer,
        watch: Watch::new(
            kafka,
            &subscription.group_id,
            Duration::from_millis(subscription.consumer.session_timeout_ms),
            names.clone(),
        )?,
        names,
        full_names,
        handler,
        dead_letters: DeadLetters::new(kafka, &subscription.group_id)?,
        status,
        subscription,
        shutdown,
    };
    let (consumed, deadline) = consuming.run().await;
    consuming.leave(deadline).await;
    consumed
}

/// A consumer of the subscription's group reporting into `status`, not subscribed yet.
fn create_consumer(
    subscription: &Subscription,
    status: &ConsumerStatus,
) -> Result<StreamConsumer<LagContext>, RuntimeError> {
    let settings = &subscription.consumer;
    crate::client::consumer_config(&subscription.kafka, &subscription.group_id)?
        .set(
            "statistics.interval.ms",
            settings.lag_report_interval_ms.to_string(),
        )
        .set(
            "session.timeout.ms",
            settings.session_timeout_ms.to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            (settings.session_timeout_ms / 3).max(1).to_string(),
        )
        .create_with_context(LagContext::new(status.clone()))
        .map_err(|source| RuntimeError::Kafka {
            brokers: subscription.kafka.kafka_brokers.clone(),
            source: source.into(),
        })
}

fn subscribe(
    consumer: &StreamConsumer<LagContext>,
    subscription: &Subscription,
    names: &[String],
) -> Result<(), RuntimeError> {
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    consumer
        .subscribe(&names)
        .map_err(|source| RuntimeError::Kafka {
            brokers: subscription.kafka.kafka_brokers.clone(),
            source: source.into(),
        })
}

/// Commits what was stored, leaves the group and closes the consumer: blocking, for as long as
/// the broker takes (for good when it is gone), so only ever run through [`crate::blocking`].
fn close(consumer: Arc<StreamConsumer<LagContext>>) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => {}
        // Nothing stored since the last automatic commit.
        Err(rdkafka::error::KafkaError::ConsumerCommit(
            rdkafka::types::RDKafkaErrorCode::NoOffset,
        )) => {}
        Err(error) => tracing::warn!(%error, "final offset commit failed"),
    }
    consumer.unsubscribe();
    // The last reference closes it (a check of the group's offsets may still hold one).
    drop(consumer);
}

/// The consumer span of one batch: a child of the trace its first message was published in,
/// linked to the traces of the others (one transaction applies them all; a span has one parent).
fn batch_span(group: &str, batch: &[Received]) -> tracing::Span {
    use opentelemetry::trace::TraceContextExt;
    let span = tracing::info_span!(
        "kafka process",
        "otel.name" = %format_args!("process {}", batch.first().map_or("", |first| first.topic)),
        "otel.kind" = "consumer",
        "messaging.system" = "kafka",
        "messaging.operation.type" = "process",
        "messaging.consumer.group.name" = group,
        "messaging.batch.message_count" = batch.len(),
    );
    let mut contexts = batch
        .iter()
        .map(|message| orderflow_telemetry::trace_context::extract_kafka(&message.headers));
    if let Some(first) = contexts.next() {
        orderflow_telemetry::trace_context::set_parent(&span, first);
    }
    for context in contexts {
        let linked = context.span().span_context().clone();
        if linked.is_valid() {
            span.add_link(linked);
        }
    }
    span
}

struct Consuming<H> {
    /// Shared with the checks of the group's offsets ([`Watch`]), which run on threads.
    consumer: Arc<StreamConsumer<LagContext>>,
    watch: Watch,
    /// Full names of the subscribed topics.
    names: Vec<String>,
    full_names: HashMap<String, &'static str>,
    handler: H,
    dead_letters: DeadLetters,
    status: ConsumerStatus,
    subscription: Subscription,
    shutdown: CancellationToken,
}

/// What the loop does next.
enum Next {
    Batch(Vec<Received>),
    /// Nothing to apply: look at the group's offsets.
    Idle,
    Stop,
}

impl<H: BatchHandler> Consuming<H> {
    /// Consumes until shut down; the batch in hand then gets until the drain timeout. Answers
    /// when the close must be done by.
    async fn run(&mut self) -> (Result<(), RuntimeError>, Instant) {
        let shutdown = self.shutdown.clone();
        let drain = self.subscription.drain_timeout;
        let mut stopping_since = None;
        let consumed = {
            let overrun = async {
                shutdown.cancelled().await;
                stopping_since = Some(Instant::now());
                tokio::time::sleep(drain).await;
            };
            tokio::select! {
                consumed = self.consume() => Some(consumed),
                () = overrun => None,
            }
        };
        let deadline = stopping_since.unwrap_or_else(Instant::now) + drain;
        let consumed = consumed.unwrap_or_else(|| {
            tracing::warn!(
                ?drain,
                "the batch in hand is still not applied at the drain timeout; abandoning it \
                 uncommitted (the next owner of its partitions replays it)"
            );
            Ok(())
        });
        (consumed, deadline)
    }

    async fn consume(&mut self) -> Result<(), RuntimeError> {
        loop {
            match self.next_batch().await {
                Next::Stop => return Ok(()),
                Next::Idle => {}
                Next::Batch(batch) => {
                    let span = batch_span(&self.subscription.group_id, &batch);
                    match self.apply(&batch).instrument(span).await {
                        Ok(()) => self.store_offsets(&batch),
                        Err(Stopped) => return Ok(()),
                    }
                }
            }
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
            if let Some(stalled) = self.watch.poll(&self.consumer) {
                self.rejoin(&stalled).await?;
            }
        }
    }

    /// Leaves the group and joins it again as a new member, so the coordinator rebalances.
    async fn rejoin(&mut self, stalled: &Stalled) -> Result<(), RuntimeError> {
        let group = &self.subscription.group_id;
        let partitions: Vec<String> = stalled
            .partitions
            .iter()
            .take(10)
            .map(|(partition, lag, still)| {
                format!("{partition} lag {lag} unmoved for {}s", still.as_secs())
            })
            .collect();
        tracing::warn!(
            %group,
            held_nothing_for = ?stalled.held_nothing_for,
            partitions_held = stalled.held,
            stalled_partitions = stalled.partitions.len(),
            stalled_lag = stalled.total_lag(),
            stalled = ?partitions,
            next_window = ?self.watch.window(),
            "partitions with messages waiting have not moved for a whole stall window and no \
             rebalance came; leaving and rejoining the group with a new member id"
        );
        metrics()
            .kafka_consumer_rejoins
            .get_or_create(&Group {
                group: group.clone(),
            })
            .inc();
        let fresh = Arc::new(create_consumer(&self.subscription, &self.status)?);
        let stale = std::mem::replace(&mut self.consumer, fresh);
        self.watch.rejoined();
        let deadline =
            Instant::now() + Duration::from_millis(self.subscription.consumer.session_timeout_ms);
        tokio::select! {
            // Shutting down: the old member closes on its own thread meanwhile.
            () = self.shutdown.cancelled() => return Ok(()),
            _ = crate::blocking::until("leaving the group to rejoin it", deadline, move || close(stale)) => {}
        }
        subscribe(&self.consumer, &self.subscription, &self.names)
    }

    /// The next batch: waits for a first message, then takes what else arrives within the
    /// batch window, up to the batch size.
    async fn next_batch(&mut self) -> Next {
        let first = tokio::select! {
            () = self.shutdown.cancelled() => return Next::Stop,
            () = self.watch.wake() => return Next::Idle,
            received = self.consumer.recv() => received,
        };
        let mut batch = Vec::new();
        match first {
            Ok(message) => batch.extend(self.detach(&message)),
            Err(error) => {
                tracing::warn!(%error, "Kafka receive failed; retrying");
                tokio::select! {
                    () = self.shutdown.cancelled() => return Next::Stop,
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                return Next::Idle;
            }
        }
        let settings = &self.subscription.consumer;
        let window_closes = Instant::now() + Duration::from_millis(settings.batch_max_wait_ms);
        while batch.len() < settings.batch_max_messages.max(1) {
            tokio::select! {
                () = tokio::time::sleep_until(window_closes) => break,
                // Shutting down: apply what is in hand and fetch nothing more.
                () = self.shutdown.cancelled() => break,
                received = self.consumer.recv() => match received {
                    Ok(message) => batch.extend(self.detach(&message)),
                    Err(_) => break,
                },
            }
        }
        if batch.is_empty() {
            return Next::Idle;
        }
        Next::Batch(batch)
    }

    fn detach(&self, message: &BorrowedMessage<'_>) -> Option<Received> {
        let Some(topic) = self.full_names.get(message.topic()) else {
            tracing::error!(
                topic = message.topic(),
                "a message from a topic not subscribed to"
            );
            return None;
        };
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|header| (header.key.to_owned(), header.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        Some(Received {
            topic,
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().unwrap_or_default().to_vec(),
            headers,
        })
    }

    /// Applies the batch, retrying passing failures; when the database refuses the batch,
    /// applies its messages one by one so only the bad one is dead-lettered.
    async fn apply(&self, batch: &[Received]) -> Result<(), Stopped> {
        let rejected = match self.apply_retrying(batch).await? {
            Ok(rejected) => {
                self.status.batch_applied(batch);
                rejected
            }
            Err(refusal) if batch.len() > 1 => {
                tracing::warn!(%refusal, size = batch.len(), "batch refused; applying its messages one by one");
                let mut rejected = Vec::new();
                for (index, message) in batch.iter().enumerate() {
                    match self.apply_retrying(std::slice::from_ref(message)).await? {
                        Ok(single) => {
                            self.status.batch_applied(std::slice::from_ref(message));
                            rejected.extend(single.into_iter().map(|one| Rejected {
                                index,
                                reason: one.reason,
                            }));
                        }
                        Err(reason) => rejected.push(Rejected { index, reason }),
                    }
                }
                rejected
            }
            Err(reason) => vec![Rejected { index: 0, reason }],
        };
        for Rejected { index, reason } in rejected {
            let Some(message) = batch.get(index) else {
                tracing::error!(index, "the handler rejected a message outside its batch");
                continue;
            };
            tracing::error!(
                topic = message.topic,
                partition = message.partition,
                offset = message.offset,
                %reason,
                "dead-lettering a message that can never be applied"
            );
            self.dead_letters
                .send(
                    &self.consumer_topic(message.topic),
                    message,
                    &reason,
                    &self.shutdown,
                )
                .await
                .map_err(|_| Stopped)?;
            self.status.dead_lettered(message.topic);
        }
        Ok(())
    }

    /// `Ok(Err(reason))`: the database refused it. Retries passing failures until they pass or
    /// the loop is shut down.
    async fn apply_retrying(
        &self,
        batch: &[Received],
    ) -> Result<Result<Vec<Rejected>, String>, Stopped> {
        let mut backoff = Backoff::new(
            Duration::from_millis(100),
            Duration::from_millis(self.subscription.consumer.max_backoff_ms.max(1)),
        );
        loop {
            let started = Instant::now();
            let applied = self.handler.apply(batch).await;
            let outcome = match &applied {
                Ok(_) => "applied",
                Err(BatchError::Refused(_)) => "refused",
                Err(BatchError::Unavailable(_)) => "unavailable",
            };
            metrics()
                .kafka_batch_duration
                .get_or_create(&Outcome { outcome })
                .observe(started.elapsed().as_secs_f64());
            match applied {
                Ok(rejected) => return Ok(Ok(rejected)),
                Err(BatchError::Refused(reason)) => return Ok(Err(reason)),
                Err(BatchError::Unavailable(reason)) => {
                    tracing::warn!(%reason, pause = ?backoff.pause(), size = batch.len(), "applying a batch failed; retrying");
                    if !backoff.wait(&self.shutdown).await {
                        return Err(Stopped);
                    }
                }
            }
        }
    }

    fn consumer_topic(&self, topic: &str) -> String {
        self.full_names
            .iter()
            .find_map(|(full, short)| (*short == topic).then(|| full.clone()))
            .unwrap_or_else(|| topic.to_owned())
    }

    /// Stores, per partition, the offset after the batch's last message, for the next commit.
    fn store_offsets(&self, batch: &[Received]) {
        let mut next: HashMap<(&str, i32), i64> = HashMap::new();
        for message in batch {
            let entry = next.entry((message.topic, message.partition)).or_default();
            *entry = (*entry).max(message.offset + 1);
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), offset) in next {
            let full = self.consumer_topic(topic);
            if let Err(error) =
                offsets.add_partition_offset(&full, partition, Offset::Offset(offset))
            {
                tracing::error!(%error, "building the offsets to store");
            }
        }
        // Fails for a partition taken away by a rebalance meanwhile: its new owner replays the
        // batch, which changes nothing.
        if let Err(error) = self.consumer.store_offsets(&offsets) {
            tracing::warn!(%error, "storing offsets failed (partitions reassigned?)");
        }
    }

    /// Commits what was applied, then leaves the group (closing the consumer), so the next
    /// owner of each partition starts right after it; flushes the dead letters meanwhile. Both
    /// wait for the broker until `deadline` at most (the commit at least [`CLOSE_AT_LEAST`]).
    async fn leave(self, deadline: Instant) {
        let Self {
            consumer,
            dead_letters,
            ..
        } = self;
        let closing = crate::blocking::until(
            "committing and leaving the group",
            deadline.max(Instant::now() + CLOSE_AT_LEAST),
            move || close(consumer),
        );
        let (closed, ()) = tokio::join!(closing, dead_letters.close(deadline));
        if closed.is_some() {
            tracing::info!("consumer stopped and left its group");
        } else {
            tracing::warn!(
                "consumer stopped without confirming its final commit or leaving the group: \
                 its partitions move after the session timeout and the next owner replays what \
                 was not committed (to no effect)"
            );
        }
    }
}

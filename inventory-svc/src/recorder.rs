//! Group commit of admitted reservations into PostgreSQL.
//!
//! Every reservation Redis admits is recorded in PostgreSQL before `Reserve` answers, so an
//! acknowledged reservation survives Redis losing its data. Recording them one transaction each
//! would make the hot SKU's row the bottleneck of a flash sale; instead one task per process
//! takes whatever admissions queued up while the previous batch was being written (no added
//! wait when idle) and records them all in one transaction, then confirms them in Redis in one
//! round trip.

use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::counters::Counters;
use crate::error::InventoryError;
use crate::ledger::{Admission, Ledger, Recorded};

type Reply = oneshot::Sender<Result<Recorded, InventoryError>>;

#[derive(Clone)]
pub struct Recorder {
    queue: mpsc::Sender<(Admission, Reply)>,
}

impl Recorder {
    /// Starts the recording task; it ends when every `Recorder` clone is dropped.
    pub fn start(ledger: Ledger, counters: Counters, max_batch: usize) -> Self {
        let (queue, pending) = mpsc::channel(max_batch * 4);
        tokio::spawn(record_batches(ledger, counters, pending, max_batch));
        Self { queue }
    }

    /// Waits until the admission is recorded in the next group commit (one span: the wait is
    /// this reservation's share of that transaction).
    pub async fn record(&self, admission: Admission) -> Result<Recorded, InventoryError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || InventoryError::Batch("the recorder stopped".into());
        async {
            self.queue
                .send((admission, reply))
                .await
                .map_err(|_| stopped())?;
            answer.await.map_err(|_| stopped())?
        }
        .instrument(orderflow_runtime::postgres::span("INSERT", "reservations"))
        .await
    }
}

async fn record_batches(
    ledger: Ledger,
    counters: Counters,
    mut pending: mpsc::Receiver<(Admission, Reply)>,
    max_batch: usize,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while pending.recv_many(&mut batch, max_batch).await > 0 {
        let (admissions, replies): (Vec<Admission>, Vec<Reply>) = batch.drain(..).unzip();
        match ledger.record(&admissions).await {
            Ok(outcomes) => {
                let accepted: Vec<String> = admissions
                    .iter()
                    .zip(&outcomes)
                    .filter(|(_, outcome)| matches!(outcome, Recorded::Accepted { .. }))
                    .map(|(admission, _)| admission.order_id.to_string())
                    .collect();
                // Unconfirmed reservations are still valid: a retry finds them in PostgreSQL.
                if let Err(error) = counters.confirm(&accepted).await {
                    tracing::warn!(%error, "could not mark recorded reservations in Redis");
                }
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                tracing::warn!(%error, batch = admissions.len(), "recording reservations failed");
                for reply in replies {
                    let _ = reply.send(Err(InventoryError::Batch(error.to_string())));
                }
            }
        }
    }
}

//! Kafka client calls that wait for the broker (a synchronous commit, leaving the group and
//! closing the consumer, flushing and closing a producer, fetching the group's offsets) may
//! block for as long as the broker does not answer: librdkafka bounds some of them with its own
//! timeouts and not others (closing a consumer whose group coordinator is gone waits for good).
//! Each runs here on a thread of its own and the caller waits at most until a deadline; past it
//! the call is abandoned, logged, and its thread left to finish or to end with the process.
//! Abandoning is safe for every caller: a consumer's offsets are only stored after the effects
//! committed and the handlers make a replay a no-op, so whatever a lost commit leaves
//! uncommitted is applied again harmlessly; a read of a group's offsets is simply asked again.
//!
//! Not tokio's blocking pool: a runtime waits for every blocking task when it shuts down, so a
//! call stuck there would keep the process from exiting.

use tokio::sync::oneshot;
use tokio::time::Instant;

/// Runs `call` on a thread of its own and waits for its result until `deadline`. `None`: it did
/// not finish in time (or its thread could not start) and was abandoned, as logged.
pub(crate) async fn until<T: Send + 'static>(
    what: &'static str,
    deadline: Instant,
    call: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let started = Instant::now();
    let receiver = spawn(what, call)?;
    match tokio::time::timeout_at(deadline, receiver).await {
        Ok(Ok(result)) => Some(result),
        // The thread panicked: the panic message is already on stderr.
        Ok(Err(_)) => {
            tracing::warn!(what, "a Kafka client call panicked");
            None
        }
        Err(_) => {
            tracing::warn!(
                what,
                waited = ?started.elapsed(),
                "the broker did not answer in time; abandoning the call (its thread ends with the process)"
            );
            None
        }
    }
}

/// Starts `call` on a thread of its own; its result arrives on the receiver.
pub(crate) fn spawn<T: Send + 'static>(
    what: &'static str,
    call: impl FnOnce() -> T + Send + 'static,
) -> Option<oneshot::Receiver<T>> {
    let (sender, receiver) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("kafka-blocking".into())
        .spawn(move || {
            // The receiver is gone when the caller abandoned the call: nobody to tell.
            let _ = sender.send(call());
        });
    match spawned {
        Ok(_) => Some(receiver),
        Err(error) => {
            tracing::error!(what, %error, "cannot start a thread for a Kafka client call");
            None
        }
    }
}

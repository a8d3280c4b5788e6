//! Capped exponential backoff for loops that retry until something comes back (a database, a
//! broker, a listening connection), ending the wait early when the process shuts down.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// Pauses start at `first` and double up to `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            next: first.min(max),
            max,
        }
    }

    /// The pause the next [`Backoff::wait`] takes.
    pub fn pause(&self) -> Duration {
        self.next
    }

    /// Sleeps for the current pause and doubles the next one; `false` if `shutdown` came first.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let pause = self.next;
        self.next = (self.next * 2).min(self.max);
        tokio::select! {
            () = shutdown.cancelled() => false,
            () = tokio::time::sleep(pause) => true,
        }
    }
}

/// Runs `attempt` until it succeeds or `shutdown` is cancelled; after each failure, logs it
/// (`what` names the task) and waits a pause that doubles from 100 ms up to 5 s. For tasks that
/// keep a connection open and return an error when it drops (e.g. a PostgreSQL `LISTEN`).
pub async fn until_done<F, Fut, E>(what: &str, shutdown: &CancellationToken, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    while !shutdown.is_cancelled() {
        match attempt().await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(%error, pause = ?backoff.pause(), "{what} failed; retrying");
                if !backoff.wait(shutdown).await {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pauses_double_up_to_the_cap_and_shutdown_ends_them() {
        let mut backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(3));
        let shutdown = CancellationToken::new();
        let mut pauses = Vec::new();
        for _ in 0..4 {
            pauses.push(backoff.pause().as_millis());
            assert!(backoff.wait(&shutdown).await);
        }
        assert_eq!(pauses, [1, 2, 3, 3]);
        shutdown.cancel();
        assert!(!backoff.wait(&shutdown).await);
    }
}

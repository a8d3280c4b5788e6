//! The time budget of one call: the caller's gRPC deadline (`grpc-timeout`) or our own limit,
//! whichever ends first. Every downstream step (PostgreSQL, Redis, inventory-svc, the broker's
//! ack) runs within it, and inventory-svc is told what is left, so nothing keeps working for a
//! caller that has given up.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tonic::metadata::MetadataMap;

use crate::error::OrderError;

#[derive(Debug, Clone, Copy)]
pub struct CallDeadline {
    pub at: Instant,
    total: Duration,
    /// The caller's deadline is the binding one: running out is `DEADLINE_EXCEEDED`, not ours
    /// (`UNAVAILABLE`, a dependency was too slow).
    from_caller: bool,
}

impl CallDeadline {
    /// Our own limit only (background work).
    pub fn within(limit: Duration) -> Self {
        Self {
            at: Instant::now() + limit,
            total: limit,
            from_caller: false,
        }
    }

    /// `limit` or the caller's `grpc-timeout`, whichever ends first. We aim to answer a little
    /// before the caller's deadline: tonic cuts a handler at that instant with `CANCELLED`, and
    /// the caller should hear `DEADLINE_EXCEEDED` with the step that was slow.
    pub fn for_call(metadata: &MetadataMap, limit: Duration) -> Self {
        let caller = orderflow_grpc::deadline::caller_timeout(metadata)
            .map(|timeout| timeout.saturating_sub((timeout / 10).min(Duration::from_millis(50))));
        match caller {
            Some(caller) if caller < limit => Self {
                at: Instant::now() + caller,
                total: caller,
                from_caller: true,
            },
            _ => Self::within(limit),
        }
    }

    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// Runs `work` unless the budget runs out first; then `work` is dropped (abandoned) and the
    /// error names `step`.
    pub async fn run<T>(
        &self,
        step: &'static str,
        work: impl Future<Output = T>,
    ) -> Result<T, OrderError> {
        tokio::time::timeout_at(self.at, work)
            .await
            .map_err(|_| OrderError::Timeout {
                step,
                after: self.total,
                caller_deadline: self.from_caller,
            })
    }

    /// A request to another service carrying what is left of this budget as its deadline. A
    /// little more, in fact: the client enforces that deadline too, and our own step timeout
    /// (`run`) must be the one to fire, so the caller hears which step ran out of time.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.remaining() + Duration::from_millis(20));
        request
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earlier_deadline_binds() {
        let mut metadata = MetadataMap::new();
        metadata.insert("grpc-timeout", "200m".parse().unwrap());
        let caller = CallDeadline::for_call(&metadata, Duration::from_secs(10));
        assert!(caller.from_caller);
        assert!(caller.remaining() <= Duration::from_millis(180));
        let ours = CallDeadline::for_call(&metadata, Duration::from_millis(100));
        assert!(!ours.from_caller);
        assert!(!CallDeadline::for_call(&MetadataMap::new(), Duration::from_secs(1)).from_caller);
    }
}

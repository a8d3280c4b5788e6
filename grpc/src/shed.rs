//! Load shedding: past `--max-concurrent-requests` calls in flight, a call is refused at once
//! with RESOURCE_EXHAUSTED instead of waiting in a queue that only grows under a flash sale, so
//! callers back off and retry while the calls already admitted finish within their deadlines.
//! Health checks are never refused: a busy server is not a dead one.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::codegen::http;

use super::gate::Check;
use orderflow_telemetry::metrics::metrics;

const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

#[derive(Clone)]
pub struct Shed {
    permits: Arc<Semaphore>,
    limit: usize,
}

impl Shed {
    pub fn new(limit: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }
}

impl Check for Shed {
    /// Held until the answer's headers are out: a long stream (WatchOrder) does not keep a slot
    /// once it is established. Health checks take none.
    type Pass = Option<OwnedSemaphorePermit>;

    fn check<B>(&self, request: &mut http::Request<B>) -> Result<Self::Pass, tonic::Status> {
        if request.uri().path().starts_with(HEALTH_PREFIX) {
            return Ok(None);
        }
        match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => Ok(Some(permit)),
            Err(_) => {
                // By method in orderflow_grpc_server_handled_total{code="ResourceExhausted"}.
                metrics().rpc_shed.inc();
                Err(tonic::Status::resource_exhausted(format!(
                    "server busy: {} calls already in flight (--max-concurrent-requests); retry with backoff",
                    self.limit
                )))
            }
        }
    }
}

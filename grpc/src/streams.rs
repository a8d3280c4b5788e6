//! A cap on the server streams one process keeps open (WatchOrder, SubscribeNotifications).
//! The request limit counts a call only until its response headers are out, so without this a
//! crowd of idle watchers could hold memory, connections and change feeds without limit. Each
//! stream holds a slot from its start until it ends (finished, or dropped by a client that went
//! away); past the limit a new one is refused at once with RESOURCE_EXHAUSTED.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Clone, Debug)]
pub struct OpenStreams {
    slots: Arc<Semaphore>,
    limit: usize,
}

/// One open stream's slot; given back when dropped.
#[derive(Debug)]
pub struct StreamSlot {
    _permit: OwnedSemaphorePermit,
}

impl OpenStreams {
    pub fn new(limit: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limit.max(1))),
            limit: limit.max(1),
        }
    }

    /// A slot for a new stream, or the refusal to answer.
    pub fn open(&self) -> Result<StreamSlot, tonic::Status> {
        Arc::clone(&self.slots)
            .try_acquire_owned()
            .map(|permit| StreamSlot { _permit: permit })
            .map_err(|_| {
                tonic::Status::resource_exhausted(format!(
                    "this server already has {} streams open (--max-open-streams); retry later \
                     or on another replica",
                    self.limit
                ))
            })
    }
}

/// `stream`, holding `slot` for as long as it lives.
pub fn holding<S: Stream>(stream: S, slot: StreamSlot) -> impl Stream<Item = S::Item> {
    stream.map(move |item| {
        let _held = &slot;
        item
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_slot_is_held_while_its_stream_lives() {
        let streams = OpenStreams::new(1);
        let first = holding(
            futures::stream::iter([1, 2]),
            streams.open().expect("a slot"),
        );
        let refused = streams.open().expect_err("the only slot is taken");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("--max-open-streams"));
        assert_eq!(first.collect::<Vec<_>>().await, [1, 2]);
        assert!(
            streams.open().is_ok(),
            "the ended stream gave its slot back"
        );
    }
}

//! Notices a group that stopped consuming some of its partitions, so the member that notices can
//! leave and rejoin with a fresh member id, which makes the group coordinator rebalance.
//!
//! Why: a group coordinator can settle on an assignment in which partitions with messages
//! waiting belong to nobody alive, and keep it. Kafka evicts a member that stops heartbeating
//! after the session timeout and rebalances; tansu 0.6 does not always: a leader killed in the
//! middle of a rebalance leaves the next member to sync an empty assignment, and a member found
//! dead by another member's heartbeat leaves its partitions in the stored assignment (see
//! docs/design.md). Either way every live member's heartbeats keep succeeding, nobody rejoins, and
//! the pipeline stops until something rejoins.
//!
//! The signal, measured from any member: a partition this member does not hold that is behind
//! (committed offset below the high watermark) and whose committed offset has not moved for a
//! whole stall window while this member saw no rebalance. Its owner, if it were alive and
//! applying, would commit within the auto-commit interval; if it were dead, a working
//! coordinator would have rebalanced within the session timeout. So the window is the session
//! timeout plus the auto-commit interval. A member holding nothing because the group has more
//! members than partitions sees no such partition (every partition is owned and moves, or is
//! caught up) and stays put. What it cannot tell apart is an owner alive but unable to apply
//! (PostgreSQL down): rejoining then costs a rebalance and fixes nothing, so each rejoin that
//! leaves a partition stalled doubles the window before the next (up to [`MAX_BACKOFF`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use tokio::sync::oneshot::{self, error::TryRecvError};
use tokio::time::Instant;

use super::status::LagContext;
use crate::args::KafkaArgs;
use crate::group_offsets::{GroupReader, PartitionOffsets};
use orderflow_runtime::RuntimeError;

/// How often librdkafka commits the stored offsets (its `auto.commit.interval.ms` default,
/// which `crate::client::consumer_config` keeps).
pub const AUTO_COMMIT_INTERVAL: Duration = Duration::from_secs(5);

/// The stall window doubles at most this many times (×64).
pub const MAX_BACKOFF: u32 = 6;

/// One partition of a subscribed topic as the group sees it, and whether this member holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub offsets: PartitionOffsets,
    pub held: bool,
}

impl std::ops::Deref for Seen {
    type Target = PartitionOffsets;

    fn deref(&self) -> &PartitionOffsets {
        &self.offsets
    }
}

/// Why to rejoin: what was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stalled {
    /// How long this member has held no partition at all (`None`: it holds some).
    pub held_nothing_for: Option<Duration>,
    /// Partitions this member holds.
    pub held: usize,
    /// The stalled partitions: `topic/partition`, lag, how long the committed offset stood still.
    pub partitions: Vec<(String, i64, Duration)>,
}

impl Stalled {
    pub fn total_lag(&self) -> i64 {
        self.partitions.iter().map(|(_, lag, _)| lag).sum()
    }
}

#[derive(Debug)]
struct Watched {
    committed: i64,
    since: Instant,
}

/// The stall detector of one consume loop: fed a snapshot of the group's offsets every so often.
#[derive(Debug)]
pub struct Stalls {
    window: Duration,
    backoff: u32,
    rebalances: Option<u64>,
    watched: HashMap<(String, i32), Watched>,
    held_nothing_since: Option<Instant>,
}

impl Stalls {
    pub fn new(session_timeout: Duration) -> Self {
        Self {
            window: session_timeout + AUTO_COMMIT_INTERVAL,
            backoff: 0,
            rebalances: None,
            watched: HashMap::new(),
            held_nothing_since: None,
        }
    }

    /// How long a partition must stand still before a rejoin, now.
    pub fn window(&self) -> Duration {
        self.window * 2_u32.pow(self.backoff)
    }

    /// Takes in the offsets seen at `now`, when this member had seen `rebalances` rebalances;
    /// `Some` when the member should rejoin.
    pub fn observe(
        &mut self,
        now: Instant,
        rebalances: u64,
        partitions: &[Seen],
    ) -> Option<Stalled> {
        // A rebalance moved partitions: their new owners get a whole window.
        if self.rebalances.replace(rebalances) != Some(rebalances) {
            self.watched.clear();
        }
        let held = partitions.iter().filter(|partition| partition.held).count();
        if held == 0 {
            self.held_nothing_since.get_or_insert(now);
        } else {
            self.held_nothing_since = None;
        }
        let mut behind = HashMap::new();
        for partition in partitions.iter().filter(|p| !p.held && p.lag() > 0) {
            let key = (partition.topic.clone(), partition.partition);
            let since = match self.watched.remove(&key) {
                Some(watched) if watched.committed == partition.committed => watched.since,
                _ => now,
            };
            behind.insert(
                key,
                Watched {
                    committed: partition.committed,
                    since,
                },
            );
        }
        self.watched = behind;
        if self.watched.is_empty() {
            // Nothing behind: whatever made the rejoins pointless has passed.
            self.backoff = 0;
            return None;
        }
        let window = self.window();
        let mut stalled: Vec<(String, i64, Duration)> = partitions
            .iter()
            .filter_map(|partition| {
                let watched = self
                    .watched
                    .get(&(partition.topic.clone(), partition.partition))?;
                let still = now.duration_since(watched.since);
                (still >= window).then(|| {
                    (
                        format!("{}/{}", partition.topic, partition.partition),
                        partition.lag(),
                        still,
                    )
                })
            })
            .collect();
        if stalled.is_empty() {
            return None;
        }
        stalled.sort();
        self.backoff = (self.backoff + 1).min(MAX_BACKOFF);
        // The rejoin is a rebalance: every partition gets a new window.
        self.watched.clear();
        Some(Stalled {
            held_nothing_for: self
                .held_nothing_since
                .map(|since| now.duration_since(since)),
            held,
            partitions: stalled,
        })
    }
}

/// What a check brings back: the rebalance count it was taken at and every partition.
type Snapshot = Result<(u64, Vec<Seen>), KafkaError>;

/// Checks the group's offsets every half session timeout, off the consume loop (the broker's
/// answers take a thread of their own, see [`crate::blocking`]), through a reader that never
/// joins the group ([`GroupReader`]), and says when to rejoin.
pub(super) struct Watch {
    reader: GroupReader,
    stalls: Stalls,
    topics: Vec<String>,
    interval: Duration,
    /// Each of the check's broker requests waits at most this long.
    request_timeout: Duration,
    next_check: Instant,
    pending: Option<(Instant, oneshot::Receiver<Snapshot>)>,
    answer: Option<Snapshot>,
    failing: bool,
}

/// The requests of one check: metadata per topic, the group's offsets, both watermarks.
const CHECK_REQUESTS: u32 = 8;

impl Watch {
    pub(super) fn new(
        kafka: &KafkaArgs,
        group_id: &str,
        session_timeout: Duration,
        topics: Vec<String>,
    ) -> Result<Self, RuntimeError> {
        let interval = (session_timeout / 2).max(Duration::from_secs(1));
        Ok(Self {
            reader: GroupReader::new(kafka, group_id)?,
            stalls: Stalls::new(session_timeout),
            topics,
            interval,
            request_timeout: session_timeout.max(Duration::from_secs(1)),
            next_check: Instant::now() + interval,
            pending: None,
            answer: None,
            failing: false,
        })
    }

    pub(super) fn window(&self) -> Duration {
        self.stalls.window()
    }

    /// Resolves once a check is due or its answer is in; cancel-safe (for `select!`).
    pub(super) async fn wake(&mut self) {
        match &mut self.pending {
            Some((_, receiver)) => {
                let answer = receiver.await;
                self.pending = None;
                // A dropped sender: the check's thread panicked; the next check is due anyway.
                self.answer = answer.ok();
            }
            None => tokio::time::sleep_until(self.next_check).await,
        }
    }

    /// Takes in a check's answer if there is one (`Some`: rejoin), and starts the next check
    /// when it is due.
    pub(super) fn poll(&mut self, consumer: &Arc<StreamConsumer<LagContext>>) -> Option<Stalled> {
        let now = Instant::now();
        if let Some((started, receiver)) = &mut self.pending {
            match receiver.try_recv() {
                Ok(answer) => {
                    self.pending = None;
                    self.answer = Some(answer);
                }
                Err(TryRecvError::Empty)
                    if now.duration_since(*started) < self.request_timeout * CHECK_REQUESTS => {}
                // Still waiting for the broker (its thread ends by its own timeouts), or the
                // thread panicked: the next check starts afresh.
                Err(_) => self.pending = None,
            }
        }
        let verdict = self.answer.take().and_then(|answer| self.judge(answer));
        if self.pending.is_none() && now >= self.next_check {
            self.next_check = now + self.interval;
            let (consumer, reader) = (Arc::clone(consumer), self.reader.clone());
            let topics = self.topics.clone();
            let timeout = self.request_timeout;
            self.pending = crate::blocking::spawn("checking the group's offsets", move || {
                offsets(&consumer, &reader, &topics, timeout)
            })
            .map(|receiver| (now, receiver));
        }
        verdict
    }

    /// Forgets what was seen of the group: its member is a new one.
    pub(super) fn rejoined(&mut self) {
        self.pending = None;
        self.answer = None;
        self.next_check = Instant::now() + self.interval;
    }

    fn judge(&mut self, answer: Snapshot) -> Option<Stalled> {
        match answer {
            Ok((rebalances, partitions)) => {
                self.failing = false;
                self.stalls.observe(Instant::now(), rebalances, &partitions)
            }
            Err(error) => {
                if !self.failing {
                    tracing::warn!(%error, "cannot read the group's offsets to check for stalled partitions; retrying");
                }
                self.failing = true;
                None
            }
        }
    }
}

/// The group's committed offset and the watermarks of every partition of `topics` (read with
/// `reader`), and which of them `consumer` holds. Blocks for up to a few times `timeout`.
fn offsets(
    consumer: &StreamConsumer<LagContext>,
    reader: &GroupReader,
    topics: &[String],
    timeout: Duration,
) -> Snapshot {
    let rebalances = consumer.context().rebalances();
    let held: HashSet<(String, i32)> = consumer
        .assignment()?
        .elements()
        .iter()
        .map(|held| (held.topic().to_owned(), held.partition()))
        .collect();
    let partitions = reader
        .read(topics, timeout)?
        .into_iter()
        .map(|offsets| Seen {
            held: held.contains(&(offsets.topic.clone(), offsets.partition)),
            offsets,
        })
        .collect();
    Ok((rebalances, partitions))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: Duration = Duration::from_secs(10);
    const WINDOW: Duration = Duration::from_secs(15);

    fn partition(partition: i32, held: bool, committed: i64, high: i64) -> Seen {
        Seen {
            offsets: PartitionOffsets {
                topic: "t".into(),
                partition,
                committed,
                low_watermark: 0,
                high_watermark: high,
            },
            held,
        }
    }

    #[test]
    fn a_partition_behind_that_nobody_moves_for_a_window_means_rejoin() {
        let mut stalls = Stalls::new(SESSION);
        let start = Instant::now();
        let offsets = [partition(0, false, 5, 9), partition(1, false, 3, 3)];
        assert_eq!(stalls.observe(start, 1, &offsets), None);
        assert_eq!(
            stalls.observe(start + WINDOW - Duration::from_secs(1), 1, &offsets),
            None
        );
        let stalled = stalls
            .observe(start + WINDOW, 1, &offsets)
            .expect("stalled for a whole window");
        assert_eq!(stalled.partitions, vec![("t/0".to_owned(), 4, WINDOW)]);
        assert_eq!(stalled.held, 0);
        assert_eq!(stalled.held_nothing_for, Some(WINDOW));
        assert_eq!(stalled.total_lag(), 4);
    }

    #[test]
    fn a_member_idle_because_partitions_are_fewer_than_members_stays() {
        let mut stalls = Stalls::new(SESSION);
        let start = Instant::now();
        for step in 0..20 {
            // Every partition is owned elsewhere and moves, or is caught up.
            let committed = 100 + step * 10;
            let offsets = [
                partition(0, false, committed, committed + 50),
                partition(1, false, 7, 7),
            ];
            let at = start + Duration::from_secs(5) * u32::try_from(step).expect("small");
            assert_eq!(stalls.observe(at, 1, &offsets), None, "step {step}");
        }
    }

    #[test]
    fn partitions_this_member_holds_are_its_own_business() {
        let mut stalls = Stalls::new(SESSION);
        let start = Instant::now();
        let offsets = [partition(0, true, 5, 9)];
        assert_eq!(stalls.observe(start, 1, &offsets), None);
        assert_eq!(stalls.observe(start + WINDOW * 4, 1, &offsets), None);
    }

    #[test]
    fn a_rebalance_gives_the_new_owners_a_whole_window() {
        let mut stalls = Stalls::new(SESSION);
        let start = Instant::now();
        let offsets = [partition(0, false, 5, 9)];
        assert_eq!(stalls.observe(start, 1, &offsets), None);
        assert_eq!(stalls.observe(start + WINDOW, 2, &offsets), None);
        assert!(stalls.observe(start + WINDOW * 2, 2, &offsets).is_some());
    }

    #[test]
    fn a_member_holding_some_partitions_notices_orphaned_ones() {
        let mut stalls = Stalls::new(SESSION);
        let start = Instant::now();
        let offsets = [partition(0, true, 50, 90), partition(1, false, 5, 9)];
        assert_eq!(stalls.observe(start, 1, &offsets), None);
        let stalled = stalls
            .observe(start + WINDOW, 1, &offsets)
            .expect("stalled");
        assert_eq!(stalled.held, 1);
        assert_eq!(stalled.held_nothing_for, None);
    }

    #[test]
    fn rejoins_that_change_nothing_wait_longer_each_time() {
        let mut stalls = Stalls::new(SESSION);
        let mut now = Instant::now();
        let offsets = [partition(0, false, 5, 9)];
        for backoff in 0..8 {
            let window = WINDOW * 2_u32.pow(backoff.min(MAX_BACKOFF));
            assert_eq!(stalls.window(), window);
            assert_eq!(stalls.observe(now, backoff.into(), &offsets), None);
            now += window;
            assert!(stalls.observe(now, backoff.into(), &offsets).is_some());
        }
        // Once nothing is behind, the next stall gets the first window again.
        assert_eq!(stalls.observe(now, 99, &[partition(0, false, 9, 9)]), None);
        assert_eq!(stalls.window(), WINDOW);
    }

    #[test]
    fn a_partition_never_committed_counts_from_its_first_message() {
        let mut stalls = Stalls::new(SESSION);
        let start = Instant::now();
        let mut never = partition(0, false, 0, 10);
        never.offsets.committed = -1001;
        never.offsets.low_watermark = 4;
        assert_eq!(stalls.observe(start, 1, std::slice::from_ref(&never)), None);
        let stalled = stalls
            .observe(start + WINDOW, 1, &[never])
            .expect("stalled");
        assert_eq!(stalled.total_lag(), 6);
    }
}

//! The SKUs inventory-svc recently reported short, remembered for a moment so that in a flash
//! sale the buyers after the last unit are answered by order-api alone: their placement claims
//! its key, finds the memo, frees the key and answers the refusal inventory-svc would give,
//! without a call to inventory-svc (`--sold-out-memo-ms`).
//!
//! Only refusals are remembered and only for fresh placements (never for an order that may
//! already exist), so the memo can make a buyer wait for stock that came back — for at most its
//! lifetime — but never sells a unit or answers a placed order wrongly.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use orderflow_proto::refusals::Shortage;

/// Above this many remembered SKUs, the expired ones are dropped when another is added.
const PRUNE_ABOVE: usize = 4_096;

pub struct SoldOutMemo {
    lifetime: Duration,
    /// SKU → units available when inventory-svc refused it, and when it said so.
    short: Mutex<HashMap<String, (i64, Instant)>>,
}

impl SoldOutMemo {
    /// A zero `lifetime` remembers nothing: every placement asks inventory-svc.
    pub fn new(lifetime: Duration) -> Self {
        Self {
            lifetime,
            short: Mutex::new(HashMap::new()),
        }
    }

    /// Remembers what inventory-svc answered at `now`.
    pub fn remember(&self, shortage: &Shortage, now: Instant) {
        if self.lifetime.is_zero() {
            return;
        }
        let mut short = self.lock();
        if short.len() >= PRUNE_ABOVE {
            short.retain(|_, (_, seen)| now.duration_since(*seen) < self.lifetime);
        }
        short.insert(shortage.sku.clone(), (shortage.available, now));
    }

    /// Forgets `skus`: inventory-svc just reserved units of them, so they are not sold out.
    pub fn forget<'a>(&self, skus: impl IntoIterator<Item = &'a str>) {
        let mut short = self.lock();
        if short.is_empty() {
            return;
        }
        for sku in skus {
            short.remove(sku);
        }
    }

    /// The first line (SKU, quantity) that inventory-svc reported too short for, within the
    /// memo's lifetime before `now`.
    pub fn shortage<'a>(
        &self,
        lines: impl IntoIterator<Item = (&'a str, i64)>,
        now: Instant,
    ) -> Option<Shortage> {
        let short = self.lock();
        if short.is_empty() {
            return None;
        }
        lines.into_iter().find_map(|(sku, requested)| {
            let (available, seen) = short.get(sku)?;
            let fresh = now.saturating_duration_since(*seen) < self.lifetime;
            (fresh && requested > *available).then(|| Shortage {
                sku: sku.to_owned(),
                requested,
                available: *available,
            })
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (i64, Instant)>> {
        // A panic while holding the lock leaves a map that is still consistent.
        self.short
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shortage(sku: &str, available: i64) -> Shortage {
        Shortage {
            sku: sku.into(),
            requested: available + 1,
            available,
        }
    }

    #[test]
    fn a_sold_out_sku_is_refused_until_the_memo_expires() {
        let memo = SoldOutMemo::new(Duration::from_millis(200));
        let t0 = Instant::now();
        memo.remember(&shortage("A", 0), t0);
        let refused = memo.shortage([("B", 1), ("A", 1)], t0 + Duration::from_millis(199));
        assert_eq!(
            refused,
            Some(Shortage {
                sku: "A".into(),
                requested: 1,
                available: 0
            })
        );
        assert_eq!(
            memo.shortage([("A", 1)], t0 + Duration::from_millis(200)),
            None
        );
    }

    #[test]
    fn only_requests_above_what_was_available_are_refused() {
        let memo = SoldOutMemo::new(Duration::from_secs(1));
        let t0 = Instant::now();
        memo.remember(&shortage("A", 3), t0);
        assert_eq!(memo.shortage([("A", 3)], t0), None);
        assert_eq!(memo.shortage([("A", 4)], t0).map(|s| s.available), Some(3));
    }

    #[test]
    fn a_reservation_makes_the_memo_forget_its_skus() {
        let memo = SoldOutMemo::new(Duration::from_secs(1));
        let t0 = Instant::now();
        memo.remember(&shortage("A", 0), t0);
        memo.forget(["A"]);
        assert_eq!(memo.shortage([("A", 1)], t0), None);
    }

    #[test]
    fn a_zero_lifetime_remembers_nothing() {
        let memo = SoldOutMemo::new(Duration::ZERO);
        let t0 = Instant::now();
        memo.remember(&shortage("A", 0), t0);
        assert_eq!(memo.shortage([("A", 1)], t0), None);
    }

    #[test]
    fn expired_entries_are_dropped_once_the_memo_is_large() {
        let memo = SoldOutMemo::new(Duration::from_millis(10));
        let t0 = Instant::now();
        for i in 0..PRUNE_ABOVE {
            memo.remember(&shortage(&format!("old-{i}"), 0), t0);
        }
        memo.remember(&shortage("new", 0), t0 + Duration::from_secs(1));
        assert_eq!(memo.lock().len(), 1);
    }
}

//! Inventory changes that write both PostgreSQL and Redis with absolute values (an operator
//! setting stock, rebuilding counters Redis lost) run under the SKU's distributed lock, so two
//! of them never interleave, and carry the lock's fencing token, so a holder that was paused
//! past its lease cannot overwrite what a newer holder wrote. Per-order reservations do not
//! take the lock: one Lua script is atomic on its own and much faster (see docs/inventory.md).

use orderflow_lock::{LockGuard, Locks};

use crate::counters::Counters;
use crate::error::InventoryError;
use crate::ledger::Ledger;
use crate::stock::SkuRow;
use crate::stock::StockLevel;

#[derive(Clone)]
pub struct Guarded {
    locks: Locks,
    ledger: Ledger,
    counters: Counters,
}

fn resource(sku: &str) -> String {
    format!("stock:{sku}")
}

impl Guarded {
    pub fn new(locks: Locks, ledger: Ledger, counters: Counters) -> Self {
        Self {
            locks,
            ledger,
            counters,
        }
    }

    /// Takes `sku`'s lock. Its fencing token is above the last one PostgreSQL accepted for the
    /// SKU (0 for a new SKU), even if Redis lost the token counter.
    async fn lock(&self, sku: &str) -> Result<LockGuard, InventoryError> {
        let fence_floor = self.ledger.sku(sku).await?.map_or(0, |row| row.fence);
        Ok(self.locks.acquire(&resource(sku), fence_floor).await?)
    }

    /// Sets `available` and the price in PostgreSQL, then moves Redis's `available` by the
    /// same difference, then commits: if Redis fails, PostgreSQL is rolled back; if the commit
    /// fails, Redis's counters are dropped and rebuilt from PostgreSQL on next use.
    pub async fn set_stock(
        &self,
        sku: &str,
        available: i64,
        price_cents: i64,
    ) -> Result<SkuRow, InventoryError> {
        let guard = self.lock(sku).await?;
        let change = self
            .ledger
            .set_stock(sku, available, price_cents, guard.fence())
            .await?;
        self.counters
            .set_stock(change.available_delta, &change.row, guard.fence())
            .await?;
        let row = change.row.clone();
        if let Err(error) = change.commit().await {
            // Redis already moved and PostgreSQL did not: drop the counters so the next use
            // rebuilds them from PostgreSQL, the truth.
            let dropped = self.counters.forget(sku).await;
            tracing::error!(%sku, %error, drop_counters = ?dropped.err(), "stock change not committed");
            return Err(error);
        }
        release(guard, sku).await;
        Ok(row)
    }

    /// Recreates `sku`'s counters from PostgreSQL if Redis lost them; `None` if PostgreSQL does
    /// not know the SKU either. Concurrent callers wait for the lock and find them restored.
    pub async fn restore(&self, sku: &str) -> Result<Option<()>, InventoryError> {
        let guard = self.lock(sku).await?;
        let Some(row) = self.ledger.sku(sku).await? else {
            return Ok(None);
        };
        if self.counters.restore(&row, guard.fence()).await? {
            tracing::warn!(
                %sku,
                available = row.level.available,
                reserved = row.level.reserved,
                sold = row.level.sold,
                "Redis had lost the stock counters; rebuilt them from PostgreSQL"
            );
        }
        release(guard, sku).await;
        Ok(Some(()))
    }
}

/// What a reconciliation found and left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// Redis's counters before; `None` if it had none.
    pub before: Option<StockLevel>,
    pub after: StockLevel,
    /// Units of admissions PostgreSQL had not recorded yet, counted as reserved.
    pub in_flight: i64,
}

impl Guarded {
    /// Recomputes `sku`'s Redis counters from PostgreSQL, exactly: under the SKU's lock, with
    /// its PostgreSQL row locked (so nothing for this SKU commits meanwhile), Redis's counters
    /// become PostgreSQL's plus the units Redis admitted that PostgreSQL has not recorded yet.
    /// `None` if PostgreSQL does not know the SKU.
    pub async fn reconcile(&self, sku: &str) -> Result<Option<Reconciled>, InventoryError> {
        let guard = self.lock(sku).await?;
        let Some(locked) = self.ledger.lock_sku(sku).await? else {
            return Ok(None);
        };
        let recorded = self
            .ledger
            .recorded(&self.counters.unrecorded().await?)
            .await?;
        let (before, in_flight) = self
            .counters
            .reconcile(&locked.row, guard.fence(), &recorded)
            .await?;
        let mut after = locked.row.level.clone();
        after.available -= in_flight;
        after.reserved += in_flight;
        // Unlocks the row (nothing was written in PostgreSQL).
        drop(locked);
        release(guard, sku).await;
        Ok(Some(Reconciled {
            before,
            after,
            in_flight,
        }))
    }
}

/// Frees the lock once the work is done. Failing to (Redis lost the lock key, or the lease ran
/// out) does not undo the work: it was fenced, and the lock expires by itself.
async fn release(guard: LockGuard, sku: &str) {
    if let Err(error) = guard.release().await {
        tracing::warn!(%sku, %error, "could not release the stock lock");
    }
}

//! The durable inventory in PostgreSQL: per SKU its available, reserved and sold units, price
//! and last fencing token; per order its reservation. It is the truth Redis counters are
//! rebuilt from, and the last line of defence: every statement that moves units runs with the
//! SKU rows locked (always in SKU order, so transactions never deadlock) and CHECK constraints
//! forbid any counter below zero.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use sqlx::{PgPool, Postgres, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::admission::{self, Decision};
use crate::error::InventoryError;
use crate::stock::{
    self, Movement, ReservationState, ReservedLine, SettleStep, Settlement, SkuRow, StockDelta,
    StockLevel,
};

/// A reservation Redis admitted, to be recorded.
#[derive(Debug, Clone)]
pub struct Admission {
    pub order_id: Uuid,
    pub lines: Vec<ReservedLine>,
    /// How long it is held for its placement unless an order confirms it: `expires_at` is
    /// PostgreSQL's `now()` plus this when it is recorded (one clock for every comparison).
    pub hold: Duration,
}

/// A reservation as PostgreSQL holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableReservation {
    pub state: ReservationState,
    pub lines: Vec<ReservedLine>,
    pub expires_at: OffsetDateTime,
    /// An order that exists confirmed it: it never expires, its order settles it.
    pub confirmed: bool,
}

/// What recording one admission came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Held until `expires_at` unless an order confirms it.
    Accepted { expires_at: OffsetDateTime },
    /// The order already had a reservation (renewed for this placement if still unconfirmed);
    /// it is answered as it is.
    Existing(DurableReservation),
    /// Line `line` did not fit the `available` units PostgreSQL had; nothing was taken.
    Refused { line: usize, available: i64 },
}

/// What settling (releasing or committing) a reservation came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// This call moved the units.
    Applied(DurableReservation),
    /// An earlier call already did.
    AlreadyDone(DurableReservation),
    /// The reservation is in a state it cannot leave that way (e.g. release after commit).
    Refused(DurableReservation),
    NotFound,
}

/// A stock change made under a SKU's lock, not yet committed: the caller updates Redis by
/// `available_delta` and then commits, or drops it to roll back.
pub struct StockChange {
    tx: Transaction<'static, Postgres>,
    /// Units added to (or, if negative, removed from) `available`.
    pub available_delta: i64,
    pub row: SkuRow,
}

impl StockChange {
    pub async fn commit(self) -> Result<(), InventoryError> {
        Ok(self.tx.commit().await?)
    }
}

/// A SKU row locked for as long as this lives (its transaction rolls back when dropped).
pub struct LockedSku {
    _tx: Transaction<'static, Postgres>,
    pub row: SkuRow,
}

const SKU_COLUMNS: &str = "available, reserved, sold, price_cents, fence";

#[derive(Clone)]
pub struct Ledger {
    pool: PgPool,
}

impl Ledger {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Records a batch of admissions in one transaction: every reservation that fits is taken
    /// (one multi-row update per statement, whatever the batch size), the others are refused
    /// and logged in `stock_refusals`. The answers are in the batch's order.
    pub async fn record(&self, batch: &[Admission]) -> Result<Vec<Recorded>, InventoryError> {
        let mut tx = self.pool.begin().await?;
        let now = transaction_time(&mut tx).await?;
        let skus: Vec<String> = batch
            .iter()
            .flat_map(|admission| admission.lines.iter().map(|line| line.sku.clone()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut available = lock_skus(&mut tx, &skus).await?;
        let order_ids: Vec<Uuid> = batch.iter().map(|admission| admission.order_id).collect();
        // Retries PostgreSQL already has are rare: look them up by key, load only those.
        let recorded = recorded_ids(&mut tx, &order_ids).await?;
        let mut existing = HashMap::new();
        if !recorded.is_empty() {
            // A retried placement may still publish its order: hold the stock for it as long.
            let retried: Vec<(Uuid, OffsetDateTime)> = batch
                .iter()
                .filter(|admission| recorded.contains(&admission.order_id))
                .map(|admission| (admission.order_id, now + admission.hold))
                .collect();
            renew(&mut tx, &retried).await?;
            existing = load_reservations(&mut tx, &recorded).await?;
        }
        let recorded_ids: HashSet<Uuid> = recorded.into_iter().collect();
        let decisions = admission::decide(
            &mut available,
            &recorded_ids,
            batch
                .iter()
                .map(|admission| (admission.order_id, admission.lines.as_slice())),
        );

        let accepted: Vec<&Admission> = batch
            .iter()
            .zip(&decisions)
            .filter(|(_, decision)| **decision == Decision::Accept)
            .map(|(admission, _)| admission)
            .collect();
        insert_reservations(&mut tx, now, &accepted).await?;
        apply_deltas(
            &mut tx,
            &stock::stock_deltas(
                Movement::Reserve,
                accepted
                    .iter()
                    .flat_map(|a| a.lines.iter().map(|l| (l.sku.as_str(), l.quantity))),
            ),
        )
        .await?;
        let refusals: Vec<(&Admission, usize, i64)> = batch
            .iter()
            .zip(&decisions)
            .filter_map(|(admission, decision)| match decision {
                Decision::Refuse { line, available } => Some((admission, *line, *available)),
                _ => None,
            })
            .collect();
        insert_refusals(&mut tx, &refusals).await?;
        tx.commit().await?;

        Ok(batch
            .iter()
            .zip(decisions)
            .map(|(admission, decision)| match decision {
                Decision::Accept => Recorded::Accepted {
                    expires_at: now + admission.hold,
                },
                Decision::Refuse { line, available } => Recorded::Refused { line, available },
                Decision::Existing => match existing.get(&admission.order_id) {
                    Some(reservation) => Recorded::Existing(reservation.clone()),
                    // Accepted earlier in this very batch (two admissions of one order).
                    None => Recorded::Existing(DurableReservation {
                        state: ReservationState::Reserved,
                        lines: admission.lines.clone(),
                        expires_at: now + admission.hold,
                        confirmed: false,
                    }),
                },
            })
            .collect())
    }

    pub async fn reservation(
        &self,
        order_id: Uuid,
    ) -> Result<Option<DurableReservation>, InventoryError> {
        let mut connection = self.pool.acquire().await?;
        Ok(load_reservations(&mut connection, &[order_id])
            .await?
            .remove(&order_id))
    }

    /// Releases or commits a reservation: checks the state machine with the reservation row
    /// locked, then moves the units, in one transaction.
    pub async fn settle(
        &self,
        order_id: Uuid,
        settlement: Settlement,
        reason: &str,
    ) -> Result<Settled, InventoryError> {
        let mut tx = self.pool.begin().await?;
        let locked: Option<String> =
            sqlx::query_scalar("SELECT state FROM reservations WHERE order_id = $1 FOR UPDATE")
                .bind(order_id)
                .fetch_optional(&mut *tx)
                .await?;
        if locked.is_none() {
            return Ok(Settled::NotFound);
        }
        let Some(mut reservation) = load_reservations(&mut tx, &[order_id])
            .await?
            .remove(&order_id)
        else {
            return Ok(Settled::NotFound);
        };
        match stock::settle_step(reservation.state, settlement) {
            SettleStep::AlreadyDone => return Ok(Settled::AlreadyDone(reservation)),
            SettleStep::Refuse => return Ok(Settled::Refused(reservation)),
            SettleStep::Apply => {}
        }
        let deltas = stock::stock_deltas(
            Movement::Settle(settlement),
            reservation
                .lines
                .iter()
                .map(|l| (l.sku.as_str(), l.quantity)),
        );
        let skus: Vec<String> = deltas.iter().map(|d| d.sku.clone()).collect();
        lock_skus(&mut tx, &skus).await?;
        apply_deltas(&mut tx, &deltas).await?;
        set_state(&mut tx, &[order_id], settlement, reason).await?;
        tx.commit().await?;
        reservation.state = settlement.target();
        Ok(Settled::Applied(reservation))
    }

    /// A retried placement of `order_id` may still publish its order: holds its reservation, if
    /// no order has confirmed it yet, until `hold` from now. Answers the reservation as it is
    /// (released already: the placement must not go on with it).
    pub async fn renew(
        &self,
        order_id: Uuid,
        hold: Duration,
    ) -> Result<Option<DurableReservation>, InventoryError> {
        let mut tx = self.pool.begin().await?;
        let now = transaction_time(&mut tx).await?;
        renew(&mut tx, &[(order_id, now + hold)]).await?;
        let reservation = load_reservations(&mut tx, &[order_id])
            .await?
            .remove(&order_id);
        tx.commit().await?;
        Ok(reservation)
    }

    /// Confirms the reservations of orders that exist: from now on only their orders settle
    /// them. Answers each in its current state (one already released stays released: its
    /// order arrived after its stock was given back). The row lock orders this against the
    /// orphan sweep: whichever commits first decides.
    pub async fn confirm_orders(
        &self,
        order_ids: &[Uuid],
    ) -> Result<HashMap<Uuid, DurableReservation>, InventoryError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE reservations SET confirmed_at = now(), updated_at = now() \
             WHERE order_id = ANY($1) AND state = 'reserved' AND confirmed_at IS NULL",
        )
        .bind(order_ids)
        .execute(&mut *tx)
        .await?;
        let reservations = load_reservations(&mut tx, order_ids).await?;
        tx.commit().await?;
        Ok(reservations)
    }

    /// PostgreSQL's time now, if some reservation held for a placement that no order confirmed
    /// was due by then (the orphan sweep's first, cheap question).
    pub async fn orphans_due(&self) -> Result<Option<OffsetDateTime>, InventoryError> {
        let (now, due): (OffsetDateTime, bool) = sqlx::query_as(
            "SELECT now(), EXISTS (SELECT 1 FROM reservations \
               WHERE state = 'reserved' AND confirmed_at IS NULL AND expires_at <= now())",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(due.then_some(now))
    }

    /// Releases up to `limit` reservations that no order confirmed and whose placement ended
    /// by `cutoff`, in one transaction, and returns them. The caller has made sure the order
    /// log holds no order for any of them (see `sweeper`). Replicas sweeping at once each take
    /// different rows (`SKIP LOCKED`).
    pub async fn release_orphans(
        &self,
        cutoff: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<(Uuid, DurableReservation)>, InventoryError> {
        let mut tx = self.pool.begin().await?;
        let due: Vec<Uuid> = sqlx::query_scalar(
            "SELECT order_id FROM reservations \
             WHERE state = 'reserved' AND confirmed_at IS NULL AND expires_at <= $1 \
             ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(cutoff)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let reservations = load_reservations(&mut tx, &due).await?;
        let deltas = stock::stock_deltas(
            Movement::Settle(Settlement::Release),
            reservations
                .values()
                .flat_map(|r| r.lines.iter().map(|l| (l.sku.as_str(), l.quantity))),
        );
        let skus: Vec<String> = deltas.iter().map(|d| d.sku.clone()).collect();
        lock_skus(&mut tx, &skus).await?;
        apply_deltas(&mut tx, &deltas).await?;
        set_state(&mut tx, &due, Settlement::Release, ORPHANED).await?;
        tx.commit().await?;
        Ok(reservations
            .into_iter()
            .map(|(order_id, mut reservation)| {
                reservation.state = ReservationState::Released;
                (order_id, reservation)
            })
            .collect())
    }

    pub async fn sku(&self, sku: &str) -> Result<Option<SkuRow>, InventoryError> {
        let row: Option<(i64, i64, i64, i64, i64)> =
            sqlx::query_as(&format!("SELECT {SKU_COLUMNS} FROM skus WHERE sku = $1"))
                .bind(sku)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|row| sku_row(sku, row)))
    }

    /// Reads a SKU's row and keeps it locked (`FOR UPDATE`) until the result is dropped: no
    /// reservation batch, release or commit of this SKU can commit meanwhile.
    pub async fn lock_sku(&self, sku: &str) -> Result<Option<LockedSku>, InventoryError> {
        let mut tx = self.pool.begin().await?;
        let row: Option<(i64, i64, i64, i64, i64)> = sqlx::query_as(&format!(
            "SELECT {SKU_COLUMNS} FROM skus WHERE sku = $1 FOR UPDATE"
        ))
        .bind(sku)
        .fetch_optional(&mut *tx)
        .await?;
        Ok(row.map(|row| LockedSku {
            _tx: tx,
            row: sku_row(sku, row),
        }))
    }

    /// Those of `order_ids` that PostgreSQL has a reservation for.
    pub async fn recorded(&self, order_ids: &[String]) -> Result<Vec<String>, InventoryError> {
        let ids: Vec<Uuid> = order_ids
            .iter()
            .filter_map(|id| Uuid::parse_str(id).ok())
            .collect();
        let mut connection = self.pool.acquire().await?;
        let recorded = recorded_ids(&mut connection, &ids).await?;
        Ok(recorded.iter().map(Uuid::to_string).collect())
    }

    /// Those of `skus` that exist.
    pub async fn existing(&self, skus: &[String]) -> Result<Vec<String>, InventoryError> {
        Ok(
            sqlx::query_scalar("SELECT sku FROM skus WHERE sku = ANY($1)")
                .bind(skus)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Sets a SKU's available units and price (creating it if new) under fencing token `fence`;
    /// refuses with `Fenced` if a write with a token at least as new was accepted already. The
    /// row stays locked until the returned change is committed or dropped.
    pub async fn set_stock(
        &self,
        sku: &str,
        available: i64,
        price_cents: i64,
        fence: i64,
    ) -> Result<StockChange, InventoryError> {
        let mut tx = self.pool.begin().await?;
        let before: Option<(i64, i64)> =
            sqlx::query_as("SELECT available, fence FROM skus WHERE sku = $1 FOR UPDATE")
                .bind(sku)
                .fetch_optional(&mut *tx)
                .await?;
        // Strictly newer: each acquisition writes a SKU row once, so an equal token can only
        // come from a second holder (the token counter restarted with a Redis that lost its data).
        if before.is_some_and(|(_, accepted)| accepted >= fence) {
            return Err(InventoryError::Fenced {
                sku: sku.to_owned(),
                token: fence,
            });
        }
        let row: (i64, i64, i64, i64, i64) = sqlx::query_as(
            "INSERT INTO skus (sku, available, price_cents, fence) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (sku) DO UPDATE SET available = EXCLUDED.available, \
             price_cents = EXCLUDED.price_cents, fence = EXCLUDED.fence, updated_at = now() \
             RETURNING available, reserved, sold, price_cents, fence",
        )
        .bind(sku)
        .bind(available)
        .bind(price_cents)
        .bind(fence)
        .fetch_one(&mut *tx)
        .await?;
        Ok(StockChange {
            tx,
            available_delta: available - before.map_or(0, |(old, _)| old),
            row: sku_row(sku, row),
        })
    }
}

fn sku_row(
    sku: &str,
    (available, reserved, sold, price_cents, fence): (i64, i64, i64, i64, i64),
) -> SkuRow {
    SkuRow {
        level: StockLevel {
            sku: sku.to_owned(),
            available,
            reserved,
            sold,
            price_cents,
        },
        fence,
    }
}

/// Locks the rows of `skus` (sorted) for this transaction; returns what each has available.
async fn lock_skus(
    tx: &mut Transaction<'static, Postgres>,
    skus: &[String],
) -> Result<HashMap<String, i64>, InventoryError> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT sku, available FROM skus WHERE sku = ANY($1) ORDER BY sku FOR UPDATE",
    )
    .bind(skus)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().collect())
}

async fn apply_deltas(
    tx: &mut Transaction<'static, Postgres>,
    deltas: &[StockDelta],
) -> Result<(), InventoryError> {
    if deltas.is_empty() {
        return Ok(());
    }
    let column = |pick: fn(&StockDelta) -> i64| deltas.iter().map(pick).collect::<Vec<i64>>();
    sqlx::query(
        "UPDATE skus SET available = skus.available + d.available, \
         reserved = skus.reserved + d.reserved, sold = skus.sold + d.sold, updated_at = now() \
         FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::int8[]) \
              AS d(sku, available, reserved, sold) \
         WHERE skus.sku = d.sku",
    )
    .bind(deltas.iter().map(|d| d.sku.clone()).collect::<Vec<_>>())
    .bind(column(|d| d.available))
    .bind(column(|d| d.reserved))
    .bind(column(|d| d.sold))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_reservations(
    tx: &mut Transaction<'static, Postgres>,
    now: OffsetDateTime,
    accepted: &[&Admission],
) -> Result<(), InventoryError> {
    if accepted.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO reservations (order_id, state, expires_at) \
         SELECT order_id, 'reserved', expires_at FROM UNNEST($1::uuid[], $2::timestamptz[]) \
              AS r(order_id, expires_at)",
    )
    .bind(accepted.iter().map(|a| a.order_id).collect::<Vec<_>>())
    .bind(accepted.iter().map(|a| now + a.hold).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    let lines: Vec<(Uuid, &ReservedLine)> = accepted
        .iter()
        .flat_map(|a| a.lines.iter().map(|line| (a.order_id, line)))
        .collect();
    sqlx::query(
        "INSERT INTO reservation_items (order_id, sku, quantity, unit_price_cents) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::int8[])",
    )
    .bind(lines.iter().map(|(id, _)| *id).collect::<Vec<_>>())
    .bind(lines.iter().map(|(_, l)| l.sku.clone()).collect::<Vec<_>>())
    .bind(lines.iter().map(|(_, l)| l.quantity).collect::<Vec<_>>())
    .bind(
        lines
            .iter()
            .map(|(_, l)| l.unit_price_cents)
            .collect::<Vec<_>>(),
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_refusals(
    tx: &mut Transaction<'static, Postgres>,
    refusals: &[(&Admission, usize, i64)],
) -> Result<(), InventoryError> {
    if refusals.is_empty() {
        return Ok(());
    }
    fn line<'a>((admission, index, _): &(&'a Admission, usize, i64)) -> &'a ReservedLine {
        &admission.lines[*index]
    }
    sqlx::query(
        "INSERT INTO stock_refusals (order_id, sku, requested, available) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::int8[])",
    )
    .bind(refusals.iter().map(|r| r.0.order_id).collect::<Vec<_>>())
    .bind(
        refusals
            .iter()
            .map(|r| line(r).sku.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        refusals
            .iter()
            .map(|r| line(r).quantity)
            .collect::<Vec<_>>(),
    )
    .bind(refusals.iter().map(|r| r.2).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    for refusal in refusals {
        tracing::warn!(
            order_id = %refusal.0.order_id,
            sku = %line(refusal).sku,
            requested = line(refusal).quantity,
            available = refusal.2,
            "PostgreSQL refused a reservation Redis admitted: Redis counters ran ahead"
        );
    }
    Ok(())
}

async fn set_state(
    tx: &mut Transaction<'static, Postgres>,
    order_ids: &[Uuid],
    settlement: Settlement,
    reason: &str,
) -> Result<(), InventoryError> {
    let reason = (settlement == Settlement::Release).then_some(reason);
    sqlx::query(
        "UPDATE reservations SET state = $2, release_reason = $3, updated_at = now() \
         WHERE order_id = ANY($1)",
    )
    .bind(order_ids)
    .bind(settlement.target().as_str())
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The release reason of a reservation no order confirmed: its placement failed or its process
/// died, and no order for it exists.
pub const ORPHANED: &str = "orphaned: no order confirmed it";

/// The transaction's time (`now()` stays the same for the whole transaction), so every
/// deadline inventory-svc stores is on PostgreSQL's clock, as is the sweep comparing with it.
async fn transaction_time(
    tx: &mut Transaction<'static, Postgres>,
) -> Result<OffsetDateTime, InventoryError> {
    Ok(sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut **tx)
        .await?)
}

/// Holds still-unconfirmed reservations until at least the given times.
async fn renew(
    tx: &mut Transaction<'static, Postgres>,
    holds: &[(Uuid, OffsetDateTime)],
) -> Result<(), InventoryError> {
    sqlx::query(
        "UPDATE reservations SET expires_at = greatest(expires_at, h.until), updated_at = now() \
         FROM UNNEST($1::uuid[], $2::timestamptz[]) AS h(order_id, until) \
         WHERE reservations.order_id = h.order_id \
           AND state = 'reserved' AND confirmed_at IS NULL",
    )
    .bind(holds.iter().map(|(id, _)| *id).collect::<Vec<_>>())
    .bind(holds.iter().map(|(_, until)| *until).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Those of `order_ids` that have a reservation: a primary-key lookup only.
async fn recorded_ids(
    connection: &mut sqlx::PgConnection,
    order_ids: &[Uuid],
) -> Result<Vec<Uuid>, InventoryError> {
    Ok(
        sqlx::query_scalar("SELECT order_id FROM reservations WHERE order_id = ANY($1)")
            .bind(order_ids)
            .fetch_all(connection)
            .await?,
    )
}

async fn load_reservations(
    connection: &mut sqlx::PgConnection,
    order_ids: &[Uuid],
) -> Result<HashMap<Uuid, DurableReservation>, InventoryError> {
    // The filter is on both sides of the join so the planner uses both primary keys instead of
    // scanning every reservation's items.
    type Row = (Uuid, String, OffsetDateTime, bool, String, i64, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT r.order_id, r.state, r.expires_at, r.confirmed_at IS NOT NULL, \
                i.sku, i.quantity, i.unit_price_cents \
         FROM reservations r JOIN reservation_items i USING (order_id) \
         WHERE r.order_id = ANY($1) AND i.order_id = ANY($1) ORDER BY r.order_id, i.sku",
    )
    .bind(order_ids)
    .fetch_all(connection)
    .await?;
    let mut reservations: HashMap<Uuid, DurableReservation> = HashMap::new();
    for (order_id, state, expires_at, confirmed, sku, quantity, unit_price_cents) in rows {
        let state = ReservationState::parse(&state)
            .ok_or_else(|| InventoryError::Corrupt(format!("reservation state {state:?}")))?;
        reservations
            .entry(order_id)
            .or_insert_with(|| DurableReservation {
                state,
                lines: Vec::new(),
                expires_at,
                confirmed,
            })
            .lines
            .push(ReservedLine {
                sku,
                quantity,
                unit_price_cents,
            });
    }
    Ok(reservations)
}

//! Applies a batch of events to PostgreSQL in one transaction, each exactly once: the event ids
//! are recorded first (`processed_events`), and only the events whose id was not there yet take
//! effect, in the same transaction. Multi-row statements keep a batch of hundreds of events to a
//! handful of round trips.
//!
//! Effects, in this order within the transaction:
//! 1. `order-created`: the order's rows (shared with order-api, `order_rows`); `CANCELLED` on
//!    arrival if its stock is no longer held (see `event::arrival_cancel`).
//! 2. Status changes of orders now present: the order row takes the snapshot with the highest
//!    version (a lower one changes nothing), and each event adds its version's history row.
//!    order-api writes both itself when it decides a change, so in normal operation these are
//!    confirmations that change nothing.
//! 3. Status changes of orders not recorded yet wait in `parked_events`; step 1 takes them back
//!    when the order arrives.
//!
//! Stock is not moved here: order-api records the stock to commit or release in the status
//! change's own transaction (`stock_settlements`) and inventory-svc, the only writer of stock
//! counters (under its locks and fencing tokens), carries it out.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use orderflow_runtime::consume::{BatchError, BatchHandler, Received, Rejected};
use orderflow_runtime::order_rows::{self, NewOrder};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::event::{self, Change, OrderEvent, STOCK_NOT_HELD};
use tracing::Instrument;

pub struct Applier {
    pub pool: PgPool,
}

/// One decoded event of the batch, with what parking it would need.
struct Incoming<'a> {
    topic: &'static str,
    payload: &'a [u8],
    event: OrderEvent,
}

impl BatchHandler for Applier {
    async fn apply(&self, batch: &[Received]) -> Result<Vec<Rejected>, BatchError> {
        let mut rejected = Vec::new();
        let mut incoming = Vec::with_capacity(batch.len());
        for (index, message) in batch.iter().enumerate() {
            let header = message
                .headers
                .iter()
                .find(|(key, _)| key == orderflow_proto::topics::EVENT_TYPE_HEADER)
                .and_then(|(_, value)| value.as_deref());
            match event::decode(message.topic, &message.payload, header) {
                Ok(event) => incoming.push(Incoming {
                    topic: message.topic,
                    payload: &message.payload,
                    event,
                }),
                Err(reason) => rejected.push(Rejected { index, reason }),
            }
        }
        if !incoming.is_empty() {
            apply(&self.pool, &incoming)
                .instrument(orderflow_runtime::postgres::span("TRANSACTION", "orders"))
                .await?;
        }
        Ok(rejected)
    }
}

async fn apply(pool: &PgPool, incoming: &[Incoming<'_>]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let fresh = record_event_ids(&mut tx, incoming).await?;
    let mut seen = HashSet::new();
    let fresh: Vec<&Incoming<'_>> = incoming
        .iter()
        .filter(|one| fresh.contains(&one.event.event_id()) && seen.insert(one.event.event_id()))
        .collect();

    let mut changes: Vec<(Change, &'static str, Cow<'_, [u8]>)> = Vec::new();
    let mut created = Vec::new();
    for one in &fresh {
        match &one.event {
            OrderEvent::Created { row, .. } => created.push(row),
            OrderEvent::Changed(change) => {
                changes.push((change.clone(), one.topic, Cow::Borrowed(one.payload)));
            }
        }
    }
    if !created.is_empty() {
        insert_orders(&mut tx, &created).await?;
        let ids: Vec<Uuid> = created.iter().map(|row| row.order_id).collect();
        changes.extend(unpark(&mut tx, &ids).await?);
    }
    if !changes.is_empty() {
        apply_changes(&mut tx, &changes).await?;
    }
    tx.commit().await
}

/// Records the batch's event ids; returns those recorded now (the others were applied before).
async fn record_event_ids(
    conn: &mut PgConnection,
    incoming: &[Incoming<'_>],
) -> Result<HashSet<Uuid>, sqlx::Error> {
    // In id order, so concurrent batches (a rebalance replaying to a new owner) lock alike.
    let mut rows: Vec<(Uuid, &str, Uuid)> = incoming
        .iter()
        .map(|one| (one.event.event_id(), one.topic, one.event.order_id()))
        .collect();
    rows.sort_unstable();
    let (event_ids, topics, order_ids): (Vec<Uuid>, Vec<&str>, Vec<Uuid>) = unzip3(rows);
    let recorded: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO processed_events (event_id, topic, order_id) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::uuid[]) \
         ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
    )
    .bind(&event_ids)
    .bind(&topics)
    .bind(&order_ids)
    .fetch_all(conn)
    .await?;
    Ok(recorded.into_iter().collect())
}

fn unzip3<A, B, C>(rows: Vec<(A, B, C)>) -> (Vec<A>, Vec<B>, Vec<C>) {
    let mut columns = (Vec::new(), Vec::new(), Vec::new());
    for (a, b, c) in rows {
        columns.0.push(a);
        columns.1.push(b);
        columns.2.push(c);
    }
    columns
}

/// Inserts the created orders (as placed, or `CANCELLED` if their stock is not held).
async fn insert_orders(
    conn: &mut PgConnection,
    created: &[&order_rows::OrderRow],
) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = created.iter().map(|row| row.order_id).collect();
    // Locked so no reservation can be released between this check and the commit.
    let states: HashMap<Uuid, String> = sqlx::query_as(
        "SELECT order_id, state FROM reservations WHERE order_id = ANY($1) \
         ORDER BY order_id FOR SHARE",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();
    let orders: Vec<NewOrder<'_>> = created
        .iter()
        .map(|row| NewOrder {
            row,
            cancelled: event::arrival_cancel(states.get(&row.order_id).map(String::as_str)),
        })
        .collect();
    let inserted = order_rows::insert_many(conn, &orders).await?;
    for order in &orders {
        let order_id = order.row.order_id;
        if !inserted.contains(&order_id) {
            // Normal: order-api persisted it at its first status change.
            continue;
        }
        if order.cancelled.is_some() {
            tracing::warn!(%order_id, reason = STOCK_NOT_HELD,
                "order recorded CANCELLED: its stock was released before it arrived");
        }
    }
    report_taken_keys(conn, &orders, &inserted).await
}

/// Orders neither inserted nor already there lost their idempotency key to another order: an
/// operator should know (the API answers such a retry with the first order, so this needs a
/// client that reused a key for a different order id).
async fn report_taken_keys(
    conn: &mut PgConnection,
    orders: &[NewOrder<'_>],
    inserted: &[Uuid],
) -> Result<(), sqlx::Error> {
    let not_inserted: Vec<Uuid> = orders
        .iter()
        .map(|order| order.row.order_id)
        .filter(|id| !inserted.contains(id))
        .collect();
    if not_inserted.is_empty() {
        return Ok(());
    }
    let present: HashSet<Uuid> =
        sqlx::query_scalar("SELECT order_id FROM orders WHERE order_id = ANY($1)")
            .bind(&not_inserted)
            .fetch_all(conn)
            .await?
            .into_iter()
            .collect();
    for order in orders {
        let row = order.row;
        if !inserted.contains(&row.order_id) && !present.contains(&row.order_id) {
            tracing::error!(order_id = %row.order_id, user_id = %row.user_id,
                "order not persisted: another order already holds its idempotency key");
        }
    }
    Ok(())
}

/// The status changes that waited for these orders, now that they are recorded (changes of an
/// order still missing, e.g. its key was taken, are parked again).
async fn unpark(
    conn: &mut PgConnection,
    order_ids: &[Uuid],
) -> Result<Vec<(Change, &'static str, Cow<'static, [u8]>)>, sqlx::Error> {
    if order_ids.is_empty() {
        return Ok(Vec::new());
    }
    let parked: Vec<(String, Vec<u8>)> = sqlx::query_as(
        "DELETE FROM parked_events WHERE order_id = ANY($1) RETURNING topic, payload",
    )
    .bind(order_ids)
    .fetch_all(conn)
    .await?;
    let mut changes = Vec::with_capacity(parked.len());
    for (topic, payload) in parked {
        let known = orderflow_proto::topics::ALL
            .iter()
            .find(|name| **name == topic);
        // Parked events were decoded when they arrived; they decode the same way now.
        match known.map(|topic| (topic, event::decode(topic, &payload, None))) {
            Some((topic, Ok(OrderEvent::Changed(change)))) => {
                changes.push((change, *topic, Cow::Owned(payload)))
            }
            _ => tracing::error!(%topic, "a parked event no longer decodes; dropped"),
        }
    }
    Ok(changes)
}

/// Applies status changes to the orders present, parks the others.
async fn apply_changes(
    conn: &mut PgConnection,
    changes: &[(Change, &'static str, Cow<'_, [u8]>)],
) -> Result<(), sqlx::Error> {
    let mut ids: Vec<Uuid> = changes.iter().map(|(change, ..)| change.order_id).collect();
    ids.sort_unstable();
    ids.dedup();
    // Locked like order-api locks an order it changes, so the two never interleave.
    let present: HashMap<Uuid, Option<String>> = sqlx::query_as(
        "SELECT order_id, cancel_reason FROM orders WHERE order_id = ANY($1) \
         ORDER BY order_id FOR UPDATE",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();

    let mut history = Vec::new();
    let mut latest: HashMap<Uuid, &Change> = HashMap::new();
    let mut park = Vec::new();
    for (change, topic, payload) in changes {
        match present.get(&change.order_id) {
            // Recorded CANCELLED on arrival, without stock: nothing can follow it.
            Some(Some(reason)) if reason == STOCK_NOT_HELD => {
                tracing::warn!(order_id = %change.order_id, version = change.version,
                    "ignoring a change of an order recorded without stock");
            }
            Some(_) => {
                history.push(change);
                let entry = latest.entry(change.order_id).or_insert(change);
                if change.version > entry.version {
                    *entry = change;
                }
            }
            None => park.push((change, *topic, payload.as_ref())),
        }
    }
    write_history(&mut *conn, &history).await?;
    write_latest(&mut *conn, &latest.into_values().collect::<Vec<_>>()).await?;
    park_changes(conn, &park).await
}

async fn write_history(conn: &mut PgConnection, changes: &[&Change]) -> Result<(), sqlx::Error> {
    if changes.is_empty() {
        return Ok(());
    }
    let order_ids: Vec<Uuid> = changes.iter().map(|change| change.order_id).collect();
    let versions: Vec<i64> = changes.iter().map(|change| change.version).collect();
    let statuses: Vec<&str> = changes.iter().map(|change| change.status).collect();
    let reasons: Vec<Option<&str>> = changes
        .iter()
        .map(|change| change.history_reason())
        .collect();
    let changed: Vec<OffsetDateTime> = changes.iter().map(|change| change.updated_at).collect();
    sqlx::query(
        "INSERT INTO order_status_history (order_id, version, status, reason, changed_at) \
         SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::text[], \
                              $5::timestamptz[]) \
         ON CONFLICT (order_id, version) DO NOTHING",
    )
    .bind(&order_ids)
    .bind(&versions)
    .bind(&statuses)
    .bind(&reasons)
    .bind(&changed)
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves each order to its newest snapshot, if newer than what the row holds.
async fn write_latest(conn: &mut PgConnection, changes: &[&Change]) -> Result<(), sqlx::Error> {
    if changes.is_empty() {
        return Ok(());
    }
    let order_ids: Vec<Uuid> = changes.iter().map(|change| change.order_id).collect();
    let versions: Vec<i64> = changes.iter().map(|change| change.version).collect();
    let statuses: Vec<&str> = changes.iter().map(|change| change.status).collect();
    let updated: Vec<OffsetDateTime> = changes.iter().map(|change| change.updated_at).collect();
    let payments: Vec<Option<&str>> = changes
        .iter()
        .map(|change| change.payment_id.as_deref())
        .collect();
    let tracking: Vec<Option<&str>> = changes
        .iter()
        .map(|change| change.tracking_number.as_deref())
        .collect();
    let reasons: Vec<Option<&str>> = changes
        .iter()
        .map(|change| change.cancel_reason.as_deref())
        .collect();
    sqlx::query(
        "UPDATE orders SET status = s.status, version = s.version, updated_at = s.updated_at, \
                           payment_id = s.payment_id, tracking_number = s.tracking_number, \
                           cancel_reason = s.cancel_reason \
         FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::timestamptz[], $5::text[], \
                     $6::text[], $7::text[]) \
              AS s(order_id, version, status, updated_at, payment_id, tracking_number, \
                   cancel_reason) \
         WHERE orders.order_id = s.order_id AND orders.version < s.version",
    )
    .bind(&order_ids)
    .bind(&versions)
    .bind(&statuses)
    .bind(&updated)
    .bind(&payments)
    .bind(&tracking)
    .bind(&reasons)
    .execute(conn)
    .await?;
    Ok(())
}

async fn park_changes(
    conn: &mut PgConnection,
    park: &[(&Change, &'static str, &[u8])],
) -> Result<(), sqlx::Error> {
    if park.is_empty() {
        return Ok(());
    }
    let event_ids: Vec<Uuid> = park.iter().map(|(change, ..)| change.event_id).collect();
    let order_ids: Vec<Uuid> = park.iter().map(|(change, ..)| change.order_id).collect();
    let topics: Vec<&str> = park.iter().map(|(_, topic, _)| *topic).collect();
    let payloads: Vec<&[u8]> = park.iter().map(|(.., payload)| *payload).collect();
    sqlx::query(
        "INSERT INTO parked_events (event_id, order_id, topic, payload) \
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::bytea[]) \
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&event_ids)
    .bind(&order_ids)
    .bind(&topics)
    .bind(&payloads)
    .execute(conn)
    .await?;
    tracing::debug!(
        count = park.len(),
        "status changes parked until their orders arrive"
    );
    Ok(())
}

//! Applies a batch of events to PostgreSQL in one transaction, each exactly once: the event ids
//! are recorded first (`processed_events`), and only the events whose id was not there yet take
//! effect, in the same transaction. Multi-row statements keep a batch of hundreds of events to a
//! handful of round trips.
//!
//! Effects, in this order within the transaction:
//! 1. `order-created`: the order's rows (shared with order-api, `order_rows`), after its
//!    reservation was confirmed with inventory-svc (from then on only the order settles its
//!    stock); written voided if inventory-svc had given the stock back already. An order whose
//!    idempotency key another live order holds cannot be written: it is dead-lettered (with a
//!    metric: it should never happen), and its unconfirmed reservation returns its stock.
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

use orderflow_grpc::client::Outbound;
use orderflow_kafka::consume::{BatchError, BatchHandler, Received, Rejected};
use orderflow_order_rows::{self as order_rows, NewOrder, OrderRow};
use orderflow_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::event::{self, Change, OrderEvent};
use tracing::Instrument;

pub struct Applier {
    pub pool: PgPool,
    pub inventory: InventoryServiceClient<Outbound>,
    /// Longest wait for inventory-svc to confirm a batch's reservations.
    pub confirm_timeout: std::time::Duration,
}

/// One decoded event of the batch, with what parking it would need.
struct Incoming<'a> {
    /// Its position in the batch.
    index: usize,
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
                    index,
                    topic: message.topic,
                    payload: &message.payload,
                    event,
                }),
                Err(reason) => rejected.push(Rejected { index, reason }),
            }
        }
        if !incoming.is_empty() {
            let conflicts = self
                .apply_decoded(&incoming)
                .instrument(orderflow_runtime::postgres::span("TRANSACTION", "orders"))
                .await?;
            rejected.extend(conflicts);
        }
        Ok(rejected)
    }
}

impl Applier {
    /// Applies the decoded events in one transaction; answers the `order-created` events that
    /// could not be written because another live order holds their idempotency key.
    async fn apply_decoded(&self, incoming: &[Incoming<'_>]) -> Result<Vec<Rejected>, BatchError> {
        let mut tx = self.pool.begin().await?;
        let fresh = record_event_ids(&mut tx, incoming).await?;
        let mut seen = HashSet::new();
        let fresh: Vec<&Incoming<'_>> = incoming
            .iter()
            .filter(|one| {
                fresh.contains(&one.event.event_id()) && seen.insert(one.event.event_id())
            })
            .collect();

        let mut changes: Vec<(Change, &'static str, Cow<'_, [u8]>)> = Vec::new();
        let mut created = Vec::new();
        for one in &fresh {
            match &one.event {
                OrderEvent::Created { row, .. } => created.push((one.index, row)),
                OrderEvent::Changed(change) => {
                    changes.push((change.clone(), one.topic, Cow::Borrowed(one.payload)));
                }
            }
        }
        let mut conflicts = Vec::new();
        if !created.is_empty() {
            conflicts = self.insert_orders(&mut tx, &created).await?;
            let ids: Vec<Uuid> = created.iter().map(|(_, row)| row.order_id).collect();
            changes.extend(unpark(&mut tx, &ids).await?);
        }
        if !changes.is_empty() {
            apply_changes(&mut tx, &changes).await?;
        }
        tx.commit().await?;
        Ok(conflicts)
    }

    /// Inserts the created orders that are not there yet: as placed once inventory-svc
    /// confirmed their reservations, voided where it no longer held their stock. Answers those
    /// whose idempotency key another live order holds, written nowhere.
    async fn insert_orders(
        &self,
        conn: &mut PgConnection,
        created: &[(usize, &OrderRow)],
    ) -> Result<Vec<Rejected>, BatchError> {
        order_rows::lock_keys(
            &mut *conn,
            created
                .iter()
                .map(|(_, row)| (row.user_id.as_str(), row.idempotency_key.as_str())),
        )
        .await?;
        let ids: Vec<Uuid> = created.iter().map(|(_, row)| row.order_id).collect();
        let users: Vec<&str> = created
            .iter()
            .map(|(_, row)| row.user_id.as_str())
            .collect();
        let keys: Vec<&str> = created
            .iter()
            .map(|(_, row)| row.idempotency_key.as_str())
            .collect();
        // Already there (a duplicate event, or order-api persisted it first): nothing to do.
        // Another live order under the same key: a conflict, never written.
        let found: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "SELECT c.order_id, o.order_id FROM UNNEST($1::uuid[], $2::text[], $3::text[]) \
                  AS c(order_id, user_id, idempotency_key) \
             JOIN orders o ON o.order_id = c.order_id \
                  OR (o.user_id = c.user_id AND o.idempotency_key = c.idempotency_key \
                      AND NOT o.voided)",
        )
        .bind(&ids)
        .bind(&users)
        .bind(&keys)
        .fetch_all(&mut *conn)
        .await?;
        // Per order: `None` if it is there itself, else the live order holding its key.
        let mut taken: HashMap<Uuid, Option<Uuid>> = HashMap::new();
        for (order_id, holder) in found {
            if holder == order_id {
                taken.insert(order_id, None);
            } else {
                taken.entry(order_id).or_insert(Some(holder));
            }
        }
        let mut conflicts = Vec::new();
        let mut to_insert = Vec::new();
        // Orders there already are confirmed too: order-api may have persisted one from its
        // cache without reaching inventory-svc, and its reservation must never be taken for an
        // orphan once this event is behind the worker.
        let mut to_confirm = Vec::new();
        for (index, row) in created {
            match taken.get(&row.order_id) {
                None => {
                    to_insert.push(*row);
                    to_confirm.push(row.order_id);
                }
                Some(None) => to_confirm.push(row.order_id),
                Some(Some(holder)) => {
                    orderflow_telemetry::metrics::metrics()
                        .order_key_conflicts
                        .inc();
                    tracing::error!(order_id = %row.order_id, user_id = %row.user_id, %holder,
                        "order not persisted: another order already holds its idempotency key");
                    conflicts.push(Rejected {
                        index: *index,
                        reason: format!(
                            "idempotency key of user {:?} already held by order {holder}",
                            row.user_id
                        ),
                    });
                }
            }
        }
        if to_confirm.is_empty() {
            return Ok(conflicts);
        }
        let held = order_rows::stock_held(
            &mut self.inventory.clone(),
            &to_confirm,
            self.confirm_timeout,
        )
        .await
        .map_err(|status| {
            BatchError::Unavailable(format!(
                "confirming reservations with inventory-svc: {:?}: {}",
                status.code(),
                status.message()
            ))
        })?;
        let orders: Vec<NewOrder<'_>> = to_insert
            .iter()
            .map(|row| NewOrder {
                row,
                voided: !held.contains(&row.order_id),
            })
            .collect();
        if !orders.is_empty() {
            order_rows::insert_many(conn, &orders).await?;
        }
        for order in orders.iter().filter(|order| order.voided) {
            orderflow_telemetry::metrics::metrics().orders_voided.inc();
            tracing::warn!(order_id = %order.row.order_id,
                "order recorded voided: its stock was given back before it arrived");
        }
        Ok(conflicts)
    }
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
    let present: HashMap<Uuid, bool> = sqlx::query_as(
        "SELECT order_id, voided FROM orders WHERE order_id = ANY($1) \
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
            // Recorded voided on arrival, without stock: nothing can follow it.
            Some(true) => {
                tracing::warn!(order_id = %change.order_id, version = change.version,
                    "ignoring a change of an order recorded without stock");
            }
            Some(false) => {
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

//! The orders schema ([`SCHEMA`]: its migrations are in `migrations/`), which order-api and
//! consumer-worker, its persistence worker, share and no other service reads; and the rows of a
//! newly placed order, written by whichever of the two persists it first:
//! consumer-worker (from `order-created`) or order-api (the first status change of an order the
//! worker has not persisted yet). Both go through here, so the two writes cannot drift apart,
//! and whichever comes second finds the order there and writes nothing.
//!
//! Both first confirm the order's reservation with inventory-svc ([`stock_held`]): from then on
//! only the order settles its stock. If inventory-svc had already given the stock back (the
//! order's event reached the log after its placement was given up), the order is written
//! **voided**: `CANCELLED` with reason `stock_not_held`, holding neither stock nor its
//! idempotency key.

use std::collections::HashSet;

use orderflow_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use orderflow_proto::inventory::v1::{ConfirmReservationsRequest, ReservationState};
use orderflow_proto::limits::MAX_BATCH_ORDERS;
use orderflow_proto::order::v1::{Order, OrderStatus};
use orderflow_proto::order_status;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use orderflow_grpc::client::Outbound;
use orderflow_runtime::timestamp;

/// The orders schema, applied by order-api and consumer-worker at start-up.
pub static SCHEMA: orderflow_runtime::postgres::Schema = orderflow_runtime::postgres::Schema {
    name: "orders",
    migrator: &MIGRATOR,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The cancel reason a voided order shows. Which orders are voided is the `voided` column,
/// which no request can write (a client may send this text as its own cancel reason).
pub const STOCK_NOT_HELD: &str = "stock_not_held";

/// Confirms with inventory-svc the reservations of orders about to be persisted; answers those
/// whose stock is held (reserved or sold). The others are written voided.
pub async fn stock_held(
    inventory: &mut InventoryServiceClient<Outbound>,
    order_ids: &[Uuid],
    timeout: std::time::Duration,
) -> Result<HashSet<Uuid>, tonic::Status> {
    let mut held = HashSet::new();
    for chunk in order_ids.chunks(MAX_BATCH_ORDERS) {
        let mut request = tonic::Request::new(ConfirmReservationsRequest {
            order_ids: chunk.iter().map(Uuid::to_string).collect(),
        });
        request.set_timeout(timeout);
        // The header tells inventory-svc; the client does not enforce it by itself.
        let answer = tokio::time::timeout(timeout, inventory.confirm_reservations(request))
            .await
            .map_err(|_| {
                tonic::Status::deadline_exceeded(format!(
                    "inventory-svc did not confirm reservations within {timeout:?}"
                ))
            })??
            .into_inner();
        held.extend(
            answer
                .reservations
                .iter()
                .filter(|reservation| {
                    matches!(
                        reservation.state(),
                        ReservationState::Reserved | ReservationState::Committed
                    )
                })
                .filter_map(|reservation| Uuid::try_parse(&reservation.order_id).ok()),
        );
    }
    Ok(held)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRow {
    pub order_id: Uuid,
    pub user_id: String,
    pub idempotency_key: String,
    pub status: &'static str,
    pub total_cents: i64,
    pub currency: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    pub items: Vec<ItemRow>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRow {
    pub sku: String,
    pub quantity: i64,
    pub unit_price_cents: i64,
}

impl OrderRow {
    /// The rows of a placed `order`; `Err` names what the order lacks (such an order can never
    /// be written).
    pub fn from_order(order: &Order, idempotency_key: &str) -> Result<Self, String> {
        let order_id = Uuid::try_parse(&order.order_id)
            .map_err(|_| format!("bad order_id {:?}", order.order_id))?;
        let status = order_status::from_db(order_status::to_db(order.status()))
            .map(order_status::to_db)
            .ok_or_else(|| format!("order has no valid status ({})", order.status))?;
        if order.items.is_empty() {
            return Err("order has no items".into());
        }
        let at = |field: &str, value: &Option<prost_types::Timestamp>| {
            value
                .as_ref()
                .and_then(timestamp::from_proto)
                .ok_or_else(|| format!("order has no valid {field}"))
        };
        Ok(Self {
            order_id,
            user_id: order.user_id.clone(),
            idempotency_key: idempotency_key.to_owned(),
            status,
            total_cents: order.total_cents,
            currency: order.currency.clone(),
            created_at: at("created_at", &order.created_at)?,
            updated_at: at("updated_at", &order.updated_at)?,
            // Orders placed before payment deadlines existed carry none: they never expire.
            expires_at: order.expires_at.as_ref().and_then(timestamp::from_proto),
            items: order
                .items
                .iter()
                .map(|item| ItemRow {
                    sku: item.sku.clone(),
                    quantity: item.quantity,
                    unit_price_cents: item.unit_price_cents,
                })
                .collect(),
        })
    }
}

/// An order to insert, and whether it is written voided (its stock was not held).
pub struct NewOrder<'a> {
    pub row: &'a OrderRow,
    pub voided: bool,
}

impl NewOrder<'_> {
    fn status_and_reason(&self) -> (&'static str, Option<&'static str>) {
        if self.voided {
            (
                order_status::to_db(OrderStatus::Cancelled),
                Some(STOCK_NOT_HELD),
            )
        } else {
            (self.row.status, None)
        }
    }
}

/// Serializes, until the transaction ends, every writer of a new order under one of these
/// (user, idempotency key) pairs: a check for another live order holding the key then sees
/// every order committed before it, and none can be committed between the check and the insert.
pub async fn lock_keys(
    conn: &mut PgConnection,
    keys: impl IntoIterator<Item = (&str, &str)>,
) -> Result<(), sqlx::Error> {
    use sha2::{Digest, Sha256};
    // Taken in ascending order by every writer, so two of them never wait for each other.
    let mut locks: Vec<i64> = keys
        .into_iter()
        .map(|(user_id, key)| {
            let digest = Sha256::new()
                .chain_update(user_id.as_bytes())
                .chain_update([0])
                .chain_update(key.as_bytes())
                .finalize();
            let mut first = [0; 8];
            first.copy_from_slice(&digest[..8]);
            i64::from_be_bytes(first)
        })
        .collect();
    locks.sort_unstable();
    locks.dedup();
    sqlx::query(
        "SELECT pg_advisory_xact_lock(k) FROM UNNEST($1::bigint[]) WITH ORDINALITY AS t(k, n) \
         ORDER BY n",
    )
    .bind(&locks)
    .execute(conn)
    .await?;
    Ok(())
}

/// Inserts the order (version 1), its items and its first history row; `false` when another
/// order with this id or idempotency key is already there, and then nothing was written.
pub async fn insert(
    conn: &mut PgConnection,
    row: &OrderRow,
    voided: bool,
) -> Result<bool, sqlx::Error> {
    let inserted = insert_many(conn, &[NewOrder { row, voided }]).await?;
    Ok(!inserted.is_empty())
}

/// [`insert`] for many orders in three statements; returns the ids of the orders inserted
/// (the others were there already, by id or by idempotency key).
pub async fn insert_many(
    conn: &mut PgConnection,
    orders: &[NewOrder<'_>],
) -> Result<Vec<Uuid>, sqlx::Error> {
    let mut columns = OrderColumns::default();
    for order in orders {
        let (status, reason) = order.status_and_reason();
        columns.push(order.row, status, reason, order.voided);
    }
    let inserted: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO orders (order_id, user_id, idempotency_key, status, cancel_reason, \
                             total_cents, currency, created_at, updated_at, expires_at, \
                             voided, version) \
         SELECT *, 1 FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], \
                                 $6::bigint[], $7::text[], $8::timestamptz[], \
                                 $9::timestamptz[], $10::timestamptz[], $11::bool[]) \
         ON CONFLICT DO NOTHING RETURNING order_id",
    )
    .bind(&columns.order_ids)
    .bind(&columns.user_ids)
    .bind(&columns.idempotency_keys)
    .bind(&columns.statuses)
    .bind(&columns.reasons)
    .bind(&columns.totals)
    .bind(&columns.currencies)
    .bind(&columns.created)
    .bind(&columns.updated)
    .bind(&columns.expires)
    .bind(&columns.voided)
    .fetch_all(&mut *conn)
    .await?;
    if inserted.is_empty() {
        return Ok(inserted);
    }

    let mut items = ItemColumns::default();
    let mut history = HistoryColumns::default();
    for order in orders
        .iter()
        .filter(|order| inserted.contains(&order.row.order_id))
    {
        items.push(order.row);
        let (status, reason) = order.status_and_reason();
        history.order_ids.push(order.row.order_id);
        history.statuses.push(status);
        history.reasons.push(reason);
        history.changed.push(order.row.created_at);
    }
    sqlx::query(
        "INSERT INTO order_items (order_id, line_no, sku, quantity, unit_price_cents) \
         SELECT * FROM UNNEST($1::uuid[], $2::int[], $3::text[], $4::bigint[], $5::bigint[])",
    )
    .bind(&items.order_ids)
    .bind(&items.line_numbers)
    .bind(&items.skus)
    .bind(&items.quantities)
    .bind(&items.prices)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO order_status_history (order_id, version, status, reason, changed_at) \
         SELECT order_id, 1, status, reason, changed_at \
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[]) \
              AS h(order_id, status, reason, changed_at)",
    )
    .bind(&history.order_ids)
    .bind(&history.statuses)
    .bind(&history.reasons)
    .bind(&history.changed)
    .execute(&mut *conn)
    .await?;
    Ok(inserted)
}

/// Orders as column arrays, for one multi-row `INSERT … SELECT FROM UNNEST`.
#[derive(Default)]
struct OrderColumns<'a> {
    order_ids: Vec<Uuid>,
    user_ids: Vec<&'a str>,
    idempotency_keys: Vec<&'a str>,
    statuses: Vec<&'static str>,
    reasons: Vec<Option<&'static str>>,
    totals: Vec<i64>,
    currencies: Vec<&'a str>,
    created: Vec<OffsetDateTime>,
    updated: Vec<OffsetDateTime>,
    expires: Vec<Option<OffsetDateTime>>,
    voided: Vec<bool>,
}

impl<'a> OrderColumns<'a> {
    fn push(
        &mut self,
        row: &'a OrderRow,
        status: &'static str,
        reason: Option<&'static str>,
        voided: bool,
    ) {
        self.order_ids.push(row.order_id);
        self.user_ids.push(&row.user_id);
        self.idempotency_keys.push(&row.idempotency_key);
        self.statuses.push(status);
        self.reasons.push(reason);
        self.totals.push(row.total_cents);
        self.currencies.push(&row.currency);
        self.created.push(row.created_at);
        self.updated.push(row.updated_at);
        self.expires.push(row.expires_at);
        self.voided.push(voided);
    }
}

#[derive(Default)]
struct ItemColumns<'a> {
    order_ids: Vec<Uuid>,
    line_numbers: Vec<i32>,
    skus: Vec<&'a str>,
    quantities: Vec<i64>,
    prices: Vec<i64>,
}

impl<'a> ItemColumns<'a> {
    fn push(&mut self, row: &'a OrderRow) {
        for (line_no, item) in (0..).zip(&row.items) {
            self.order_ids.push(row.order_id);
            self.line_numbers.push(line_no);
            self.skus.push(&item.sku);
            self.quantities.push(item.quantity);
            self.prices.push(item.unit_price_cents);
        }
    }
}

#[derive(Default)]
struct HistoryColumns {
    order_ids: Vec<Uuid>,
    statuses: Vec<&'static str>,
    reasons: Vec<Option<&'static str>>,
    changed: Vec<OffsetDateTime>,
}

#[cfg(test)]
mod tests {
    use orderflow_proto::order::v1::OrderItem;

    use super::*;

    fn order() -> Order {
        let now = Some(timestamp::to_proto(timestamp::now()));
        Order {
            order_id: Uuid::now_v7().to_string(),
            user_id: "u".into(),
            items: vec![OrderItem {
                sku: "a".into(),
                quantity: 2,
                unit_price_cents: 100,
            }],
            total_cents: 200,
            currency: "CNY".into(),
            status: OrderStatus::Pending.into(),
            created_at: now,
            updated_at: now,
            expires_at: now,
            version: 1,
            ..Order::default()
        }
    }

    #[test]
    fn a_complete_order_becomes_rows() {
        let row = OrderRow::from_order(&order(), "k").unwrap();
        assert_eq!(row.status, "PENDING");
        assert_eq!(row.items.len(), 1);
        assert_eq!(row.total_cents, 200);
        assert!(row.expires_at.is_some());
    }

    #[test]
    fn incomplete_orders_cannot_become_rows() {
        let mut bad_id = order();
        bad_id.order_id = "x".into();
        let mut no_status = order();
        no_status.status = 0;
        let mut no_items = order();
        no_items.items.clear();
        let mut no_time = order();
        no_time.created_at = None;
        for bad in [bad_id, no_status, no_items, no_time] {
            assert!(OrderRow::from_order(&bad, "k").is_err(), "{bad:?}");
        }
    }
}

//! The gRPC edge of the inventory service: validates requests, runs each operation across
//! Redis (`counters`) and PostgreSQL (`ledger`, `recorder`, `guarded`), and converts results to
//! protobuf.

use std::collections::HashSet;
use std::time::Duration;

use orderflow_proto::inventory::v1::inventory_service_server::InventoryService;
use orderflow_proto::inventory::v1::{
    BatchGetStockRequest, BatchGetStockResponse, CommitRequest, CommitResponse, GetStockRequest,
    GetStockResponse, ReconcileStockRequest, ReconcileStockResponse, ReleaseRequest,
    ReleaseResponse, Reservation, ReserveRequest, ReserveResponse, ReservedItem, SetStockRequest,
    SetStockResponse, Stock,
};
use orderflow_proto::limits::{MAX_BATCH_SKUS, MAX_REASON_LEN};
use orderflow_runtime::timestamp;
use orderflow_runtime::validate::{self, FieldError};
use time::OffsetDateTime;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::counters::{Admitted, CachedReservation, Counters, Undo};
use crate::error::InventoryError;
use crate::guarded::Guarded;
use crate::ledger::{Admission, DurableReservation, Ledger, Recorded, Settled};
use crate::recorder::Recorder;
use crate::stock::{self, Line, ReservationState, ReservedLine, Settlement, StockLevel};

/// How long a reservation may stay neither committed nor released.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub reservation: Duration,
    /// How long Redis keeps a reservation hash after it expires, for idempotent retries.
    pub retention: Duration,
}

pub struct Inventory {
    ledger: Ledger,
    counters: Counters,
    recorder: Recorder,
    guarded: Guarded,
    lifetimes: Lifetimes,
}

impl Inventory {
    pub fn new(
        ledger: Ledger,
        counters: Counters,
        recorder: Recorder,
        guarded: Guarded,
        lifetimes: Lifetimes,
    ) -> Self {
        Self {
            ledger,
            counters,
            recorder,
            guarded,
            lifetimes,
        }
    }

    /// Admits in Redis (rebuilding counters Redis lost), then records in PostgreSQL; answers
    /// only once PostgreSQL has the reservation.
    async fn reserve(&self, request: ReserveRequest) -> Result<Reservation, InventoryError> {
        let order_uuid = validate::uuid("order_id", &request.order_id)?;
        let order_id = request.order_id;
        let lines = stock::reservation_lines(request.items)?;
        let expires_at = OffsetDateTime::now_utc() + self.lifetimes.reservation;
        let admitted = self.admit(&order_id, &lines, expires_at).await?;
        let admitted = match admitted {
            Admitted::New(admitted) => admitted,
            Admitted::Existing(cached) => return self.existing(order_id, order_uuid, cached).await,
            Admitted::Missing(index) => {
                return Err(InventoryError::CountersMissing {
                    sku: lines[index].sku.clone(),
                })
            }
            Admitted::Short { index, available } => {
                return Err(InventoryError::InsufficientStock {
                    sku: lines[index].sku.clone(),
                    requested: lines[index].quantity,
                    available,
                })
            }
        };
        let recorded = self
            .recorder
            .record(Admission {
                order_id: order_uuid,
                lines: admitted.lines.clone(),
                expires_at: admitted.expires_at,
            })
            .await;
        match recorded {
            Ok(Recorded::Accepted) => Ok(reservation(
                order_id,
                ReservationState::Reserved,
                admitted.lines,
                admitted.expires_at,
            )),
            Ok(Recorded::Existing(durable)) => {
                self.undo(&order_id, &admitted.lines, Undo::GiveBack).await;
                Ok(durable_reservation(order_id, durable))
            }
            Ok(Recorded::Refused { line, available }) => {
                let ceilings: Vec<i64> = (0..admitted.lines.len())
                    .map(|index| if index == line { available } else { -1 })
                    .collect();
                self.undo(&order_id, &admitted.lines, Undo::Clamp(&ceilings))
                    .await;
                Err(InventoryError::InsufficientStock {
                    sku: admitted.lines[line].sku.clone(),
                    requested: admitted.lines[line].quantity,
                    available,
                })
            }
            Err(error) => {
                self.undo(&order_id, &admitted.lines, Undo::GiveBack).await;
                Err(error)
            }
        }
    }

    /// Runs the admission script; a SKU whose counters Redis lost is rebuilt from PostgreSQL
    /// (once per SKU) and the admission tried again.
    async fn admit(
        &self,
        order_id: &str,
        lines: &[Line],
        expires_at: OffsetDateTime,
    ) -> Result<Admitted, InventoryError> {
        let keep = self.lifetimes.reservation + self.lifetimes.retention;
        let mut restored = HashSet::new();
        loop {
            let admitted = self
                .counters
                .admit(order_id, lines, expires_at, keep)
                .await?;
            let Admitted::Missing(index) = admitted else {
                return Ok(admitted);
            };
            let sku = &lines[index].sku;
            if !restored.insert(sku.clone()) {
                return Ok(admitted);
            }
            if self.guarded.restore(sku).await?.is_none() {
                return Err(InventoryError::UnknownSku {
                    field: format!("items[{index}].sku"),
                    sku: sku.clone(),
                });
            }
        }
    }

    /// A retry of an order Redis already admitted: its first answer, once PostgreSQL has it.
    async fn existing(
        &self,
        order_id: String,
        order_uuid: Uuid,
        cached: CachedReservation,
    ) -> Result<Reservation, InventoryError> {
        if let Some(state) = cached.state {
            return Ok(reservation(
                order_id,
                state,
                cached.lines,
                cached.expires_at,
            ));
        }
        match self.ledger.reservation(order_uuid).await? {
            Some(durable) => {
                if let Err(error) = self.counters.confirm(std::slice::from_ref(&order_id)).await {
                    tracing::warn!(%order_id, %error, "could not mark the reservation recorded");
                }
                Ok(durable_reservation(order_id, durable))
            }
            None => Err(InventoryError::Recording { order_id }),
        }
    }

    async fn undo(&self, order_id: &str, lines: &[ReservedLine], undo: Undo<'_>) {
        if let Err(error) = self.counters.undo(order_id, lines, undo).await {
            // Redis keeps the units counted as taken: it runs behind PostgreSQL, never ahead.
            tracing::warn!(%order_id, %error, "could not undo an unrecorded admission in Redis");
        }
    }

    /// Release or commit: PostgreSQL decides (state machine, row locked), Redis follows.
    async fn settle(
        &self,
        order_id: String,
        settlement: Settlement,
        reason: &str,
    ) -> Result<Reservation, InventoryError> {
        let order_uuid = validate::uuid("order_id", &order_id)?;
        match self.ledger.settle(order_uuid, settlement, reason).await? {
            Settled::Applied(durable) | Settled::AlreadyDone(durable) => {
                self.counters
                    .settle(&order_id, &durable.lines, settlement)
                    .await?;
                Ok(durable_reservation(order_id, durable))
            }
            Settled::Refused(durable) => Err(InventoryError::WrongReservationState {
                order_id,
                state: durable.state.as_str(),
                action: settlement.past_participle(),
            }),
            Settled::NotFound => Err(InventoryError::NoReservation { order_id }),
        }
    }

    async fn stock_levels(
        &self,
        skus: Vec<String>,
    ) -> Result<(Vec<StockLevel>, Vec<String>), InventoryError> {
        let mut levels = self.counters.stock_levels(&skus).await?;
        let unloaded: Vec<String> = skus
            .iter()
            .zip(&levels)
            .filter(|(_, level)| level.is_none())
            .map(|(sku, _)| sku.clone())
            .collect();
        // A SKU PostgreSQL knows but Redis does not: Redis lost its counters; rebuild them.
        if !unloaded.is_empty() {
            let known = self.ledger.existing(&unloaded).await?;
            for sku in &known {
                self.guarded.restore(sku).await?;
            }
            if !known.is_empty() {
                levels = self.counters.stock_levels(&skus).await?;
            }
        }
        let mut found = Vec::with_capacity(skus.len());
        let mut missing = Vec::new();
        for (sku, level) in skus.into_iter().zip(levels) {
            match level {
                Some(level) => found.push(level),
                None => missing.push(sku),
            }
        }
        Ok((found, missing))
    }
}

fn reservation(
    order_id: String,
    state: ReservationState,
    lines: Vec<ReservedLine>,
    expires_at: OffsetDateTime,
) -> Reservation {
    let state = match state {
        ReservationState::Reserved => orderflow_proto::inventory::v1::ReservationState::Reserved,
        ReservationState::Committed => orderflow_proto::inventory::v1::ReservationState::Committed,
        ReservationState::Released => orderflow_proto::inventory::v1::ReservationState::Released,
    };
    Reservation {
        order_id,
        items: lines
            .into_iter()
            .map(|line| ReservedItem {
                sku: line.sku,
                quantity: line.quantity,
                unit_price_cents: line.unit_price_cents,
            })
            .collect(),
        state: state.into(),
        expires_at: Some(timestamp::to_proto(expires_at)),
    }
}

fn durable_reservation(order_id: String, durable: DurableReservation) -> Reservation {
    reservation(order_id, durable.state, durable.lines, durable.expires_at)
}

fn stock_message(level: StockLevel) -> Stock {
    Stock {
        sku: level.sku,
        available: level.available,
        reserved: level.reserved,
        sold: level.sold,
        price_cents: level.price_cents,
    }
}

#[tonic::async_trait]
impl InventoryService for Inventory {
    async fn set_stock(
        &self,
        request: Request<SetStockRequest>,
    ) -> Result<Response<SetStockResponse>, Status> {
        let SetStockRequest {
            sku,
            quantity,
            price_cents,
        } = request.into_inner();
        stock::stock_setting(&sku, quantity, price_cents).map_err(InventoryError::from)?;
        self.guarded.set_stock(&sku, quantity, price_cents).await?;
        tracing::info!(%sku, quantity, price_cents, "stock set");
        let (mut levels, _) = self.stock_levels(vec![sku]).await?;
        Ok(Response::new(SetStockResponse {
            stock: levels.pop().map(stock_message),
        }))
    }

    async fn get_stock(
        &self,
        request: Request<GetStockRequest>,
    ) -> Result<Response<GetStockResponse>, Status> {
        let sku = request.into_inner().sku;
        stock::sku("sku", &sku).map_err(InventoryError::from)?;
        let (mut found, _) = self.stock_levels(vec![sku.clone()]).await?;
        let level = found.pop().ok_or_else(|| InventoryError::UnknownSku {
            field: "sku".into(),
            sku,
        })?;
        Ok(Response::new(GetStockResponse {
            stock: Some(stock_message(level)),
        }))
    }

    async fn batch_get_stock(
        &self,
        request: Request<BatchGetStockRequest>,
    ) -> Result<Response<BatchGetStockResponse>, Status> {
        let skus = request.into_inner().skus;
        if skus.is_empty() || skus.len() > MAX_BATCH_SKUS {
            return Err(InventoryError::from(FieldError::new(
                "skus",
                format!(
                    "must contain 1 to {MAX_BATCH_SKUS} SKUs, got {}",
                    skus.len()
                ),
            ))
            .into());
        }
        for (index, sku) in skus.iter().enumerate() {
            stock::sku(&format!("skus[{index}]"), sku).map_err(InventoryError::from)?;
        }
        let (found, missing) = self.stock_levels(skus).await?;
        Ok(Response::new(BatchGetStockResponse {
            stocks: found.into_iter().map(stock_message).collect(),
            missing_skus: missing,
        }))
    }

    async fn reserve(
        &self,
        request: Request<ReserveRequest>,
    ) -> Result<Response<ReserveResponse>, Status> {
        let reserved = self.reserve(request.into_inner()).await;
        let outcome = match &reserved {
            Ok(_) => "reserved",
            Err(InventoryError::InsufficientStock { .. }) => "insufficient_stock",
            Err(_) => "failed",
        };
        orderflow_runtime::metrics::metrics()
            .reservations
            .get_or_create(&orderflow_runtime::metrics::Outcome { outcome })
            .inc();
        let reservation = reserved?;
        Ok(Response::new(ReserveResponse {
            reservation: Some(reservation),
        }))
    }

    async fn release(
        &self,
        request: Request<ReleaseRequest>,
    ) -> Result<Response<ReleaseResponse>, Status> {
        let ReleaseRequest { order_id, reason } = request.into_inner();
        validate::text("reason", &reason, MAX_REASON_LEN).map_err(InventoryError::from)?;
        let reason = if reason.is_empty() {
            "unspecified"
        } else {
            &reason
        };
        let reservation = self.settle(order_id, Settlement::Release, reason).await?;
        tracing::info!(order_id = %reservation.order_id, %reason, "released");
        Ok(Response::new(ReleaseResponse {
            reservation: Some(reservation),
        }))
    }

    async fn reconcile_stock(
        &self,
        request: Request<ReconcileStockRequest>,
    ) -> Result<Response<ReconcileStockResponse>, Status> {
        let sku = request.into_inner().sku;
        stock::sku("sku", &sku).map_err(InventoryError::from)?;
        let reconciled =
            self.guarded
                .reconcile(&sku)
                .await?
                .ok_or_else(|| InventoryError::UnknownSku {
                    field: "sku".into(),
                    sku: sku.clone(),
                })?;
        tracing::info!(
            %sku,
            before = ?reconciled.before,
            available = reconciled.after.available,
            reserved = reconciled.after.reserved,
            sold = reconciled.after.sold,
            in_flight = reconciled.in_flight,
            "stock counters reconciled with PostgreSQL"
        );
        Ok(Response::new(ReconcileStockResponse {
            before: reconciled.before.map(stock_message),
            after: Some(stock_message(reconciled.after)),
        }))
    }

    async fn commit(
        &self,
        request: Request<CommitRequest>,
    ) -> Result<Response<CommitResponse>, Status> {
        let order_id = request.into_inner().order_id;
        let reservation = self.settle(order_id, Settlement::Commit, "").await?;
        Ok(Response::new(CommitResponse {
            reservation: Some(reservation),
        }))
    }
}

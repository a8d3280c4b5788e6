//! The gRPC edge of the inventory service: validates requests, runs each operation across
//! Redis (`counters`) and PostgreSQL (`ledger`, `recorder`, `guarded`), and converts results to
//! protobuf.

use std::collections::HashSet;
use std::time::Duration;

use orderflow_proto::inventory::v1::inventory_service_server::InventoryService;
use orderflow_proto::inventory::v1::{
    BatchGetStockRequest, BatchGetStockResponse, CommitRequest, CommitResponse,
    ConfirmReservationsRequest, ConfirmReservationsResponse, GetStockRequest, GetStockResponse,
    ReconcileStockRequest, ReconcileStockResponse, ReleaseRequest, ReleaseResponse, Reservation,
    ReserveRequest, ReserveResponse, ReservedItem, SetStockRequest, SetStockResponse, Stock,
};
use orderflow_proto::limits::{MAX_BATCH_ORDERS, MAX_BATCH_SKUS, MAX_REASON_LEN};
use orderflow_runtime::timestamp;
use orderflow_runtime::validate;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::counters::{Admitted, CachedReservation, Counters, Undo};
use crate::error::InventoryError;
use crate::guarded::Guarded;
use crate::ledger::{Admission, DurableReservation, Ledger, Recorded, Settled};
use crate::recorder::Recorder;
use crate::stock::{self, Line, ReservationState, ReservedLine, Settlement, StockLevel};

/// How long reservations are held and remembered.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// How long a reservation is held for a placement that sent no deadline, unless an order
    /// confirms it.
    pub reservation: Duration,
    /// Added to the placement's deadline: a publish the placement sent just before its
    /// deadline may still be on its way to the broker.
    pub grace: Duration,
    /// How long Redis keeps a reservation hash after it could expire, for idempotent retries.
    pub retention: Duration,
}

impl Lifetimes {
    /// How long a reservation is held for a placement whose caller allows it `caller_timeout`:
    /// as long as that placement may still publish its order, plus the grace period. Never
    /// less: a placement acknowledged after its stock was given back would be an order without
    /// stock.
    pub fn hold(&self, caller_timeout: Option<Duration>) -> Duration {
        caller_timeout.unwrap_or(self.reservation) + self.grace
    }
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
    /// only once PostgreSQL has the reservation. It is held for `hold` unless an order confirms
    /// it.
    async fn reserve(
        &self,
        request: ReserveRequest,
        hold: Duration,
    ) -> Result<Reservation, InventoryError> {
        let order_uuid = validate::uuid("order_id", &request.order_id)?;
        let order_id = request.order_id;
        let lines = stock::reservation_lines(request.items)?;
        let admitted = self.admit(&order_id, &lines).await?;
        let admitted = match admitted {
            Admitted::New(admitted) => admitted,
            Admitted::Existing(cached) => {
                return self.existing(order_id, order_uuid, cached, hold).await
            }
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
                hold,
            })
            .await;
        match recorded {
            Ok(Recorded::Accepted { expires_at }) => Ok(reservation(
                order_id,
                DurableReservation {
                    state: ReservationState::Reserved,
                    lines: admitted.lines,
                    expires_at,
                    confirmed: false,
                },
            )),
            Ok(Recorded::Existing(durable)) => {
                self.undo(&order_id, &admitted.lines, Undo::GiveBack).await;
                Ok(reservation(order_id, durable))
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
    async fn admit(&self, order_id: &str, lines: &[Line]) -> Result<Admitted, InventoryError> {
        let keep = self.lifetimes.reservation + self.lifetimes.grace + self.lifetimes.retention;
        let mut restored = HashSet::new();
        loop {
            let admitted = self.counters.admit(order_id, lines, keep).await?;
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

    /// A retry of an order Redis already admitted: the reservation as PostgreSQL has it now,
    /// held for this placement too while no order confirmed it (a retried placement may go on
    /// to publish its order). Released already: the caller learns it and must not go on.
    async fn existing(
        &self,
        order_id: String,
        order_uuid: Uuid,
        cached: CachedReservation,
        hold: Duration,
    ) -> Result<Reservation, InventoryError> {
        match self.ledger.renew(order_uuid, hold).await? {
            Some(durable) => {
                if cached.state.is_none() {
                    if let Err(error) = self.counters.confirm(std::slice::from_ref(&order_id)).await
                    {
                        tracing::warn!(%order_id, %error, "could not mark the reservation recorded");
                    }
                }
                Ok(reservation(order_id, durable))
            }
            None => Err(InventoryError::Recording { order_id }),
        }
    }

    /// Confirms the reservations of orders that exist and answers each as it is now.
    async fn confirm_orders(
        &self,
        order_ids: Vec<String>,
    ) -> Result<ConfirmReservationsResponse, InventoryError> {
        let ids = validate::uuids("order_ids", &order_ids, MAX_BATCH_ORDERS)?;
        let mut found = self.ledger.confirm_orders(&ids).await?;
        let mut answer = ConfirmReservationsResponse::default();
        let mut seen = HashSet::new();
        for (order_id, id) in order_ids.into_iter().zip(ids) {
            if !seen.insert(id) {
                continue;
            }
            match found.remove(&id) {
                Some(durable) => answer.reservations.push(reservation(order_id, durable)),
                None => answer.missing_order_ids.push(order_id),
            }
        }
        Ok(answer)
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
                Ok(reservation(order_id, durable))
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

fn reservation(order_id: String, durable: DurableReservation) -> Reservation {
    let state = match durable.state {
        ReservationState::Reserved => orderflow_proto::inventory::v1::ReservationState::Reserved,
        ReservationState::Committed => orderflow_proto::inventory::v1::ReservationState::Committed,
        ReservationState::Released => orderflow_proto::inventory::v1::ReservationState::Released,
    };
    Reservation {
        order_id,
        items: durable
            .lines
            .into_iter()
            .map(|line| ReservedItem {
                sku: line.sku,
                quantity: line.quantity,
                unit_price_cents: line.unit_price_cents,
            })
            .collect(),
        state: state.into(),
        expires_at: Some(timestamp::to_proto(durable.expires_at)),
        confirmed: durable.confirmed,
    }
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
        validate::count("skus", skus.len(), MAX_BATCH_SKUS, "SKUs")
            .map_err(InventoryError::from)?;
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
        let hold = self
            .lifetimes
            .hold(orderflow_grpc::deadline::caller_timeout(request.metadata()));
        let reserved = self.reserve(request.into_inner(), hold).await;
        let outcome = match &reserved {
            Ok(_) => "reserved",
            Err(InventoryError::InsufficientStock { .. }) => "insufficient_stock",
            Err(_) => "failed",
        };
        orderflow_telemetry::metrics::metrics()
            .reservations
            .get_or_create(&orderflow_telemetry::metrics::Outcome { outcome })
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

    async fn confirm_reservations(
        &self,
        request: Request<ConfirmReservationsRequest>,
    ) -> Result<Response<ConfirmReservationsResponse>, Status> {
        let order_ids = request.into_inner().order_ids;
        Ok(Response::new(self.confirm_orders(order_ids).await?))
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

//! The gRPC edge of the inventory service: validates requests, calls the counters and the
//! catalog, and converts results to protobuf.

use orderflow_proto::inventory::v1::inventory_service_server::InventoryService;
use orderflow_proto::inventory::v1::{
    BatchGetStockRequest, BatchGetStockResponse, CommitRequest, CommitResponse, GetStockRequest,
    GetStockResponse, ReleaseRequest, ReleaseResponse, Reservation, ReserveRequest,
    ReserveResponse, ReservedItem, SetStockRequest, SetStockResponse, Stock,
};
use orderflow_proto::limits::MAX_BATCH_SKUS;
use orderflow_runtime::validate::{self, FieldError};
use tonic::{Request, Response, Status};

use crate::catalog::Catalog;
use crate::counters::{Counters, ReserveOutcome};
use crate::error::InventoryError;
use crate::stock::{self, ReservationState, ReservedLine, StockLevel};

pub struct Inventory {
    catalog: Catalog,
    counters: Counters,
}

impl Inventory {
    pub fn new(catalog: Catalog, counters: Counters) -> Self {
        Self { catalog, counters }
    }

    /// Why a SKU has no Redis counters: unknown to the catalog (`field` names it in the
    /// request), or known but not loaded (Redis lost its data).
    async fn explain_missing(&self, field: String, sku: &str) -> InventoryError {
        match self.catalog.existing(&[sku.to_owned()]).await {
            Ok(existing) if existing.is_empty() => InventoryError::UnknownSku {
                field,
                sku: sku.to_owned(),
            },
            Ok(_) => InventoryError::CountersMissing {
                sku: sku.to_owned(),
            },
            Err(error) => error,
        }
    }

    async fn reserve(&self, request: ReserveRequest) -> Result<Reservation, InventoryError> {
        validate::uuid("order_id", &request.order_id)?;
        let lines = stock::reservation_lines(request.items)?;
        match self.counters.reserve(&request.order_id, &lines).await? {
            ReserveOutcome::Reserved(reserved) => {
                tracing::debug!(order_id = %request.order_id, "reserved");
                Ok(reservation(
                    request.order_id,
                    ReservationState::Reserved,
                    reserved,
                ))
            }
            ReserveOutcome::Existing(state, reserved) => {
                Ok(reservation(request.order_id, state, reserved))
            }
            ReserveOutcome::Missing(index) => Err(self
                .explain_missing(format!("items[{index}].sku"), &lines[index].sku)
                .await),
            ReserveOutcome::Short { index, available } => Err(InventoryError::InsufficientStock {
                sku: lines[index].sku.clone(),
                requested: lines[index].quantity,
                available,
            }),
        }
    }

    async fn release(&self, order_id: String) -> Result<Reservation, InventoryError> {
        validate::uuid("order_id", &order_id)?;
        let stored = self.counters.reservation(&order_id).await?.ok_or_else(|| {
            InventoryError::NoReservation {
                order_id: order_id.clone(),
            }
        })?;
        let before = self.counters.release(&order_id, &stored.lines).await?;
        match before {
            None => Err(InventoryError::NoReservation { order_id }),
            Some(ReservationState::Committed) => Err(InventoryError::WrongReservationState {
                order_id,
                state: ReservationState::Committed.as_str(),
                action: "released",
            }),
            Some(ReservationState::Reserved | ReservationState::Released) => Ok(reservation(
                order_id,
                ReservationState::Released,
                stored.lines,
            )),
        }
    }

    async fn stock_levels(
        &self,
        skus: Vec<String>,
    ) -> Result<(Vec<StockLevel>, Vec<String>), InventoryError> {
        let levels = self.counters.stock_levels(&skus).await?;
        let mut found = Vec::with_capacity(skus.len());
        let mut missing = Vec::new();
        for (sku, level) in skus.into_iter().zip(levels) {
            match level {
                Some(level) => found.push(level),
                None => missing.push(sku),
            }
        }
        // A SKU the catalog knows but Redis does not is not "missing": its counters are.
        if !missing.is_empty() {
            if let Some(sku) = self.catalog.existing(&missing).await?.into_iter().next() {
                return Err(InventoryError::CountersMissing { sku });
            }
        }
        Ok((found, missing))
    }
}

fn reservation(order_id: String, state: ReservationState, lines: Vec<ReservedLine>) -> Reservation {
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
        // Reservations do not expire yet: they last until released or committed.
        expires_at: None,
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
        self.catalog.upsert(&sku, quantity, price_cents).await?;
        self.counters.set_stock(&sku, quantity, price_cents).await?;
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
        let reservation = self.reserve(request.into_inner()).await?;
        Ok(Response::new(ReserveResponse {
            reservation: Some(reservation),
        }))
    }

    async fn release(
        &self,
        request: Request<ReleaseRequest>,
    ) -> Result<Response<ReleaseResponse>, Status> {
        let request = request.into_inner();
        let reservation = self.release(request.order_id).await?;
        tracing::info!(order_id = %reservation.order_id, reason = %request.reason, "released");
        Ok(Response::new(ReleaseResponse {
            reservation: Some(reservation),
        }))
    }

    async fn commit(
        &self,
        _request: Request<CommitRequest>,
    ) -> Result<Response<CommitResponse>, Status> {
        Err(Status::unimplemented(
            "Commit is not implemented yet: it arrives with the payment flow",
        ))
    }
}

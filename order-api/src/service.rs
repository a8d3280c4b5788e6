//! The gRPC edge of the order API: each RPC gets its time budget (the caller's deadline or
//! ours), validates its fields, and hands over to placement, reads or transitions.

use std::time::Duration;

use orderflow_grpc::auth::Caller;
use orderflow_grpc::streams::{self, OpenStreams};
use orderflow_proto::limits::{MAX_ID_LEN, MAX_REASON_LEN};
use orderflow_proto::order::v1::order_service_server::OrderService;
use orderflow_proto::order::v1::{
    BatchGetOrdersRequest, BatchGetOrdersResponse, CancelOrderRequest, CancelOrderResponse,
    CompleteOrderRequest, CompleteOrderResponse, CreateOrderRequest, CreateOrderResponse,
    GetOrderRequest, GetOrderResponse, ListOrdersRequest, ListOrdersResponse, Order,
    PayOrderRequest, PayOrderResponse, ShipOrderRequest, ShipOrderResponse, WatchOrderRequest,
    WatchOrderResponse,
};
use orderflow_runtime::validate;
use tokio_util::sync::CancellationToken;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use crate::deadline::CallDeadline;
use crate::error::OrderError;
use crate::lifecycle::Action;
use crate::placement::Placement;
use crate::reads::Reads;
use crate::transitions::Transitions;
use crate::watch::{self, ChangeFeed};

/// Why an order was cancelled when the request gives no reason.
const DEFAULT_CANCEL_REASON: &str = "cancelled on request";

pub struct OrderApi {
    pub placement: Placement,
    pub reads: Reads,
    pub transitions: Transitions,
    pub feed: ChangeFeed,
    pub create_timeout: Duration,
    pub request_timeout: Duration,
    /// Ends open WatchOrder streams, so a graceful shutdown is not held up by them.
    pub shutdown: CancellationToken,
    /// The cap on WatchOrder streams open at once.
    pub streams: OpenStreams,
}

impl OrderApi {
    fn deadline<T>(&self, request: &Request<T>) -> CallDeadline {
        CallDeadline::for_call(request.metadata(), self.request_timeout)
    }

    async fn change<T>(
        &self,
        request: &Request<T>,
        order_id: &str,
        action: Action,
    ) -> Result<Order, Status> {
        let deadline = self.deadline(request);
        let id = validate::uuid("order_id", order_id).map_err(OrderError::from)?;
        let caller = Caller::of(request);
        if !caller.is_admin() {
            // A buyer changes only its own orders: whose this one is, first.
            let order = deadline
                .run("reading the order", self.reads.get(order_id))
                .await??;
            caller.may_act_for(&order.user_id)?;
        }
        Ok(self.transitions.perform(id, action, deadline).await?)
    }
}

/// Checks the caller may act for `user_id`; an empty one is left to the field's validation
/// (`INVALID_ARGUMENT` naming it).
fn check_owner(caller: &Caller, user_id: &str) -> Result<(), Status> {
    if user_id.is_empty() {
        return Ok(());
    }
    caller.may_act_for(user_id)
}

#[tonic::async_trait]
impl OrderService for OrderApi {
    async fn create_order(
        &self,
        request: Request<CreateOrderRequest>,
    ) -> Result<Response<CreateOrderResponse>, Status> {
        let deadline = CallDeadline::for_call(request.metadata(), self.create_timeout);
        check_owner(&Caller::of(&request), &request.get_ref().user_id)?;
        let order = self
            .placement
            .create(request.into_inner(), deadline)
            .await?;
        Ok(Response::new(CreateOrderResponse { order: Some(order) }))
    }

    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<GetOrderResponse>, Status> {
        let deadline = self.deadline(&request);
        let caller = Caller::of(&request);
        let order_id = request.into_inner().order_id;
        let order = deadline
            .run("reading the order", self.reads.get(&order_id))
            .await??;
        caller.may_act_for(&order.user_id)?;
        Ok(Response::new(GetOrderResponse { order: Some(order) }))
    }

    async fn batch_get_orders(
        &self,
        request: Request<BatchGetOrdersRequest>,
    ) -> Result<Response<BatchGetOrdersResponse>, Status> {
        let deadline = self.deadline(&request);
        let caller = Caller::of(&request);
        let order_ids = request.into_inner().order_ids;
        let batch = deadline
            .run("reading the orders", self.reads.batch(&order_ids))
            .await??;
        for order in &batch.orders {
            caller.may_act_for(&order.user_id).map_err(|denied| {
                Status::permission_denied(format!("order {}: {}", order.order_id, denied.message()))
            })?;
        }
        Ok(Response::new(BatchGetOrdersResponse {
            orders: batch.orders,
            missing_order_ids: batch.missing,
        }))
    }

    async fn list_orders(
        &self,
        request: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        let deadline = self.deadline(&request);
        check_owner(&Caller::of(&request), &request.get_ref().user_id)?;
        let ListOrdersRequest {
            user_id,
            page_size,
            page_token,
        } = request.into_inner();
        let page = deadline
            .run(
                "listing the orders",
                self.reads.list(&user_id, page_size, &page_token),
            )
            .await??;
        Ok(Response::new(ListOrdersResponse {
            orders: page.orders,
            next_page_token: page.next_page_token,
        }))
    }

    async fn pay_order(
        &self,
        request: Request<PayOrderRequest>,
    ) -> Result<Response<PayOrderResponse>, Status> {
        let message = request.get_ref();
        validate::identifier("payment_id", &message.payment_id, MAX_ID_LEN)
            .map_err(OrderError::from)?;
        let action = Action::Pay {
            payment_id: message.payment_id.clone(),
            amount_cents: message.amount_cents,
        };
        let order = self.change(&request, &message.order_id, action).await?;
        Ok(Response::new(PayOrderResponse { order: Some(order) }))
    }

    async fn cancel_order(
        &self,
        request: Request<CancelOrderRequest>,
    ) -> Result<Response<CancelOrderResponse>, Status> {
        let message = request.get_ref();
        validate::text("reason", &message.reason, MAX_REASON_LEN).map_err(OrderError::from)?;
        let reason = if message.reason.is_empty() {
            DEFAULT_CANCEL_REASON.to_owned()
        } else {
            message.reason.clone()
        };
        let action = Action::Cancel { reason };
        let order = self.change(&request, &message.order_id, action).await?;
        Ok(Response::new(CancelOrderResponse { order: Some(order) }))
    }

    async fn ship_order(
        &self,
        request: Request<ShipOrderRequest>,
    ) -> Result<Response<ShipOrderResponse>, Status> {
        let message = request.get_ref();
        validate::identifier("tracking_number", &message.tracking_number, MAX_ID_LEN)
            .map_err(OrderError::from)?;
        let action = Action::Ship {
            tracking_number: message.tracking_number.clone(),
        };
        let order = self.change(&request, &message.order_id, action).await?;
        Ok(Response::new(ShipOrderResponse { order: Some(order) }))
    }

    async fn complete_order(
        &self,
        request: Request<CompleteOrderRequest>,
    ) -> Result<Response<CompleteOrderResponse>, Status> {
        let order_id = request.get_ref().order_id.clone();
        let order = self.change(&request, &order_id, Action::Complete).await?;
        Ok(Response::new(CompleteOrderResponse { order: Some(order) }))
    }

    type WatchOrderStream = BoxStream<WatchOrderResponse>;

    async fn watch_order(
        &self,
        request: Request<WatchOrderRequest>,
    ) -> Result<Response<Self::WatchOrderStream>, Status> {
        let deadline = self.deadline(&request);
        let caller = Caller::of(&request);
        let order_id = request.into_inner().order_id;
        let id = validate::uuid("order_id", &order_id).map_err(OrderError::from)?;
        let slot = self.streams.open()?;
        // Subscribed before reading, so no change between the read and the first wait is missed.
        let subscription = self.feed.subscribe(id);
        let current = deadline
            .run("reading the order", self.reads.find(id))
            .await??
            .ok_or(OrderError::OrderNotFound(order_id))?;
        caller.may_act_for(&current.user_id)?;
        let changes = watch::stream(
            subscription,
            current,
            self.reads.clone(),
            self.shutdown.clone(),
        );
        Ok(Response::new(Box::pin(streams::holding(changes, slot))))
    }
}

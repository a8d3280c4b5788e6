//! The gRPC edge of the order API.

use orderflow_proto::order::v1::order_service_server::OrderService;
use orderflow_proto::order::v1::{
    BatchGetOrdersRequest, BatchGetOrdersResponse, CancelOrderRequest, CancelOrderResponse,
    CompleteOrderRequest, CompleteOrderResponse, CreateOrderRequest, CreateOrderResponse,
    GetOrderRequest, GetOrderResponse, ListOrdersRequest, ListOrdersResponse, PayOrderRequest,
    PayOrderResponse, ShipOrderRequest, ShipOrderResponse, WatchOrderRequest, WatchOrderResponse,
};
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use crate::placement::Placement;

pub struct OrderApi {
    placement: Placement,
}

impl OrderApi {
    pub fn new(placement: Placement) -> Self {
        Self { placement }
    }
}

fn not_yet<T>(rpc: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!(
        "{rpc} is not implemented yet: it arrives with the order lifecycle"
    )))
}

#[tonic::async_trait]
impl OrderService for OrderApi {
    async fn create_order(
        &self,
        request: Request<CreateOrderRequest>,
    ) -> Result<Response<CreateOrderResponse>, Status> {
        let order = self.placement.create(request.into_inner()).await?;
        Ok(Response::new(CreateOrderResponse { order: Some(order) }))
    }

    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<GetOrderResponse>, Status> {
        let order = self.placement.get(&request.into_inner().order_id).await?;
        Ok(Response::new(GetOrderResponse { order: Some(order) }))
    }

    async fn batch_get_orders(
        &self,
        _request: Request<BatchGetOrdersRequest>,
    ) -> Result<Response<BatchGetOrdersResponse>, Status> {
        not_yet("BatchGetOrders")
    }

    async fn list_orders(
        &self,
        _request: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        not_yet("ListOrders")
    }

    async fn pay_order(
        &self,
        _request: Request<PayOrderRequest>,
    ) -> Result<Response<PayOrderResponse>, Status> {
        not_yet("PayOrder")
    }

    async fn cancel_order(
        &self,
        _request: Request<CancelOrderRequest>,
    ) -> Result<Response<CancelOrderResponse>, Status> {
        not_yet("CancelOrder")
    }

    async fn ship_order(
        &self,
        _request: Request<ShipOrderRequest>,
    ) -> Result<Response<ShipOrderResponse>, Status> {
        not_yet("ShipOrder")
    }

    async fn complete_order(
        &self,
        _request: Request<CompleteOrderRequest>,
    ) -> Result<Response<CompleteOrderResponse>, Status> {
        not_yet("CompleteOrder")
    }

    type WatchOrderStream = BoxStream<WatchOrderResponse>;

    async fn watch_order(
        &self,
        _request: Request<WatchOrderRequest>,
    ) -> Result<Response<Self::WatchOrderStream>, Status> {
        not_yet("WatchOrder")
    }
}

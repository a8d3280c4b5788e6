//! The order API as the tests call it, on any order-api's client (the stack's, a replica's, a
//! process of the test's own): each call answers the order it returned, or the refusal, so a
//! test reads as the lifecycle it drives. `Stack` has the same calls on its first order-api.

use orderflow_proto::order::v1::order_service_client::OrderServiceClient;
use orderflow_proto::order::v1::{
    CancelOrderRequest, CompleteOrderRequest, GetOrderRequest, Order, PayOrderRequest,
    ShipOrderRequest,
};
use tonic::transport::Channel;
use tonic::Status;

pub type OrderClient = OrderServiceClient<Channel>;

/// The order an answer carries; every successful order call carries one.
fn answered(order: Option<Order>, call: &str) -> Order {
    order.unwrap_or_else(|| panic!("{call} answered no order"))
}

pub async fn get(client: &mut OrderClient, order_id: &str) -> Result<Order, Status> {
    let answer = client
        .get_order(GetOrderRequest {
            order_id: order_id.into(),
        })
        .await?;
    Ok(answered(answer.into_inner().order, "GetOrder"))
}

/// PayOrder for the whole total of `order`.
pub async fn pay(
    client: &mut OrderClient,
    order: &Order,
    payment_id: &str,
) -> Result<Order, Status> {
    let answer = client
        .pay_order(PayOrderRequest {
            order_id: order.order_id.clone(),
            payment_id: payment_id.into(),
            amount_cents: order.total_cents,
        })
        .await?;
    Ok(answered(answer.into_inner().order, "PayOrder"))
}

pub async fn cancel(
    client: &mut OrderClient,
    order_id: &str,
    reason: &str,
) -> Result<Order, Status> {
    let answer = client
        .cancel_order(CancelOrderRequest {
            order_id: order_id.into(),
            reason: reason.into(),
        })
        .await?;
    Ok(answered(answer.into_inner().order, "CancelOrder"))
}

pub async fn ship(
    client: &mut OrderClient,
    order_id: &str,
    tracking: &str,
) -> Result<Order, Status> {
    let answer = client
        .ship_order(ShipOrderRequest {
            order_id: order_id.into(),
            tracking_number: tracking.into(),
        })
        .await?;
    Ok(answered(answer.into_inner().order, "ShipOrder"))
}

pub async fn complete(client: &mut OrderClient, order_id: &str) -> Result<Order, Status> {
    let answer = client
        .complete_order(CompleteOrderRequest {
            order_id: order_id.into(),
        })
        .await?;
    Ok(answered(answer.into_inner().order, "CompleteOrder"))
}

//! Every gRPC server answers the standard health check; unfinished RPCs say so.

use orderflow_tests::stack::Stack;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

#[tokio::test]
async fn every_server_reports_serving() {
    let stack = Stack::start().await;
    for (address, service) in [
        (stack.addresses.order_api, "orderflow.order.v1.OrderService"),
        (
            stack.addresses.inventory,
            "orderflow.inventory.v1.InventoryService",
        ),
        (
            stack.addresses.notify,
            "orderflow.notify.v1.NotificationService",
        ),
    ] {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = HealthClient::new(channel);
        for name in [service, ""] {
            let status = health
                .check(HealthCheckRequest {
                    service: name.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status();
            assert_eq!(status, ServingStatus::Serving, "{service} ({name:?})");
        }
    }
}

#[tokio::test]
async fn rpcs_of_later_milestones_answer_unimplemented() {
    let stack = Stack::start().await;
    let status = stack
        .order
        .clone()
        .pay_order(orderflow_proto::order::v1::PayOrderRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
}

//! notify-svc: will turn order events into user notifications and serve them. For now it
//! serves its contract, health and reflection; both RPCs answer UNIMPLEMENTED until the
//! notification pipeline lands, and it answers nothing with made-up data.

use orderflow_proto::notify::v1::notification_service_server::{
    NotificationService, NotificationServiceServer,
};
use orderflow_proto::notify::v1::{
    ListNotificationsRequest, ListNotificationsResponse, SubscribeNotificationsRequest,
    SubscribeNotificationsResponse,
};
use orderflow_runtime::config::TelemetryArgs;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "notify-svc", version, about = "orderflow notification service")]
pub struct Config {
    /// gRPC listen address.
    #[arg(
        long,
        env = "ORDERFLOW_NOTIFY_LISTEN",
        default_value = "127.0.0.1:50053"
    )]
    pub listen: String,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// Serves the notification service on `listener` until `shutdown` is cancelled.
pub async fn run(
    _config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), orderflow_runtime::RuntimeError> {
    orderflow_runtime::grpc::serve(
        NotificationServiceServer::new(Notifications),
        listener,
        shutdown.cancelled_owned(),
    )
    .await
}

struct Notifications;

fn not_yet<T>(rpc: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!(
        "{rpc} is not implemented yet: it arrives with the notification pipeline"
    )))
}

#[tonic::async_trait]
impl NotificationService for Notifications {
    async fn list_notifications(
        &self,
        _request: Request<ListNotificationsRequest>,
    ) -> Result<Response<ListNotificationsResponse>, Status> {
        not_yet("ListNotifications")
    }

    type SubscribeNotificationsStream = BoxStream<SubscribeNotificationsResponse>;

    async fn subscribe_notifications(
        &self,
        _request: Request<SubscribeNotificationsRequest>,
    ) -> Result<Response<Self::SubscribeNotificationsStream>, Status> {
        not_yet("SubscribeNotifications")
    }
}

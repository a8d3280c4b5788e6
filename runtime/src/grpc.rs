//! Serves one gRPC service together with what every orderflow server offers besides: the
//! standard health service and server reflection (v1 and v1alpha, since grpcurl 1.8 only speaks
//! v1alpha), so operators can call any server with grpcurl and no .proto files.

use std::convert::Infallible;
use std::future::Future;

use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::codegen::{http, Service};
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::RuntimeError;

/// Serves `service` on `listener` until `shutdown` completes, then lets in-flight calls finish.
pub async fn serve<S>(
    service: S,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RuntimeError>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status(S::NAME, ServingStatus::Serving)
        .await;

    let reflection_v1 = reflection_builder(S::NAME)
        .build_v1()
        .map_err(reflection_error)?;
    let reflection_v1alpha = reflection_builder(S::NAME)
        .build_v1alpha()
        .map_err(reflection_error)?;

    let address = listener.local_addr().ok();
    tracing::info!(service = S::NAME, ?address, "gRPC server listening");

    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, async {
            shutdown.await;
            health_reporter
                .set_service_status(S::NAME, ServingStatus::NotServing)
                .await;
            tracing::info!(service = S::NAME, "gRPC server draining");
        })
        .await?;
    Ok(())
}

/// Reflection over every contract (so message types resolve), listing only the services this
/// server actually serves.
fn reflection_builder(service: &str) -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(orderflow_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(service)
        .with_service_name("grpc.health.v1.Health")
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .with_service_name("grpc.reflection.v1alpha.ServerReflection")
}

fn reflection_error(error: tonic_reflection::server::Error) -> RuntimeError {
    RuntimeError::Config(format!("building the reflection service: {error}"))
}

/// Binds a gRPC listen address such as `127.0.0.1:50051`.
pub async fn bind(address: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .map_err(|error| std::io::Error::new(error.kind(), format!("binding {address}: {error}")))
}

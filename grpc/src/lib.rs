//! gRPC between orderflow and its callers, and between its services. Serves a process's gRPC
//! services together with what every orderflow server offers besides: the standard health
//! service and server reflection (v1 and v1alpha, since grpcurl 1.8 only speaks v1alpha), so
//! operators can call any server with grpcurl and no .proto files; around every call the tower
//! layers that authenticate (`auth`), bound deadlines, shed load, limit sizes and streams and
//! observe; TLS (`tls`); and the traced client one service calls another with (`client`). Each
//! settings group (`ServingArgs`, `InventoryClientArgs`) sits next to what it configures.

pub mod auth;
mod authorize;
pub mod client;
pub use client::InventoryClientArgs;
pub mod deadline;
mod gate;
mod observe;
mod shed;
mod size_limit;
pub mod streams;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::codegen::{http, Service};
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::auth::Policy;

/// Why a gRPC server or client could not be set up or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Setting(#[from] orderflow_config::ConfigError),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// How a gRPC server protects itself and stops.
#[derive(Clone, Debug, clap::Args, serde::Serialize)]
pub struct ServingArgs {
    /// Calls served at once; past it a call is refused at once with RESOURCE_EXHAUSTED (load
    /// shedding) instead of queueing. Health checks are never refused.
    #[arg(
        long,
        env = "ORDERFLOW_MAX_CONCURRENT_REQUESTS",
        default_value_t = 2048
    )]
    pub max_concurrent_requests: usize,

    /// Server streams (WatchOrder, SubscribeNotifications) open at once; past it a new one is
    /// refused at once with RESOURCE_EXHAUSTED. Each holds its slot until it ends.
    #[arg(long, env = "ORDERFLOW_MAX_OPEN_STREAMS", default_value_t = 10_000)]
    pub max_open_streams: usize,

    /// Largest request message accepted, in bytes; a larger one is refused with
    /// RESOURCE_EXHAUSTED before it is decoded.
    #[arg(long, env = "ORDERFLOW_MAX_MESSAGE_BYTES", default_value_t = 1024 * 1024)]
    pub max_message_bytes: usize,

    /// After SIGTERM, how long calls in flight may take to finish before the server stops
    /// anyway. Keep it below the pod's terminationGracePeriodSeconds.
    #[arg(long, env = "ORDERFLOW_DRAIN_TIMEOUT_MS", default_value_t = 20_000)]
    pub drain_timeout_ms: u64,

    #[command(flatten)]
    pub tls: crate::tls::ServerTlsArgs,

    #[command(flatten)]
    pub auth: crate::auth::AuthArgs,
}

/// A generated tonic server (e.g. `OrderServiceServer`), as [`Services`] takes it.
pub trait GrpcService:
    Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
    + NamedService
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> GrpcService for S where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// The gRPC services one process serves, with their names for health and reflection, and which
/// scope each of their RPCs needs once authentication is on.
pub struct Services {
    routes: Routes,
    names: Vec<&'static str>,
    policy: Policy,
}

impl Services {
    pub fn new<S>(service: S) -> Self
    where
        S: GrpcService,
        S::Future: Send + 'static,
    {
        Self {
            routes: Routes::new(service),
            names: vec![S::NAME],
            policy: Policy::default(),
        }
    }

    /// Which scope the RPCs need (unlisted ones: `admin`).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    pub fn and<S>(mut self, service: S) -> Self
    where
        S: GrpcService,
        S::Future: Send + 'static,
    {
        self.routes = self.routes.add_service(service);
        self.names.push(S::NAME);
        self
    }
}

/// Serves `services` on `listener` until `shutdown` completes, then lets in-flight calls finish
/// for at most `--drain-timeout-ms`. Every call is measured (RED metrics) and traced, shed past
/// `--max-concurrent-requests` in flight, authenticated and checked against the services'
/// policy (when authentication is on), and refused past `--max-message-bytes`.
pub async fn serve(
    services: Services,
    listener: TcpListener,
    serving: &ServingArgs,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), GrpcError> {
    let Services {
        routes,
        names,
        policy,
    } = services;
    let authenticator = serving.auth.authenticator()?;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    for name in &names {
        health_reporter
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }

    let reflection_v1 = reflection_builder(&names)
        .build_v1()
        .map_err(reflection_error)?;
    let reflection_v1alpha = reflection_builder(&names)
        .build_v1alpha()
        .map_err(reflection_error)?;

    let address = listener.local_addr().ok();
    let security = match (&serving.tls.tls_cert_file, &serving.tls.tls_client_ca_file) {
        (None, _) => "plaintext",
        (Some(_), None) => "TLS",
        (Some(_), Some(_)) => "mutual TLS",
    };
    tracing::info!(services = ?names, ?address, security, "gRPC server listening");

    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut known = names.clone();
    known.extend([
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]);
    let routes = routes
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let draining = tokio_util::sync::CancellationToken::new();
    let mut builder = Server::builder();
    if let Some(tls) = serving.tls.server_config()? {
        builder = builder.tls_config(tls)?;
    }
    let server = builder
        // The first layer is the outermost: shed calls are measured too.
        .layer(observe::ObserveLayer::new(known))
        .layer(gate::GateLayer::new(shed::Shed::new(
            serving.max_concurrent_requests.max(1),
        )))
        .layer(gate::GateLayer::new(authorize::Authorize::new(
            authenticator,
            policy,
        )))
        .layer(size_limit::SizeLimitLayer::new(serving.max_message_bytes))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, async {
            shutdown.await;
            for name in &names {
                health_reporter
                    .set_service_status(name, ServingStatus::NotServing)
                    .await;
            }
            tracing::info!(services = ?names, "gRPC server draining");
            draining.cancel();
        });
    let drain_limit = Duration::from_millis(serving.drain_timeout_ms);
    tokio::select! {
        served = server => served?,
        () = async { draining.cancelled().await; tokio::time::sleep(drain_limit).await } => {
            tracing::warn!(?drain_limit, "calls still in flight after the drain timeout; stopping anyway");
        }
    }
    Ok(())
}

impl ServingArgs {
    /// What `serve` would refuse, found without serving (`--check-config`): the authentication
    /// keys and token files, the TLS certificate, key and client CA (parsed), the limits.
    pub fn check(&self) -> Result<(), GrpcError> {
        self.auth.authenticator()?;
        if let Some(tls) = self.tls.server_config()? {
            Server::builder().tls_config(tls).map_err(|error| {
                // The reason is in the error's source; its own text is "transport error".
                let reason = std::error::Error::source(&error)
                    .map_or(error.to_string(), ToString::to_string);
                GrpcError::Config(format!("--tls-cert-file / --tls-key-file: {reason}"))
            })?;
        }
        if self.max_concurrent_requests == 0 || self.max_open_streams == 0 {
            return Err(GrpcError::Config(
                "--max-concurrent-requests and --max-open-streams must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Reflection over every contract (so message types resolve), listing only the services this
/// server actually serves. Both reflection services are listed, so both must be describable:
/// tonic adds only the version being built, and clients that resolve every listed service (k6)
/// stop at the other one.
fn reflection_builder(services: &[&str]) -> tonic_reflection::server::Builder<'static> {
    services
        .iter()
        .fold(
            tonic_reflection::server::Builder::configure()
                .include_reflection_service(false)
                .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(
                    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
                )
                .register_encoded_file_descriptor_set(orderflow_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
            |builder, service| builder.with_service_name(*service),
        )
        .with_service_name("grpc.health.v1.Health")
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .with_service_name("grpc.reflection.v1alpha.ServerReflection")
}

fn reflection_error(error: tonic_reflection::server::Error) -> GrpcError {
    GrpcError::Config(format!("building the reflection service: {error}"))
}

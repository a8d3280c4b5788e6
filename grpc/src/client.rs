//! What every gRPC call one orderflow service makes to another carries: a client span, whose
//! trace context goes along in the metadata so the callee's server span joins the caller's trace,
//! and the calling service's own bearer token when the callee requires one.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::{http, Service};
use tonic::transport::Channel;
use tracing::Instrument;

/// How a service reaches inventory-svc (order-api to reserve and settle stock, consumer-worker
/// to confirm the reservations of the orders it persists).
#[derive(Clone, Debug, clap::Args, serde::Serialize)]
pub struct InventoryClientArgs {
    /// URL of inventory-svc.
    #[arg(
        long,
        env = "ORDERFLOW_INVENTORY_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub inventory_url: String,

    /// PEM CA that signed inventory-svc's certificate (with an `https://` --inventory-url).
    #[arg(long, env = "ORDERFLOW_INVENTORY_CA_FILE")]
    pub inventory_ca_file: Option<String>,

    /// PEM certificate presented to inventory-svc (mutual TLS); with the key below.
    #[arg(long, env = "ORDERFLOW_INVENTORY_CLIENT_CERT_FILE")]
    pub inventory_client_cert_file: Option<String>,

    /// PEM private key of --inventory-client-cert-file.
    #[arg(long, env = "ORDERFLOW_INVENTORY_CLIENT_KEY_FILE")]
    pub inventory_client_key_file: Option<String>,

    /// File holding the bearer token presented to inventory-svc when it requires
    /// authentication (a token with scope `inventory`); never logged.
    #[arg(long, env = "ORDERFLOW_INVENTORY_TOKEN_FILE")]
    pub inventory_token_file: Option<PathBuf>,

    /// Longest any call to inventory-svc may take, whatever deadline it carries (each call
    /// also carries its own, usually shorter). Keep it above order-api's --create-timeout-ms.
    #[arg(long, env = "ORDERFLOW_INVENTORY_TIMEOUT_MS", default_value_t = 30_000)]
    pub inventory_timeout_ms: u64,
}

/// A channel to another orderflow service (wrap with [`Outbound::new`], then hand it to a
/// generated client such as `InventoryServiceClient::new`).
#[derive(Clone, Debug)]
pub struct Outbound {
    inner: Channel,
    authorization: Option<http::HeaderValue>,
}

/// HTTP/2 pings on an idle connection to another service: a peer that died or a link that was
/// cut is noticed within interval + timeout, not at the next call's deadline.
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Outbound {
    /// A lazily connected channel to inventory-svc as `args` describe it: TLS, the bearer
    /// token, a bound on every call, keepalive pings.
    pub fn to_inventory(args: &InventoryClientArgs) -> Result<Self, crate::GrpcError> {
        let mut endpoint = tonic::transport::Endpoint::from_shared(args.inventory_url.clone())
            .map_err(|error| {
                crate::GrpcError::Config(format!(
                    "--inventory-url {:?}: {error}",
                    args.inventory_url
                ))
            })?
            .connect_timeout(std::time::Duration::from_secs(2))
            .timeout(std::time::Duration::from_millis(
                args.inventory_timeout_ms.max(1),
            ))
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        if let Some(tls) = crate::tls::client_config(
            "inventory",
            args.inventory_ca_file.as_deref(),
            args.inventory_client_cert_file.as_deref(),
            args.inventory_client_key_file.as_deref(),
        )? {
            endpoint = endpoint.tls_config(tls).map_err(|error| {
                crate::GrpcError::Config(format!("TLS to --inventory-url: {error}"))
            })?;
        }
        let channel = Self::new(endpoint.connect_lazy());
        match &args.inventory_token_file {
            None => Ok(channel),
            Some(path) => {
                let token = std::fs::read_to_string(path).map_err(|error| {
                    crate::GrpcError::Config(format!(
                        "--inventory-token-file {}: {error}",
                        path.display()
                    ))
                })?;
                channel.with_bearer_token(&token)
            }
        }
    }

    pub fn new(inner: Channel) -> Self {
        Self {
            inner,
            authorization: None,
        }
    }

    /// Sends `token` as `authorization: Bearer <token>` on every call.
    pub fn with_bearer_token(mut self, token: &str) -> Result<Self, crate::GrpcError> {
        let mut value = http::HeaderValue::try_from(format!("Bearer {}", token.trim()))
            .map_err(|_| crate::GrpcError::Config("a bearer token must be ASCII".into()))?;
        value.set_sensitive(true);
        self.authorization = Some(value);
        Ok(self)
    }
}

impl Service<http::Request<Body>> for Outbound {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let path = request.uri().path().trim_start_matches('/');
        let (service, method) = path.split_once('/').unwrap_or((path, ""));
        let span = tracing::info_span!(
            "grpc client",
            "otel.name" = %path,
            "otel.kind" = "client",
            "rpc.system" = "grpc",
            "rpc.service" = service,
            "rpc.method" = method,
        );
        span.in_scope(|| orderflow_telemetry::trace_context::inject_http(request.headers_mut()));
        if let Some(authorization) = &self.authorization {
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, authorization.clone());
        }
        Box::pin(self.inner.call(request).instrument(span))
    }
}

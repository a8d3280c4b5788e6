//! The RED metrics of every gRPC call (rate, errors by status code, duration), taken around the
//! whole server so every service, the health checks and the calls shed at the door count alike;
//! and its server span, a child of the trace context the caller sent (health checks, polled by
//! every orchestrator, get none).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::codegen::{http, Service};
use tower::Layer;
use tracing::Instrument;

use orderflow_telemetry::metrics::{metrics, MethodLabels, RpcLabels};

/// Labels calls of the services in `known` by service and method; any other path counts as
/// `unknown`, so a caller inventing paths cannot multiply the series.
#[derive(Clone)]
pub struct ObserveLayer {
    known: Arc<[&'static str]>,
}

impl ObserveLayer {
    pub fn new(known: Vec<&'static str>) -> Self {
        Self {
            known: known.into(),
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            known: Arc::clone(&self.known),
        }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    known: Arc<[&'static str]>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Observe<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let call = Call::start(request.uri().path(), &self.known);
        orderflow_telemetry::trace_context::set_parent(
            &call.span,
            orderflow_telemetry::trace_context::extract_http(request.headers()),
        );
        let span = call.span.clone();
        let answer = span.in_scope(|| self.inner.call(request));
        Box::pin(
            async move {
                let response = answer.await?;
                // Errors of unary calls come as headers only ("trailers-only"); everything else
                // carries its status in the trailers at the end of the body.
                let call = match status_code(response.headers()) {
                    Some(code) => {
                        call.finish(code);
                        None
                    }
                    None => Some(call),
                };
                Ok(response.map(|inner| ObservedBody { inner, call }))
            }
            .instrument(span),
        )
    }
}

/// One call being measured; recorded when dropped, as `Cancelled` if no status was seen (the
/// caller went away before the end).
struct Call {
    labels: MethodLabels,
    started: Instant,
    code: Option<tonic::Code>,
    /// Lasts as long as the call, streams included.
    span: tracing::Span,
}

const HEALTH: &str = "grpc.health.v1.Health";

impl Call {
    fn start(path: &str, known: &[&'static str]) -> Self {
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .filter(|(service, _)| known.contains(service))
            .unwrap_or(("unknown", "unknown"));
        let span = if service == HEALTH {
            tracing::Span::none()
        } else {
            tracing::info_span!(
                "grpc",
                "otel.name" = %format_args!("{service}/{method}"),
                "otel.kind" = "server",
                "otel.status_code" = tracing::field::Empty,
                "rpc.system" = "grpc",
                "rpc.service" = service,
                "rpc.method" = method,
                "rpc.grpc.status_code" = tracing::field::Empty,
            )
        };
        Self {
            labels: MethodLabels {
                service: service.to_owned(),
                method: method.to_owned(),
            },
            started: Instant::now(),
            code: None,
            span,
        }
    }

    /// Records the call as answered with `code`.
    fn finish(mut self, code: tonic::Code) {
        self.code = Some(code);
        drop(self);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let metrics = metrics();
        metrics
            .rpc_duration
            .get_or_create(&self.labels)
            .observe(self.started.elapsed().as_secs_f64());
        let code = self.code.take().unwrap_or(tonic::Code::Cancelled);
        metrics
            .rpc_requests
            .get_or_create(&RpcLabels {
                service: self.labels.service.clone(),
                method: self.labels.method.clone(),
                code: code_name(code),
            })
            .inc();
        self.span.record("rpc.grpc.status_code", code as i32);
        if is_server_error(code) {
            self.span.record("otel.status_code", "error");
        }
    }
}

fn status_code(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let number: i32 = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    Some(tonic::Code::from_i32(number))
}

fn code_name(code: tonic::Code) -> String {
    match code {
        tonic::Code::Ok => "OK".to_owned(),
        code => format!("{code:?}"),
    }
}

/// The codes OpenTelemetry's RPC conventions count as a server's own failure; the others are
/// answers about the request (not found, invalid, refused), not errors of the span.
fn is_server_error(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// A response body that records its call once the status trailers pass through it.
pub struct ObservedBody<B> {
    inner: B,
    call: Option<Call>,
}

impl<B> HttpBody for ObservedBody<B>
where
    B: HttpBody + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let code = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame.trailers_ref().map(status_code),
            Poll::Ready(Some(Err(_))) => Some(Some(tonic::Code::Internal)),
            Poll::Ready(None) => Some(None),
            Poll::Pending => None,
        };
        if let Some(code) = code {
            if let Some(call) = this.call.take() {
                call.finish(code.unwrap_or(tonic::Code::Unknown));
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_unknown_services_share_one_label() {
        let known = ["orderflow.order.v1.OrderService"];
        let call = Call::start("/orderflow.order.v1.OrderService/CreateOrder", &known);
        assert_eq!(call.labels.service, "orderflow.order.v1.OrderService");
        assert_eq!(call.labels.method, "CreateOrder");
        let forged = Call::start("/made.up.Service/Anything", &known);
        assert_eq!(
            (
                forged.labels.service.as_str(),
                forged.labels.method.as_str()
            ),
            ("unknown", "unknown")
        );
    }

    #[test]
    fn status_codes_are_named() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(status_code(&headers), None);
        headers.insert("grpc-status", http::HeaderValue::from_static("0"));
        assert_eq!(status_code(&headers).map(code_name).as_deref(), Some("OK"));
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
        assert_eq!(
            status_code(&headers).map(code_name).as_deref(),
            Some("ResourceExhausted")
        );
    }
}

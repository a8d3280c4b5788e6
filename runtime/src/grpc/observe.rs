//! The RED metrics of every gRPC call (rate, errors by status code, duration), taken around the
//! whole server so every service, the health checks and the calls shed at the door count alike.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::codegen::{http, Service};
use tower::Layer;

use crate::metrics::{metrics, MethodLabels, RpcLabels};

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
        let answer = self.inner.call(request);
        Box::pin(async move {
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
        })
    }
}

/// One call being measured; recorded when dropped, as `Cancelled` if no status was seen (the
/// caller went away before the end).
struct Call {
    labels: MethodLabels,
    started: Instant,
    code: Option<String>,
}

impl Call {
    fn start(path: &str, known: &[&'static str]) -> Self {
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .filter(|(service, _)| known.contains(service))
            .unwrap_or(("unknown", "unknown"));
        Self {
            labels: MethodLabels {
                service: service.to_owned(),
                method: method.to_owned(),
            },
            started: Instant::now(),
            code: None,
        }
    }

    /// Records the call as answered with `code`.
    fn finish(mut self, code: String) {
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
        metrics
            .rpc_requests
            .get_or_create(&RpcLabels {
                service: self.labels.service.clone(),
                method: self.labels.method.clone(),
                code: self.code.take().unwrap_or_else(|| "Cancelled".to_owned()),
            })
            .inc();
    }
}

fn status_code(headers: &http::HeaderMap) -> Option<String> {
    let number: i32 = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    Some(match tonic::Code::from_i32(number) {
        tonic::Code::Ok => "OK".to_owned(),
        code => format!("{code:?}"),
    })
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
            Poll::Ready(Some(Err(_))) => Some(Some("Internal".to_owned())),
            Poll::Ready(None) => Some(None),
            Poll::Pending => None,
        };
        if let Some(code) = code {
            if let Some(call) = this.call.take() {
                call.finish(code.unwrap_or_else(|| "Unknown".to_owned()));
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
        assert_eq!(status_code(&headers).as_deref(), Some("OK"));
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
        assert_eq!(status_code(&headers).as_deref(), Some("ResourceExhausted"));
    }
}

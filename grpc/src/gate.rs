//! What load shedding and authentication have in common: a check that runs before a call reaches
//! its service and either lets it through (possibly holding something until the answer's headers
//! are out) or answers at once with a gRPC status, without decoding the request.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::codegen::{http, Service};
use tower::Layer;

/// The check of one gate.
pub trait Check: Clone + Send + Sync + 'static {
    /// Held from admission until the inner service answered (e.g. a concurrency permit).
    type Pass: Send + 'static;

    /// Admits `request` (and may annotate it), or refuses it with the status to answer.
    fn check<B>(&self, request: &mut http::Request<B>) -> Result<Self::Pass, tonic::Status>;
}

#[derive(Clone)]
pub struct GateLayer<C> {
    check: C,
}

impl<C> GateLayer<C> {
    pub fn new(check: C) -> Self {
        Self { check }
    }
}

impl<S, C: Clone> Layer<S> for GateLayer<C> {
    type Service = Gate<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Gate {
            inner,
            check: self.check.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Gate<S, C> {
    inner: S,
    check: C,
}

impl<S, C, ReqBody, ResBody> Service<http::Request<ReqBody>> for Gate<S, C>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
    C: Check,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        match self.check.check(&mut request) {
            Ok(pass) => {
                let answer = self.inner.call(request);
                Box::pin(async move {
                    let response = answer.await;
                    drop(pass);
                    response
                })
            }
            Err(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
        }
    }
}

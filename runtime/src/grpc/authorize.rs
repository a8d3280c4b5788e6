//! Authentication and scope checks before a call reaches its service (see [`crate::auth`]):
//! a call without a valid bearer token is refused with UNAUTHENTICATED, one whose token lacks
//! the method's scope with PERMISSION_DENIED, before its message is even decoded. The admitted
//! caller goes into the request's extensions for the service's ownership checks. Health checks
//! (orchestrators' probes) and reflection (the API's shape, public anyway) need no token.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::{http, Service};
use tower::Layer;

use crate::auth::{Authenticator, Policy};

const OPEN_PREFIXES: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Lets every call through when authentication is off (`authenticator` is `None`).
#[derive(Clone)]
pub struct AuthorizeLayer {
    authenticator: Option<Authenticator>,
    policy: Arc<Policy>,
}

impl AuthorizeLayer {
    pub fn new(authenticator: Option<Authenticator>, policy: Policy) -> Self {
        Self {
            authenticator,
            policy: Arc::new(policy),
        }
    }
}

impl<S> Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authorize<S> {
    inner: S,
    layer: AuthorizeLayer,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Authorize<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let path = request.uri().path();
        let Some(authenticator) = &self.layer.authenticator else {
            return Box::pin(self.inner.call(request));
        };
        if OPEN_PREFIXES.iter().any(|open| path.starts_with(open)) {
            return Box::pin(self.inner.call(request));
        }
        let authorization = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok());
        match authenticator.admit(&self.layer.policy, path, authorization) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Box::pin(self.inner.call(request))
            }
            Err(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
        }
    }
}

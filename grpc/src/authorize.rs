//! Authentication and scope checks before a call reaches its service (see [`crate::auth`]):
//! a call without a valid bearer token is refused with UNAUTHENTICATED, one whose token lacks
//! the method's scope with PERMISSION_DENIED, before its message is even decoded. The admitted
//! caller goes into the request's extensions for the service's ownership checks. Health checks
//! (orchestrators' probes) and reflection (the API's shape, public anyway) need no token.

use std::sync::Arc;

use tonic::codegen::http;

use super::gate::Check;
use crate::auth::{Authenticator, Policy};

const OPEN_PREFIXES: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Lets every call through when authentication is off (`authenticator` is `None`).
#[derive(Clone)]
pub struct Authorize {
    authenticator: Option<Authenticator>,
    policy: Arc<Policy>,
}

impl Authorize {
    pub fn new(authenticator: Option<Authenticator>, policy: Policy) -> Self {
        Self {
            authenticator,
            policy: Arc::new(policy),
        }
    }
}

impl Check for Authorize {
    type Pass = ();

    fn check<B>(&self, request: &mut http::Request<B>) -> Result<(), tonic::Status> {
        let Some(authenticator) = &self.authenticator else {
            return Ok(());
        };
        let path = request.uri().path();
        if OPEN_PREFIXES.iter().any(|open| path.starts_with(open)) {
            return Ok(());
        }
        let authorization = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok());
        let caller = authenticator.admit(&self.policy, path, authorization)?;
        request.extensions_mut().insert(caller);
        Ok(())
    }
}

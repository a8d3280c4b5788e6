//! Who is calling, and what they may do. Every call but health checks and reflection carries
//! `authorization: Bearer <token>`; the token is a JWT verified against a configured key
//! (`--auth-jwt-key-file`) or one of the static tokens of a file (`--auth-tokens-file`, e.g. a
//! mounted Kubernetes Secret). Either way it names a subject (the user id of a buyer) and the
//! scopes it grants:
//!
//! | scope | grants |
//! |---|---|
//! | `orders` | a buyer's own orders and notifications; reading stock |
//! | `inventory` | the reservation RPCs one service calls on another (Reserve, Release, Commit) |
//! | `admin` | everything, for anyone: operator RPCs (SetStock, ShipOrder, …), any user's orders |
//!
//! Each service lists which of the three each of its RPCs needs ([`Policy`]); the gRPC server
//! checks that before the call runs ([`crate`]), and puts the [`Caller`] in the request's
//! extensions, from which the service checks ownership ([`Caller::may_act_for`]).
//!
//! With neither option set, authentication is off (the local default, announced at start-up):
//! every caller may do everything. `--environment production` refuses to start that way.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sha2::{Digest, Sha256};
use tonic::Status;

use crate::GrpcError;

pub const SCOPE_ORDERS: &str = "orders";
pub const SCOPE_INVENTORY: &str = "inventory";
pub const SCOPE_ADMIN: &str = "admin";

/// Whether this is a production deployment: there, nothing insecure is allowed by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Environment {
    Development,
    Production,
}

#[derive(Clone, Debug, clap::Args, serde::Serialize)]
pub struct AuthArgs {
    /// `development` (auth may be off) or `production` (the server refuses to start without
    /// authentication).
    #[arg(long, env = "ORDERFLOW_ENVIRONMENT", value_enum, default_value_t = Environment::Development)]
    pub environment: Environment,

    /// Verify bearer JWTs with this key: a PEM public key for RS256/ES256, or the shared
    /// secret's bytes for HS256 (see `--auth-jwt-algorithm`).
    #[arg(long, env = "ORDERFLOW_AUTH_JWT_KEY_FILE")]
    pub auth_jwt_key_file: Option<PathBuf>,

    /// The JWT signature algorithm: RS256, ES256 or HS256.
    #[arg(long, env = "ORDERFLOW_AUTH_JWT_ALGORITHM", default_value = "RS256")]
    pub auth_jwt_algorithm: String,

    /// Accept only JWTs from this issuer (`iss`); empty accepts any.
    #[arg(long, env = "ORDERFLOW_AUTH_JWT_ISSUER", default_value = "")]
    pub auth_jwt_issuer: String,

    /// Accept only JWTs for this audience (`aud`); empty accepts any.
    #[arg(long, env = "ORDERFLOW_AUTH_JWT_AUDIENCE", default_value = "")]
    pub auth_jwt_audience: String,

    /// Static bearer tokens, one per line: `<token> <subject> <scope>[,<scope>…]` (`#` starts a
    /// comment). The tokens are kept only as SHA-256 digests.
    #[arg(long, env = "ORDERFLOW_AUTH_TOKENS_FILE")]
    pub auth_tokens_file: Option<PathBuf>,
}

/// The authenticated caller of one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The token's subject: a buyer's user id, or the name of a service or an operator.
    pub subject: String,
    pub scopes: Vec<String>,
}

impl Caller {
    /// Everyone, when authentication is off.
    fn unrestricted() -> Self {
        Self {
            subject: String::new(),
            scopes: vec![SCOPE_ADMIN.to_owned()],
        }
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|granted| granted == scope)
    }

    pub fn is_admin(&self) -> bool {
        self.has_scope(SCOPE_ADMIN)
    }

    /// The caller of `request` (unrestricted when authentication is off).
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        request
            .extensions()
            .get::<Self>()
            .cloned()
            .unwrap_or_else(Self::unrestricted)
    }

    /// Whether the caller may act on the orders of `user_id`: its own, or anyone's for admins.
    pub fn may_act_for(&self, user_id: &str) -> Result<(), Status> {
        if self.is_admin() || self.subject == user_id {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "the token of {:?} may not act on the orders of user {user_id:?}",
                self.subject
            )))
        }
    }
}

/// Which scope each RPC needs (any one of them; `admin` always suffices). RPCs of a service that
/// are not listed need `admin`.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    methods: HashMap<String, &'static [&'static str]>,
}

impl Policy {
    /// `methods` of `service`, e.g. `("CreateOrder", &[SCOPE_ORDERS])`.
    pub fn service(mut self, service: &str, methods: &[(&str, &'static [&'static str])]) -> Self {
        for (method, scopes) in methods {
            self.methods.insert(format!("/{service}/{method}"), scopes);
        }
        self
    }

    /// Checks `caller` may call `path` (`/package.Service/Method`).
    fn allow(&self, path: &str, caller: &Caller) -> Result<(), Status> {
        let needed = self.methods.get(path).copied().unwrap_or(&[]);
        if caller.is_admin() || needed.iter().any(|scope| caller.has_scope(scope)) {
            return Ok(());
        }
        let needed = if needed.is_empty() {
            SCOPE_ADMIN.to_owned()
        } else {
            needed.join(" or ")
        };
        Err(Status::permission_denied(format!(
            "{} needs scope {needed}; the token of {:?} grants {:?}",
            path.rsplit('/').next().unwrap_or(path),
            caller.subject,
            caller.scopes.join(" ")
        )))
    }
}

/// Verifies bearer tokens.
#[derive(Clone)]
pub struct Authenticator {
    jwt: Option<Arc<(DecodingKey, Validation)>>,
    /// SHA-256 of each static token → its caller.
    tokens: Arc<HashMap<[u8; 32], Caller>>,
}

impl AuthArgs {
    /// The authenticator these settings describe; `None` when authentication is off (refused in
    /// production).
    pub fn authenticator(&self) -> Result<Option<Authenticator>, GrpcError> {
        if self.auth_jwt_key_file.is_none() && self.auth_tokens_file.is_none() {
            if self.environment == Environment::Production {
                return Err(GrpcError::Config(
                    "--environment production needs authentication: set --auth-jwt-key-file \
                     or --auth-tokens-file"
                        .into(),
                ));
            }
            tracing::warn!("authentication is off (development): every caller may call every RPC");
            return Ok(None);
        }
        let jwt = self
            .auth_jwt_key_file
            .as_ref()
            .map(|path| self.jwt_verifier(path))
            .transpose()?
            .map(Arc::new);
        let tokens = match &self.auth_tokens_file {
            Some(path) => parse_tokens(&read(path, "--auth-tokens-file")?)
                .map_err(|reason| GrpcError::Config(format!("--auth-tokens-file: {reason}")))?,
            None => HashMap::new(),
        };
        tracing::info!(
            jwt = jwt.is_some(),
            static_tokens = tokens.len(),
            "authentication is on"
        );
        Ok(Some(Authenticator {
            jwt,
            tokens: Arc::new(tokens),
        }))
    }

    fn jwt_verifier(&self, path: &PathBuf) -> Result<(DecodingKey, Validation), GrpcError> {
        let key = read(path, "--auth-jwt-key-file")?;
        let invalid = |reason: String| GrpcError::Config(format!("--auth-jwt-key-file: {reason}"));
        let (algorithm, key) = match self.auth_jwt_algorithm.to_ascii_uppercase().as_str() {
            "RS256" => (
                Algorithm::RS256,
                DecodingKey::from_rsa_pem(&key).map_err(|error| invalid(error.to_string()))?,
            ),
            "ES256" => (
                Algorithm::ES256,
                DecodingKey::from_ec_pem(&key).map_err(|error| invalid(error.to_string()))?,
            ),
            "HS256" => (Algorithm::HS256, DecodingKey::from_secret(trim_end(&key))),
            other => {
                return Err(GrpcError::Config(format!(
                    "--auth-jwt-algorithm {other:?}: must be RS256, ES256 or HS256"
                )))
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 30;
        if !self.auth_jwt_issuer.is_empty() {
            validation.set_issuer(&[&self.auth_jwt_issuer]);
        }
        if self.auth_jwt_audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&[&self.auth_jwt_audience]);
        }
        Ok((key, validation))
    }
}

fn read(path: &PathBuf, flag: &str) -> Result<Vec<u8>, GrpcError> {
    std::fs::read(path)
        .map_err(|error| GrpcError::Config(format!("{flag} {}: {error}", path.display())))
}

/// A secret file usually ends with a newline that is not part of the secret.
fn trim_end(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|byte| !byte.is_ascii_whitespace())
        .map_or(0, |last| last + 1);
    &bytes[..end]
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn parse_tokens(file: &[u8]) -> Result<HashMap<[u8; 32], Caller>, String> {
    let text = std::str::from_utf8(file).map_err(|_| "not UTF-8 text".to_owned())?;
    let mut tokens = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [token, subject, scopes] = fields[..] else {
            return Err(format!(
                "line {}: expected `<token> <subject> <scope>[,<scope>…]`",
                number + 1
            ));
        };
        let caller = Caller {
            subject: subject.to_owned(),
            scopes: scopes.split(',').map(str::to_owned).collect(),
        };
        if tokens.insert(digest(token), caller).is_some() {
            return Err(format!("line {}: a token listed twice", number + 1));
        }
    }
    Ok(tokens)
}

impl Authenticator {
    /// The caller presenting `authorization` (the header's value), or why it is refused
    /// (`UNAUTHENTICATED`).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, Status> {
        let Some(header) = authorization else {
            return Err(Status::unauthenticated(
                "missing credentials: send the header `authorization: Bearer <token>`",
            ));
        };
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated("the authorization header must be `Bearer <token>`")
            })?;
        if let Some(caller) = self.tokens.get(&digest(token)) {
            return Ok(caller.clone());
        }
        let Some(jwt) = &self.jwt else {
            return Err(Status::unauthenticated("unknown bearer token"));
        };
        let (key, validation) = &**jwt;
        let claims = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token, key, validation,
        )
        .map_err(|error| {
            use jsonwebtoken::errors::ErrorKind;
            Status::unauthenticated(match error.kind() {
                ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
                ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".to_owned(),
                ErrorKind::InvalidIssuer => "the token's issuer is not accepted".to_owned(),
                ErrorKind::InvalidAudience => "the token's audience is not this service".to_owned(),
                _ => format!("invalid token: {error}"),
            })
        })?
        .claims;
        Ok(Caller {
            subject: claims
                .get("sub")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            scopes: scopes_of(&claims),
        })
    }

    /// Authenticates the call to `path` and checks `policy` allows it.
    pub fn admit(
        &self,
        policy: &Policy,
        path: &str,
        authorization: Option<&str>,
    ) -> Result<Caller, Status> {
        let caller = self.authenticate(authorization)?;
        policy.allow(path, &caller)?;
        Ok(caller)
    }
}

/// OAuth 2 `scope` (space-separated) or `scp` (a list, as some issuers write it).
fn scopes_of(claims: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    match (claims.get("scope"), claims.get("scp")) {
        (Some(serde_json::Value::String(scope)), _) => {
            scope.split_whitespace().map(str::to_owned).collect()
        }
        (_, Some(serde_json::Value::Array(scopes))) => scopes
            .iter()
            .filter_map(serde_json::Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator(tokens: &str) -> Authenticator {
        Authenticator {
            jwt: None,
            tokens: Arc::new(parse_tokens(tokens.as_bytes()).expect("a valid tokens file")),
        }
    }

    const ORDERS: &[&str] = &[SCOPE_ORDERS];

    fn policy() -> Policy {
        Policy::default().service(
            "orderflow.order.v1.OrderService",
            &[("CreateOrder", ORDERS)],
        )
    }

    #[test]
    fn static_tokens_name_their_caller_and_scopes() {
        let auth = authenticator("# buyers\nt-alice alice orders\nt-ops ops admin,orders\n");
        assert_eq!(
            auth.authenticate(Some("Bearer t-alice")).ok(),
            Some(Caller {
                subject: "alice".into(),
                scopes: vec!["orders".into()]
            })
        );
        assert!(auth
            .authenticate(Some("Bearer t-ops"))
            .is_ok_and(|c| c.is_admin()));
        let unknown = auth.authenticate(Some("Bearer nope")).unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::Unauthenticated);
        let missing = auth.authenticate(None).unwrap_err();
        assert!(missing.message().contains("authorization: Bearer"));
        let malformed = auth.authenticate(Some("Basic abc")).unwrap_err();
        assert_eq!(malformed.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn a_bad_tokens_file_names_the_line() {
        assert_eq!(
            parse_tokens(b"a b c\nbroken line\n").unwrap_err(),
            "line 2: expected `<token> <subject> <scope>[,<scope>…]`"
        );
        assert!(parse_tokens(b"a b c\na d e\n")
            .unwrap_err()
            .contains("twice"));
    }

    #[test]
    fn the_policy_names_the_scope_a_method_needs() {
        let auth = authenticator("t-alice alice orders\nt-svc order-api inventory\n");
        let create = "/orderflow.order.v1.OrderService/CreateOrder";
        let ship = "/orderflow.order.v1.OrderService/ShipOrder";
        assert!(auth
            .admit(&policy(), create, Some("Bearer t-alice"))
            .is_ok());
        let denied = auth
            .admit(&policy(), ship, Some("Bearer t-alice"))
            .unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(
            denied.message().contains("ShipOrder needs scope admin"),
            "{denied:?}"
        );
        let wrong = auth
            .admit(&policy(), create, Some("Bearer t-svc"))
            .unwrap_err();
        assert!(wrong.message().contains("needs scope orders"), "{wrong:?}");
    }

    #[test]
    fn buyers_act_only_for_themselves() {
        let alice = Caller {
            subject: "alice".into(),
            scopes: vec![SCOPE_ORDERS.into()],
        };
        assert!(alice.may_act_for("alice").is_ok());
        assert_eq!(
            alice.may_act_for("bob").unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        assert!(Caller::unrestricted().may_act_for("bob").is_ok());
    }

    #[test]
    fn production_refuses_to_start_without_authentication() {
        let args = AuthArgs {
            environment: Environment::Production,
            auth_jwt_key_file: None,
            auth_jwt_algorithm: "RS256".into(),
            auth_jwt_issuer: String::new(),
            auth_jwt_audience: String::new(),
            auth_tokens_file: None,
        };
        let refused = args.authenticator().err().expect("refused");
        assert!(refused.to_string().contains("--environment production"));
        let development = AuthArgs {
            environment: Environment::Development,
            ..args
        };
        assert!(development.authenticator().is_ok_and(|auth| auth.is_none()));
    }

    #[test]
    fn jwt_scopes_come_from_scope_or_scp() {
        let claims = |json: &str| -> serde_json::Map<String, serde_json::Value> {
            serde_json::from_str(json).expect("JSON claims")
        };
        assert_eq!(
            scopes_of(&claims(r#"{"scope":"orders admin"}"#)),
            ["orders", "admin"]
        );
        assert_eq!(scopes_of(&claims(r#"{"scp":["orders"]}"#)), ["orders"]);
        assert!(scopes_of(&claims("{}")).is_empty());
    }
}

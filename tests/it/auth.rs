//! Authentication and authorization end to end: bearer tokens (static ones from a file, and
//! ES256 JWTs verified against a public key), scopes per RPC, buyers confined to their own
//! orders and notifications, order-api presenting its own token to inventory-svc, and
//! production mode refusing to run without authentication.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use orderflow_grpc::auth::AuthArgs;
use orderflow_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use orderflow_proto::inventory::v1::{
    GetStockRequest, ReserveItem, ReserveRequest, SetStockRequest,
};
use orderflow_proto::notify::v1::notification_service_client::NotificationServiceClient;
use orderflow_proto::notify::v1::ListNotificationsRequest;
use orderflow_proto::order::v1::order_service_client::OrderServiceClient;
use orderflow_proto::order::v1::{
    BatchGetOrdersRequest, GetOrderRequest, ListOrdersRequest, Order, PayOrderRequest,
    ShipOrderRequest,
};
use orderflow_tests::stack::{channel, no_authentication, Options, Stack};
use orderflow_tests::{assert_status, order_request};
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// A directory of this test's secret files.
fn secrets_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("orderflow-auth-{}", orderflow_tests::unique_id()));
    std::fs::create_dir_all(&dir).expect("a directory for the test's secrets");
    dir
}

fn write(dir: &std::path::Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("writing a secret file");
    path
}

/// `message` with `authorization: Bearer <token>`.
fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("an ASCII header"),
    );
    request
}

fn orders(stack: &Stack) -> OrderServiceClient<Channel> {
    stack.order.clone()
}

fn inventory(stack: &Stack) -> InventoryServiceClient<Channel> {
    InventoryServiceClient::new(channel(stack.addresses.inventory))
}

async fn set_stock(stack: &Stack, token: &str, sku: &str) -> Result<(), tonic::Status> {
    inventory(stack)
        .set_stock(with_token(
            SetStockRequest {
                sku: sku.into(),
                quantity: 10,
                price_cents: 100,
            },
            token,
        ))
        .await
        .map(|_| ())
}

async fn place(stack: &Stack, token: &str, key: &str, user: &str) -> Result<Order, tonic::Status> {
    orders(stack)
        .create_order(with_token(
            order_request(key, user, &[("AUTH-1", 1)]),
            token,
        ))
        .await
        .map(|answer| answer.into_inner().order.expect("an order"))
}

async fn get(stack: &Stack, token: &str, order_id: &str) -> Result<Order, tonic::Status> {
    orders(stack)
        .get_order(with_token(
            GetOrderRequest {
                order_id: order_id.into(),
            },
            token,
        ))
        .await
        .map(|answer| answer.into_inner().order.expect("an order"))
}

#[tokio::test]
async fn static_tokens_scopes_and_ownership() {
    let dir = secrets_dir();
    let tokens = write(
        &dir,
        "tokens",
        "# token subject scopes\n\
         t-alice alice orders\n\
         t-bob bob orders\n\
         t-ops ops admin\n\
         t-order-api order-api inventory\n\
         t-worker consumer-worker inventory\n",
    );
    let service_token = write(&dir, "order-api-token", "t-order-api\n");
    let worker_token = write(&dir, "worker-token", "t-worker\n");
    let auth = AuthArgs {
        auth_tokens_file: Some(tokens),
        ..no_authentication()
    };
    let stack = Stack::start_with(Options::authenticated(auth, service_token, worker_token)).await;

    // No token, a malformed one, an unknown one: UNAUTHENTICATED, before anything is done.
    let missing = orders(&stack)
        .create_order(order_request("k0", "alice", &[("AUTH-1", 1)]))
        .await
        .unwrap_err();
    assert_status(
        "no token",
        &missing,
        Code::Unauthenticated,
        "authorization: Bearer",
    );
    let mut basic = tonic::Request::new(order_request("k0", "alice", &[("AUTH-1", 1)]));
    basic.metadata_mut().insert(
        "authorization",
        "Basic YWxpY2U6eA==".parse().expect("ASCII"),
    );
    let malformed = orders(&stack).create_order(basic).await.unwrap_err();
    assert_status(
        "not a bearer token",
        &malformed,
        Code::Unauthenticated,
        "Bearer <token>",
    );
    let unknown = place(&stack, "t-nobody", "k0", "alice").await.unwrap_err();
    assert_status(
        "unknown token",
        &unknown,
        Code::Unauthenticated,
        "unknown bearer token",
    );

    // Health checks need no token (orchestrators' probes).
    let health = HealthClient::new(channel(stack.addresses.order_api))
        .check(HealthCheckRequest {
            service: "orderflow.order.v1.OrderService".into(),
        })
        .await;
    assert!(health.is_ok(), "{health:?}");

    // Operator RPCs need admin.
    let denied = set_stock(&stack, "t-alice", "AUTH-1").await.unwrap_err();
    assert_status(
        "a buyer setting stock",
        &denied,
        Code::PermissionDenied,
        "SetStock needs scope admin",
    );
    set_stock(&stack, "t-ops", "AUTH-1")
        .await
        .expect("an operator sets stock");

    // A buyer reads stock, places and reads its own orders; order-api reserves with its own
    // token (scope inventory), which a buyer's token cannot do directly.
    inventory(&stack)
        .get_stock(with_token(
            GetStockRequest {
                sku: "AUTH-1".into(),
            },
            "t-bob",
        ))
        .await
        .expect("a buyer reads stock");
    let order = place(&stack, "t-alice", "k1", "alice")
        .await
        .expect("alice orders");
    assert_eq!(
        get(&stack, "t-alice", &order.order_id).await.expect("hers"),
        order
    );
    let reserve = inventory(&stack)
        .reserve(with_token(
            ReserveRequest {
                order_id: uuid::Uuid::now_v7().to_string(),
                items: vec![ReserveItem {
                    sku: "AUTH-1".into(),
                    quantity: 1,
                }],
            },
            "t-alice",
        ))
        .await
        .unwrap_err();
    assert_status(
        "a buyer reserving directly",
        &reserve,
        Code::PermissionDenied,
        "Reserve needs scope inventory",
    );

    // Nobody else's orders: not placing for, reading, listing, paying or watching them.
    let for_bob = place(&stack, "t-alice", "k2", "bob").await.unwrap_err();
    assert_status(
        "alice ordering for bob",
        &for_bob,
        Code::PermissionDenied,
        "\"bob\"",
    );
    let read = get(&stack, "t-bob", &order.order_id).await.unwrap_err();
    assert_status(
        "bob reading alice's order",
        &read,
        Code::PermissionDenied,
        "\"alice\"",
    );
    let batch = orders(&stack)
        .batch_get_orders(with_token(
            BatchGetOrdersRequest {
                order_ids: vec![order.order_id.clone()],
            },
            "t-bob",
        ))
        .await
        .unwrap_err();
    assert_status(
        "bob batch-reading alice's order",
        &batch,
        Code::PermissionDenied,
        &order.order_id,
    );
    let list = orders(&stack)
        .list_orders(with_token(
            ListOrdersRequest {
                user_id: "alice".into(),
                page_size: 10,
                page_token: String::new(),
            },
            "t-bob",
        ))
        .await
        .unwrap_err();
    assert_status(
        "bob listing alice's orders",
        &list,
        Code::PermissionDenied,
        "\"alice\"",
    );
    let pay = |token: &'static str| {
        let (mut client, order) = (orders(&stack), order.clone());
        async move {
            client
                .pay_order(with_token(
                    PayOrderRequest {
                        order_id: order.order_id.clone(),
                        payment_id: "pay-auth".into(),
                        amount_cents: order.total_cents,
                    },
                    token,
                ))
                .await
        }
    };
    let paid_by_bob = pay("t-bob").await.unwrap_err();
    assert_status(
        "bob paying alice's order",
        &paid_by_bob,
        Code::PermissionDenied,
        "\"alice\"",
    );
    pay("t-alice").await.expect("alice pays her own order");
    let notifications = NotificationServiceClient::new(channel(stack.addresses.notify))
        .list_notifications(with_token(
            ListNotificationsRequest {
                user_id: "alice".into(),
                page_size: 5,
                page_token: String::new(),
            },
            "t-bob",
        ))
        .await
        .unwrap_err();
    assert_status(
        "bob reading alice's notifications",
        &notifications,
        Code::PermissionDenied,
        "\"alice\"",
    );

    // Shipping is for operators, who may act on anyone's order.
    let ship = |token: &'static str| {
        let (mut client, order_id) = (orders(&stack), order.order_id.clone());
        async move {
            client
                .ship_order(with_token(
                    ShipOrderRequest {
                        order_id,
                        tracking_number: "SF-AUTH".into(),
                    },
                    token,
                ))
                .await
        }
    };
    let shipped_by_alice = ship("t-alice").await.unwrap_err();
    assert_status(
        "a buyer shipping",
        &shipped_by_alice,
        Code::PermissionDenied,
        "ShipOrder needs scope admin",
    );
    ship("t-ops").await.expect("an operator ships");
    assert!(get(&stack, "t-ops", &order.order_id).await.is_ok());
    // consumer-worker confirms each order's reservation with its own token before it records
    // the order's event as applied.
    orderflow_tests::eventually(
        "the worker to apply the order's event",
        std::time::Duration::from_secs(30),
        || async {
            let applied: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM processed_events \
                 WHERE topic = 'order-created' AND order_id = $1::uuid",
            )
            .bind(&order.order_id)
            .fetch_one(&stack.db)
            .await
            .expect("counting applied events");
            (applied == 1).then_some(())
        },
    )
    .await;
    stack.stop().await;
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// An ES256 JWT for `subject` with `scope`, from `issuer`, expiring `expires_in` from now
/// (negative: already expired).
fn jwt(key: &EncodingKey, subject: &str, scope: &str, issuer: &str, expires_in: i64) -> String {
    let claims = serde_json::json!({
        "sub": subject,
        "scope": scope,
        "iss": issuer,
        "exp": now().saturating_add_signed(expires_in),
        "iat": now(),
    });
    jsonwebtoken::encode(&Header::new(jsonwebtoken::Algorithm::ES256), &claims, key)
        .expect("signing a JWT")
}

#[tokio::test]
async fn jwts_are_verified_and_expire() {
    let signer = rcgen::KeyPair::generate().expect("an ES256 key pair");
    let key = EncodingKey::from_ec_pem(signer.serialize_pem().as_bytes()).expect("the private key");
    let dir = secrets_dir();
    let public_key = write(&dir, "jwt.pem", &signer.public_key_pem());
    let issuer = "https://login.example.com";
    let service_token = write(
        &dir,
        "order-api-token",
        &jwt(&key, "order-api", "inventory", issuer, 3600),
    );
    let worker_token = write(
        &dir,
        "worker-token",
        &jwt(&key, "consumer-worker", "inventory", issuer, 3600),
    );
    let auth = AuthArgs {
        auth_jwt_key_file: Some(public_key),
        auth_jwt_algorithm: "ES256".into(),
        auth_jwt_issuer: issuer.into(),
        ..no_authentication()
    };
    let stack = Stack::start_with(Options::authenticated(auth, service_token, worker_token)).await;

    let admin = jwt(&key, "ops", "admin", issuer, 600);
    set_stock(&stack, &admin, "AUTH-1")
        .await
        .expect("an admin JWT");
    let alice = jwt(&key, "alice", "orders", issuer, 600);
    let order = place(&stack, &alice, "j1", "alice")
        .await
        .expect("alice's JWT");
    assert_eq!(
        get(&stack, &alice, &order.order_id).await.expect("hers"),
        order
    );

    let expired = jwt(&key, "alice", "orders", issuer, -120);
    let refused = get(&stack, &expired, &order.order_id).await.unwrap_err();
    assert_status("an expired JWT", &refused, Code::Unauthenticated, "expired");
    let elsewhere = jwt(&key, "alice", "orders", "https://evil.example.com", 600);
    let refused = get(&stack, &elsewhere, &order.order_id).await.unwrap_err();
    assert_status("another issuer", &refused, Code::Unauthenticated, "issuer");
    let forger = rcgen::KeyPair::generate().expect("another key");
    let forged_key = EncodingKey::from_ec_pem(forger.serialize_pem().as_bytes()).expect("a key");
    let forged = jwt(&forged_key, "ops", "admin", issuer, 600);
    let refused = set_stock(&stack, &forged, "AUTH-1").await.unwrap_err();
    assert_status(
        "a JWT signed by another key",
        &refused,
        Code::Unauthenticated,
        "invalid token",
    );
    let no_scope = jwt(&key, "alice", "profile", issuer, 600);
    let refused = place(&stack, &no_scope, "j2", "alice").await.unwrap_err();
    assert_status(
        "a JWT without the scope",
        &refused,
        Code::PermissionDenied,
        "CreateOrder needs scope orders",
    );
    stack.stop().await;
}

#[tokio::test]
async fn production_mode_refuses_to_run_without_authentication() {
    let binary = orderflow_tests::process::workspace_binary("inventory-svc");
    let output = tokio::process::Command::new(&binary)
        .args([
            "--environment=production",
            "--listen=127.0.0.1:0",
            "--metrics-listen=127.0.0.1:0",
            &format!(
                "--database-url={}",
                orderflow_tests::deps::fresh_database(&orderflow_tests::unique_id())
                    .await
                    .0
            ),
            "--log=error",
        ])
        .output()
        .await
        .expect("running inventory-svc");
    assert!(
        !output.status.success(),
        "inventory-svc started in production without authentication"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--environment production needs authentication"),
        "{stderr}"
    );
}

//! Transport security: inventory-svc behind TLS and mutual TLS (certificates generated for the
//! test), order-api reaching it with its own client certificate, and clients that cannot.

use orderflow_grpc::InventoryClientArgs;
use orderflow_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use orderflow_proto::inventory::v1::GetStockRequest;
use orderflow_tests::order_request;
use orderflow_tests::pki::Pki;
use orderflow_tests::service::Configure;
use orderflow_tests::stack::{channel_with, Options, Stack};

async fn get_stock(
    stack: &Stack,
    tls: Option<&tonic::transport::ClientTlsConfig>,
) -> Result<i64, tonic::Status> {
    let answer = InventoryServiceClient::new(channel_with(stack.addresses.inventory, tls))
        .get_stock(GetStockRequest {
            sku: "TLS-1".into(),
        })
        .await?;
    Ok(answer.into_inner().stock.map_or(0, |stock| stock.available))
}

/// The call never reached a service: the connection (TLS handshake) failed on the client side,
/// which tonic reports as UNAVAILABLE or UNKNOWN "transport error" depending on when it broke.
fn assert_handshake_failed(status: &tonic::Status) {
    assert!(
        matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown
        ) && std::error::Error::source(status).is_some(),
        "expected a transport failure, got {status:?}"
    );
}

#[tokio::test]
async fn tls_serves_only_clients_that_trust_the_server() {
    let pki = Pki::generate();
    let stack = Stack::start_with(Options {
        inventory_config: serving_tls(&pki, false),
        inventory_client_tls: Some(pki.client(false)),
        ..reaching_inventory_over_tls(&pki, false)
    })
    .await;
    stack.set_stock("TLS-1", 5, 100).await;
    assert_eq!(
        get_stock(&stack, Some(&pki.client(false)))
            .await
            .expect("GetStock over TLS"),
        5
    );

    let plaintext = get_stock(&stack, None)
        .await
        .expect_err("plaintext to a TLS server");
    assert_handshake_failed(&plaintext);
    let stranger = Pki::generate();
    let untrusted = get_stock(&stack, Some(&stranger.client(false)))
        .await
        .expect_err("a client that does not trust the server's CA");
    assert_handshake_failed(&untrusted);

    // order-api verifies inventory-svc with the CA file and places orders through it.
    let order = stack
        .create_order(order_request("tls-1", "buyer-tls", &[("TLS-1", 2)]))
        .await
        .expect("CreateOrder over TLS to inventory-svc");
    assert_eq!(order.total_cents, 200);
    // consumer-worker confirms the order's reservation over TLS too, then persists it.
    stack.wait_for_persisted_orders(1).await;
    stack.stop().await;
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_from_the_ca() {
    let pki = Pki::generate();
    let stack = Stack::start_with(Options {
        inventory_config: serving_tls(&pki, true),
        inventory_client_tls: Some(pki.client(true)),
        ..reaching_inventory_over_tls(&pki, true)
    })
    .await;
    stack.set_stock("TLS-1", 5, 100).await;
    assert_eq!(
        get_stock(&stack, Some(&pki.client(true)))
            .await
            .expect("GetStock over mutual TLS"),
        5
    );

    let anonymous = get_stock(&stack, Some(&pki.client(false)))
        .await
        .expect_err("no client certificate");
    assert_handshake_failed(&anonymous);
    let stranger = Pki::generate();
    let foreign = InventoryServiceClient::new(channel_with(
        stack.addresses.inventory,
        Some(
            &tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&pki.ca_pem))
                .identity(tonic::transport::Identity::from_pem(
                    std::fs::read(stranger.path("client.pem")).expect("the stranger's certificate"),
                    std::fs::read(stranger.path("client-key.pem")).expect("the stranger's key"),
                )),
        ),
    ))
    .get_stock(GetStockRequest {
        sku: "TLS-1".into(),
    })
    .await
    .expect_err("a client certificate from another CA");
    assert_handshake_failed(&foreign);

    stack
        .create_order(order_request("mtls-1", "buyer-mtls", &[("TLS-1", 1)]))
        .await
        .expect("CreateOrder with order-api's client certificate");
    stack.wait_for_persisted_orders(1).await;
    stack.stop().await;
}

/// A client of inventory-svc that trusts its CA and presents a certificate from it.
/// inventory-svc serves TLS with the test certificate; with `mutual`, only to clients whose
/// certificate the test CA signed.
fn serving_tls(pki: &Pki, mutual: bool) -> Configure<inventory_svc::Config> {
    let tls = pki.server_tls(mutual);
    Configure::new(move |config: &mut inventory_svc::Config| {
        config.process.serving.tls = tls.clone();
    })
}

/// order-api and consumer-worker reach inventory-svc trusting the test CA, presenting the
/// client certificate when `identity`.
fn reaching_inventory_over_tls(pki: &Pki, identity: bool) -> Options {
    let ca = Some(pki.path("ca.pem"));
    let (cert, key) = if identity {
        (
            Some(pki.path("client.pem")),
            Some(pki.path("client-key.pem")),
        )
    } else {
        (None, None)
    };
    let client = move |inventory: &mut InventoryClientArgs| {
        inventory.inventory_ca_file = ca.clone();
        inventory.inventory_client_cert_file = cert.clone();
        inventory.inventory_client_key_file = key.clone();
    };
    let for_worker = client.clone();
    Options {
        order_config: Configure::new(move |config: &mut order_api::Config| {
            client(&mut config.inventory)
        }),
        worker_config: Configure::new(move |config: &mut consumer_worker::Config| {
            for_worker(&mut config.inventory)
        }),
        ..Options::default()
    }
}

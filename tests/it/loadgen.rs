//! The real `loadgen` binary against a stack of its own: a small flash sale, a short mixed run
//! and a flash sale with authentication on, each judged by loadgen's own invariant checks (exit
//! code 0, `invariants_ok: true` in the JSON line), plus what the flash sale must have sold.

use std::time::Duration;

use orderflow_grpc::auth::AuthArgs;
use orderflow_tests::private::PrivateBroker;
use orderflow_tests::process::workspace_binary;
use orderflow_tests::stack::{no_authentication, Options, Stack};
use serde_json::{json, Value};

/// Runs loadgen with `args` against `stack` (at most 90 s).
async fn run_loadgen(stack: &Stack, args: &[&str]) -> std::process::Output {
    let run = tokio::process::Command::new(workspace_binary("loadgen"))
        .args(args)
        .arg(format!("--order-api=http://{}", stack.addresses.order_api))
        .arg(format!("--inventory=http://{}", stack.addresses.inventory))
        .arg(format!("--database-url={}", stack.database_url()))
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("loadgen finished within 90 s")
        .expect("running loadgen")
}

/// Runs loadgen with `args` against `stack`; its JSON report, failing the test with its whole
/// output unless it exited 0.
async fn loadgen(stack: &Stack, args: &[&str]) -> Value {
    let args: Vec<&str> = args.iter().copied().chain(["--json", "--quiet"]).collect();
    let output = run_loadgen(stack, &args).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "loadgen {args:?} exited {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status.code()
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|error| panic!("the last line is not JSON ({error}): {last}\n{stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flash_sale_sells_exactly_its_units_and_every_invariant_holds() {
    // A broker of its own, not slowed by what the rest of the suite left on the shared one; and
    // buyers who retry their key until answered, as the API asks. Then every buyer has an
    // answer: exactly the units are sold, everyone else hears "sold out", nothing else.
    let broker = PrivateBroker::start().await;
    let stack = Stack::start_with(Options {
        kafka_brokers: Some(broker.address.clone()),
        ..Options::default()
    })
    .await;
    let report = loadgen(
        &stack,
        &[
            "flash-sale",
            "--buyers=2000",
            "--units=100",
            "--concurrency=16",
            "--sold-out-probe=300",
            "--retry-same-key",
        ],
    )
    .await;
    assert_eq!(report["invariants_ok"], json!(true), "{report:#}");
    assert_eq!(report["errors"], json!({}), "{report:#}");
    let (orders, sold_out) = (
        report["flash_sale"]["orders"].as_u64().expect("orders"),
        report["flash_sale"]["sold_out"].as_u64().expect("sold out"),
    );
    assert_eq!((orders, sold_out), (100, 1900), "{report:#}");
    assert_eq!(stack.persisted_orders().await, 100, "{report:#}");
    for field in ["p50", "p90", "p99", "p999"] {
        assert!(
            report["latency_ms"][field].as_f64() > Some(0.0),
            "{report:#}"
        );
    }
    assert!(report["throughput_per_s"].as_f64() > Some(0.0));
    let probe = &report["flash_sale"]["sold_out_probe"];
    assert_eq!(probe["sold_out"], json!(300), "{report:#}");
    stack.stop().await;
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_run_moves_orders_through_their_lifecycle_and_every_invariant_holds() {
    let stack = Stack::start().await;
    let report = loadgen(
        &stack,
        &[
            "mixed",
            "--mix=create=40,pay=20,cancel=10,ship=5,complete=5,get=10,batch-get=10",
            "--skus=20",
            "--stock=100000",
            "--users=50",
            "--batch-size=20",
            "--repeat-percent=20",
            "--concurrency=8",
            "--duration-secs=5",
        ],
    )
    .await;
    assert_eq!(report["invariants_ok"], json!(true), "{report:#}");
    for rpc in [
        "CreateOrder",
        "PayOrder",
        "CancelOrder",
        "ShipOrder",
        "CompleteOrder",
        "GetOrder",
        "BatchGetOrders",
    ] {
        assert!(
            report["rpcs"][rpc]["ok"].as_u64() > Some(0),
            "no {rpc} answered OK: {report:#}"
        );
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_authentication_on_it_sends_the_buyer_and_admin_tokens() {
    let dir = std::env::temp_dir().join(format!(
        "orderflow-loadgen-{}",
        orderflow_tests::unique_id()
    ));
    std::fs::create_dir_all(&dir).expect("a directory for the tokens");
    let tokens = dir.join("tokens");
    std::fs::write(
        &tokens,
        "t-buyer buyer orders\nt-ops ops admin\nt-order-api order-api inventory\n\
         t-worker consumer-worker inventory\n",
    )
    .expect("writing the tokens file");
    let service_token = dir.join("order-api-token");
    std::fs::write(&service_token, "t-order-api\n").expect("writing order-api's token");
    let worker_token = dir.join("worker-token");
    std::fs::write(&worker_token, "t-worker\n").expect("writing the worker's token");
    let auth = AuthArgs {
        auth_tokens_file: Some(tokens),
        ..no_authentication()
    };
    let stack = Stack::start_with(Options::authenticated(auth, service_token, worker_token)).await;
    // Without a token SetStock is refused, and loadgen says it could not make the run.
    let refused = run_loadgen(
        &stack,
        &["flash-sale", "--buyers=1", "--units=1", "--quiet"],
    )
    .await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("SetStock"), "{stderr}");
    // A buyer token may act only for its own subject: every order is placed as "buyer".
    let report = loadgen(
        &stack,
        &[
            "flash-sale",
            "--buyers=300",
            "--units=20",
            "--concurrency=8",
            "--sold-out-probe=0",
            "--token=t-buyer",
            "--user=buyer",
            "--admin-token=t-ops",
        ],
    )
    .await;
    assert_eq!(report["invariants_ok"], json!(true), "{report:#}");
    assert!(
        report["flash_sale"]["orders"].as_u64() > Some(0),
        "{report:#}"
    );
    assert!(
        report["errors"].get("UNAUTHENTICATED").is_none()
            && report["errors"].get("PERMISSION_DENIED").is_none(),
        "{report:#}"
    );
    stack.stop().await;
}

//! The real `loadgen` binary against a stack of its own: a small flash sale and a short mixed
//! run, each judged by loadgen's own invariant checks (exit code 0, `invariants_ok: true` in the
//! JSON line), plus what the flash sale must have sold.

use std::time::Duration;

use orderflow_tests::process::workspace_binary;
use orderflow_tests::stack::Stack;
use serde_json::{json, Value};

/// Runs loadgen with `args` against `stack`; its JSON report, failing the test with its whole
/// output unless it exited 0.
async fn loadgen(stack: &Stack, args: &[&str]) -> Value {
    let run = tokio::process::Command::new(workspace_binary("loadgen"))
        .args(args)
        .arg(format!("--order-api=http://{}", stack.addresses.order_api))
        .arg(format!("--inventory=http://{}", stack.addresses.inventory))
        .arg(format!("--database-url={}", stack.database_url()))
        .args(["--json", "--quiet"])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("loadgen finished within 90 s")
        .expect("running loadgen");
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
    let stack = Stack::start().await;
    let report = loadgen(
        &stack,
        &[
            "flash-sale",
            "--buyers=2000",
            "--units=100",
            "--concurrency=16",
            "--sold-out-probe=300",
        ],
    )
    .await;
    assert_eq!(report["invariants_ok"], json!(true), "{report:#}");
    // A broker slowed by other work may time a placement out (UNAVAILABLE, nothing kept):
    // then that buyer did not compete, and loadgen's own checks allow for it.
    let errors: u64 = report["errors"]
        .as_object()
        .expect("errors by code")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    let (orders, sold_out) = (
        report["flash_sale"]["orders"].as_u64().expect("orders"),
        report["flash_sale"]["sold_out"].as_u64().expect("sold out"),
    );
    assert_eq!(orders + sold_out + errors, 2000, "{report:#}");
    if errors == 0 {
        assert_eq!((orders, sold_out), (100, 1900), "{report:#}");
    }
    assert!(orders <= 100, "{report:#}");
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

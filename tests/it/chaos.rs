//! Crash any process at any instant, under load, with clients that retry a key until answered:
//! `loadgen chaos` starts a stack of its own (two order-api processes, one of each other
//! service, its own broker), kills one kind of process with SIGKILL at random instants and
//! starts it again, then verifies every invariant — every acknowledged order is the one live
//! order of its key, persisted as acknowledged; nothing oversold; every unit held belongs to a
//! live order once the orphan window has passed; every event applied once.

use std::time::Duration;

use orderflow_tests::process::workspace_binary;
use serde_json::{json, Value};

/// Runs `loadgen chaos` with `args` (at most 5 minutes); its JSON report, failing the test with
/// its whole output if it did not pass.
async fn chaos(args: &[&str]) -> Value {
    let output = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new(workspace_binary("loadgen"))
            .arg("chaos")
            .args([
                "--concurrency=8",
                "--skus=20",
                "--stock=100000",
                "--users=50",
                "--mix=create=60,pay=25,cancel=10,get=5",
                "--json",
                "--quiet",
            ])
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("loadgen chaos finished within 5 minutes")
    .expect("running loadgen");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "loadgen chaos {args:?} exited {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    let report: Value = serde_json::from_str(last)
        .unwrap_or_else(|error| panic!("the last line is not JSON ({error}): {last}\n{stdout}"));
    assert_eq!(report["invariants_ok"], json!(true), "{report:#}");
    println!(
        "{args:?}: {} kills, {} orders acknowledged, {} CreateOrder retries with the same key; {}",
        report["chaos"]["kills"],
        report["orders_acknowledged"],
        report["retries_total"],
        report["invariants"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|check| {
                ["pipeline_drained", "orphans_returned"]
                    .contains(&check["name"].as_str().unwrap_or_default())
            })
            .map(|check| check["detail"].to_string())
            .collect::<Vec<_>>()
            .join("; ")
    );
    report
}

fn kills(report: &Value) -> u64 {
    report["chaos"]["kills"].as_u64().unwrap_or_default()
}

#[tokio::test]
async fn killing_order_api_processes_at_random_loses_voids_and_duplicates_nothing() {
    let report = chaos(&["--kill=order-api", "--kills=30", "--duration-secs=30"]).await;
    assert!(kills(&report) >= 30, "{report:#}");
    assert!(
        report["orders_acknowledged"].as_u64() > Some(0),
        "{report:#}"
    );
}

#[tokio::test]
async fn killing_inventory_svc_at_random_oversells_nothing_and_loses_nothing() {
    let report = chaos(&["--kill=inventory-svc", "--kills=30", "--duration-secs=30"]).await;
    assert!(kills(&report) >= 30, "{report:#}");
}

/// The pipeline must drain within the bound docs/pipeline.md states for the tests' 6 s session
/// timeout under repeated kills: 60 s after the load ends.
#[tokio::test]
async fn killing_consumer_group_members_at_random_drains_the_pipeline_completely() {
    let report = chaos(&[
        "--kill=consumers",
        "--kills=20",
        "--duration-secs=30",
        "--drain-timeout-secs=60",
    ])
    .await;
    assert!(kills(&report) >= 20, "{report:#}");
}

#!/usr/bin/env bash
# `make bench-worker`: events per second consumer-worker applies to PostgreSQL, batching on
# (256 messages per transaction) and off (1), on this machine. Release build; publishes
# BENCH_ORDERS placed-and-paid orders (default 10000, two events each) to fresh topics, then
# runs the worker on a fresh database per setting.
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

"$REPO_ROOT/scripts/stack.sh"
step "Building worker-bench (release)"
cargo build --release --quiet -p orderflow-loadgen --bin worker-bench
target/release/worker-bench --orders "${BENCH_ORDERS:-10000}" \
  --batch-sizes "${BENCH_BATCH_SIZES:-256,1}"

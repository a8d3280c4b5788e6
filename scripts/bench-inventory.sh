#!/usr/bin/env bash
# `make bench-inventory`: reservations per second on one hot SKU, three ways, on this machine:
# the Reserve RPC end to end (Redis admission + PostgreSQL group commit), the Lua admission
# script alone, and the same admission done under the distributed lock instead of a script.
# Release build; one inventory-svc process on a free port against the local stack.
# Settings: BENCH_CONCURRENCY (default 64), BENCH_SECONDS per run (default 10).
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

"$REPO_ROOT/scripts/stack.sh"
step "Building inventory-svc and inventory-bench (release)"
cargo build --release --quiet -p inventory-svc -p orderflow-loadgen \
  --bin inventory-svc --bin inventory-bench

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
step "Starting inventory-svc on 127.0.0.1:$port"
target/release/inventory-svc --listen "127.0.0.1:$port" --log warn &
service=$!
trap 'kill "$service" 2>/dev/null; wait "$service" 2>/dev/null' EXIT
wait_port 127.0.0.1 "$port" inventory-svc 30

for mode in grpc lua lock; do
  target/release/inventory-bench "$mode" --inventory "http://127.0.0.1:$port" \
    --concurrency "${BENCH_CONCURRENCY:-64}" --seconds "${BENCH_SECONDS:-10}"
done

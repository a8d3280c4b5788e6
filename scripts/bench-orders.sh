#!/usr/bin/env bash
# `make bench-orders`: CreateOrder, GetOrder and BatchGetOrders(100) rate and latency on this
# machine. Release build; inventory-svc, order-api and consumer-worker on free ports against the
# local stack (their own Redis key prefix, topic prefix and consumer group), then order-bench
# places orders and reads them back. Settings: BENCH_CONCURRENCY (default 8), BENCH_SECONDS per
# RPC (default 10).
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

"$REPO_ROOT/scripts/stack.sh"
step "Building the services and order-bench (release)"
cargo build --release --quiet -p inventory-svc -p order-api -p consumer-worker -p orderflow-loadgen \
  --bin inventory-svc --bin order-api --bin consumer-worker --bin order-bench

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
inventory_port=$(free_port)
order_port=$(free_port)
run="bench$(date +%s)"
export ORDERFLOW_REDIS_KEY_PREFIX="$run" ORDERFLOW_KAFKA_TOPIC_PREFIX="$run." ORDERFLOW_LOG=warn \
  ORDERFLOW_ORDERS_CONSUMER_GROUP="$run-worker"

pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null' EXIT
step "Starting inventory-svc :$inventory_port, order-api :$order_port, consumer-worker"
target/release/inventory-svc --listen "127.0.0.1:$inventory_port" & pids+=($!)
target/release/consumer-worker --listen "127.0.0.1:$(free_port)" --group-id "$run-worker" \
  --inventory-url "http://127.0.0.1:$inventory_port" & pids+=($!)
target/release/order-api --listen "127.0.0.1:$order_port" \
  --inventory-url "http://127.0.0.1:$inventory_port" & pids+=($!)
wait_port 127.0.0.1 "$inventory_port" inventory-svc 30
wait_port 127.0.0.1 "$order_port" order-api 30

target/release/order-bench --order-api "http://127.0.0.1:$order_port" \
  --inventory "http://127.0.0.1:$inventory_port" \
  --concurrency "${BENCH_CONCURRENCY:-8}" --seconds "${BENCH_SECONDS:-10}"

#!/usr/bin/env bash
# `make run`: brings up the dependencies (installing what is missing), builds, and runs the four
# services in the foreground with prefixed logs. Ctrl-C (or SIGTERM) stops them cleanly; the
# dependencies keep running for the next time. Debug builds by default (they share the build
# `make test` makes); RELEASE=1 (`make run RELEASE=1`) serves release builds: a longer first
# build, several times the throughput (README, "Run it").
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

"$REPO_ROOT/scripts/stack.sh"
"$REPO_ROOT/scripts/ensure-grpcurl.sh"

if [[ ${RELEASE:-} == 1 ]]; then
  step "Building the services (release)"
  cargo build --release -p order-api -p inventory-svc -p consumer-worker -p notify-svc --bins
  bin="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release"
else
  step "Building the services (debug; RELEASE=1 for release builds)"
  cargo build --bins
  bin="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug"
fi

pids=()
start() {
  local name=$1
  step "Starting $name"
  "$bin/$name" > >(sed -u "s/^/[$name] /") 2>&1 &
  pids+=($!)
}
stop() {
  trap - INT TERM
  step "Stopping the services"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  note "stopped; PostgreSQL, Redis and the broker keep running"
}
trap 'stop; exit 0' INT TERM

start inventory-svc
start notify-svc
start consumer-worker
start order-api
wait_port 127.0.0.1 50052 inventory-svc 60
wait_port 127.0.0.1 50053 notify-svc 60
wait_port 127.0.0.1 50054 consumer-worker 60
wait_port 127.0.0.1 50051 order-api 60

cat >&2 <<MSG

orderflow is running: order-api 127.0.0.1:50051, inventory-svc :50052, notify-svc :50053,
consumer-worker :50054 (health and consumer status).
Try it from another terminal (grpcurl is in $ORDERFLOW_HOME/bin):

  export PATH="$ORDERFLOW_HOME/bin:\$PATH"
  grpcurl -plaintext -d '{"sku":"TEA-1","quantity":100,"price_cents":1999}' 127.0.0.1:50052 orderflow.inventory.v1.InventoryService/SetStock
  grpcurl -plaintext -d '{"idempotency_key":"first-order","user_id":"alice","items":[{"sku":"TEA-1","quantity":2}]}' 127.0.0.1:50051 orderflow.order.v1.OrderService/CreateOrder
  grpcurl -plaintext -d '{"order_id":"<orderId from the answer>"}' 127.0.0.1:50051 orderflow.order.v1.OrderService/GetOrder
  grpcurl -plaintext -d '{"user_id":"alice"}' 127.0.0.1:50053 orderflow.notify.v1.NotificationService/ListNotifications

Ctrl-C stops the services.
MSG

# If a service dies on its own, stop the others too rather than run half a system.
set +e
wait -n "${pids[@]}"
code=$?
set -e
note "a service exited (status $code)"
stop
exit "$code"

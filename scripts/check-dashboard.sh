#!/usr/bin/env bash
# The Helm chart's Grafana dashboard (deploy/helm/orderflow/dashboards/orderflow.json) against
# running services: starts the four services from the debug binaries with bench-services.sh (free
# loopback ports, a fresh database, their own Redis key prefix, topic prefix and consumer groups on
# the shared PostgreSQL, Redis and broker), places orders with grpcurl (SetStock, two CreateOrder,
# one sold out, a GetOrder), puts a message no consumer can decode on its order-created topic
# (with `tansu cat produce`), waits for the consumers to apply and dead-letter them, scrapes the
# four /metrics and checks
#   1. every metric name in the dashboard's queries is exposed by at least one service. A family
#      shows in /metrics only once it has a sample, so the traffic above is what makes them
#      appear; the one it cannot cause, group rejoins (EVENT_ONLY below), is checked against
#      telemetry/src/metrics.rs instead, as tests/chart/check_chart.py does for every name;
#   2. every family a service exposes is one check_chart.py reads out of telemetry/src/metrics.rs,
#      with the same type, and together they expose all of them but EVENT_ONLY;
#   3. the traffic shows up in the samples behind the main panels: RED of CreateOrder,
#      reservations by outcome, cache hits, publishes, the worker's applied messages, lag and
#      batches, dead letters, the PostgreSQL pools, the shed and rate-limit counters.
# The grpcurl calls and the produce count as checks too. Stops the services, drops the database and the Redis keys,
# and ends with one line `dashboard: N passed, N failed`; exits 1 if any failed (service logs of a
# failed run are kept; the path is printed). Needs the stack running (`make stack`) and built
# binaries (`cargo build --bins`); the metric names come from check_chart.py, run with the chart
# tools' Python (scripts/ensure-chart-tools.sh, for its pyyaml).
#
# Settings: ORDERFLOW_TEST_POSTGRES (postgres://orderflow:orderflow@127.0.0.1:5432),
# ORDERFLOW_KAFKA_BROKERS (127.0.0.1:9092), CARGO_TARGET_DIR (target).
source "$(dirname "$0")/lib.sh"
source "$REPO_ROOT/scripts/bench-services.sh"
cd "$REPO_ROOT"

grpcurl="$ORDERFLOW_HOME/bin/grpcurl"
tansu="$ORDERFLOW_HOME/bin/tansu"
python="$ORDERFLOW_HOME/chart-tools/venv/bin/python"
[[ -x $tansu ]] || die "$tansu is missing: run make stack first"
"$REPO_ROOT/scripts/ensure-grpcurl.sh"
"$REPO_ROOT/scripts/ensure-chart-tools.sh"

passed=0
failed=0
private_stack_start dashboard

# --- traffic ---------------------------------------------------------------------------------------
# rpc ok|fail WHAT ADDRESS METHOD JSON: one grpcurl call that must succeed (ok) or be refused
# (fail); its answer is left in $WORK/answer.json.
rpc() {
  local want=$1 what=$2 status=0
  "$grpcurl" -plaintext -max-time 20 -d "$5" "$3" "$4" >"$WORK/answer.json" 2>&1 || status=$?
  if [[ $want == ok && $status == 0 ]] || [[ $want == fail && $status != 0 ]]; then
    passed=$((passed + 1))
    note "ok    $what"
  else
    failed=$((failed + 1))
    note "FAIL  $what (grpcurl exit status $status): $(head -c 300 "$WORK/answer.json")"
  fi
}
orders=orderflow.order.v1.OrderService
sku="DASH-$RUN"
order() { printf '{"idempotency_key":"%s","user_id":"dashboard","items":[{"sku":"%s","quantity":%d}]}' "$RUN-$1" "$sku" "$2"; }

step "[$SECONDS s] Traffic: SetStock, two orders, one sold out, a read, a message to dead-letter"
rpc ok "SetStock $sku 3" "$INVENTORY" orderflow.inventory.v1.InventoryService/SetStock \
  "{\"sku\":\"$sku\",\"quantity\":3,\"price_cents\":500}"
rpc ok "CreateOrder 1 of $sku" "$ORDER_API" "$orders/CreateOrder" "$(order 1 1)"
order_id=$("$python" -c 'import json, sys; print(json.load(sys.stdin)["order"]["orderId"])' \
  <"$WORK/answer.json" 2>/dev/null) || order_id=""
rpc ok "CreateOrder 2 of $sku" "$ORDER_API" "$orders/CreateOrder" "$(order 2 2)"
rpc fail "CreateOrder of more than is left (sold out)" "$ORDER_API" "$orders/CreateOrder" "$(order 3 1)"
rpc ok "GetOrder ${order_id:-(no order id)}" "$ORDER_API" "$orders/GetOrder" "{\"order_id\":\"$order_id\"}"
# A message that is no order event: consumer-worker and notify-svc copy it to the .dlq topic.
if echo '{"key": "dashboard", "value": "not an order event"}' |
  "$tansu" cat produce --broker "tcp://${BROKERS%%,*}" "$RUN.order-created" - >"$WORK/produce.log" 2>&1; then
  passed=$((passed + 1))
  note "ok    an undecodable message on $RUN.order-created"
else
  failed=$((failed + 1))
  note "FAIL  could not produce to $RUN.order-created: $(tail -n 1 "$WORK/produce.log")"
fi

# --- the checks --------------------------------------------------------------------------------------
step "[$SECONDS s] Scraping the four /metrics and checking the dashboard's metric names"
set +e
"$python" - "$WORK" "$RUN" "order-api=$ORDER_API_METRICS" "inventory-svc=$INVENTORY_METRICS" \
  "consumer-worker=$WORKER_METRICS" "notify-svc=$NOTIFY_METRICS" <<'PY' | tee "$WORK/checks.log" >&2
import json
import re
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, "tests/chart")
import check_chart  # noqa: E402  (the dashboard file, its metric names, the registered families)

work, run = Path(sys.argv[1]), sys.argv[2]
targets = dict(arg.split("=", 1) for arg in sys.argv[3:])
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"')


def scrape(address):
    """(samples [(name, labels, value)], declared {family: type}) of one /metrics."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    samples, declared = [], {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            declared[name.removesuffix("_total") if kind == "counter" else name] = kind
        elif line and not line.startswith("#"):
            m = SAMPLE.match(line)
            if m:
                samples.append((m.group(1), dict(LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return text, samples, declared


# Exposed only after an event this run cannot cause: checked against telemetry/src/metrics.rs.
EVENT_ONLY = {"orderflow_kafka_consumer_rejoins_total": "a rejoin needs partitions that stand still while their group is behind"}
# What the traffic must show: (name, labels that must match, the least total, what it feeds).
group = f"{run}-worker"
WANTED = [
    ("orderflow_grpc_server_handled_total", {"method": "CreateOrder", "code": "OK"}, 2, "orders per second, RED of order-api"),
    ("orderflow_grpc_server_handled_total", {"method": "CreateOrder", "code": "!OK"}, 1, "errors by code"),
    ("orderflow_grpc_server_handling_seconds_count", {"method": "CreateOrder"}, 3, "CreateOrder latency"),
    ("orderflow_grpc_server_handling_seconds_bucket", {"method": "Reserve"}, 1, "RED of inventory-svc"),
    ("orderflow_reservations_total", {"outcome": "reserved"}, 2, "sold out vs reserved"),
    ("orderflow_reservations_total", {"outcome": "insufficient_stock"}, 1, "sold out vs reserved"),
    ("orderflow_order_cache_lookups_total", {"outcome": "hit"}, 1, "cache hit ratio"),
    ("orderflow_kafka_produced_messages_total", {"outcome": "acked"}, 2, "publishes"),
    ("orderflow_kafka_produce_seconds_count", {"outcome": "acked"}, 2, "broker ack latency"),
    ("orderflow_kafka_consumed_messages_total", {"group": group}, 2, "applied per second"),
    ("orderflow_kafka_consumer_lag_messages", {"group": group}, None, "consumer lag"),
    ("orderflow_kafka_consume_batch_seconds_count", {"outcome": "applied"}, 1, "batch time"),
    ("orderflow_kafka_dead_lettered_messages_total", {"group": group, "topic": "order-created"}, 1, "dead letters"),
    ("orderflow_lock_acquisitions_total", {"outcome": "acquired"}, 1, "SKU lock waits"),
    ("orderflow_db_pool_max_connections", {}, None, "DB pool saturation"),
    ("orderflow_db_pool_connections", {"state": "in_use"}, None, "DB pool saturation"),
    ("orderflow_grpc_server_shed_total", {}, None, "shed"),
    ("orderflow_create_order_rate_limited_total", {}, None, "rate limited"),
]


def matches(labels, want):
    return all(labels.get(k) != v[1:] if v.startswith("!") else labels.get(k) == v for k, v in want.items())


def totals(scrapes):
    out = []
    for name, want, least, _ in WANTED:
        found = [(s, v) for s, (_, samples, _) in scrapes.items() for n, labels, v in samples if n == name and matches(labels, want)]
        out.append((found, sum(v for _, v in found), least))
    return out


# The worker applies the orders in its own time: scrape until its samples are there (60 s at most).
deadline = time.monotonic() + 60
while True:
    scrapes = {service: scrape(address) for service, address in targets.items()}
    results = totals(scrapes)
    if all(found and (least is None or total >= least) for found, total, least in results) or time.monotonic() > deadline:
        break
    time.sleep(1)
for service, (text, _, _) in scrapes.items():
    (work / f"{service}.metrics").write_text(text)

passed = failed = 0


def check(ok, message):
    global passed, failed
    passed, failed = passed + bool(ok), failed + (not ok)
    print(f"{'ok  ' if ok else 'FAIL'}  {message}")


dashboard = json.loads(check_chart.dashboard_file().read_text())
used = check_chart.dashboard_metric_names(dashboard)
check(len(used) >= 10, f"the dashboard uses {len(used)} metric names")
for name in sorted(used):
    with_samples = sorted(s for s, (_, samples, _) in scrapes.items() if any(n == name for n, _, _ in samples))
    declared = sorted(s for s, (_, _, families) in scrapes.items()
                      if any(name == family + suffix for family, kind in families.items() for suffix in check_chart.METRIC_SUFFIXES.get(kind, ())))
    if with_samples or declared:
        check(True, f"{name}: " + (f"samples from {', '.join(with_samples)}" if with_samples else f"declared by {', '.join(declared)}"))
    elif name in EVENT_ONLY:
        check(name in check_chart.exposed_metric_names(),
              f"{name}: not exposed in this run ({EVENT_ONLY[name]}); registered in telemetry/src/metrics.rs: {name in check_chart.exposed_metric_names()}")
    else:
        check(False, f"{name}: exposed by no service")

families = check_chart.metric_families()
exposed = {}
for service, (_, _, declared) in scrapes.items():
    wrong = {f: k for f, k in declared.items() if families.get(f) != k}
    check(not wrong, f"{service}: every family it exposes ({len(declared)}) is registered in telemetry/src/metrics.rs with that type"
          + (f"; not so: {wrong}" if wrong else ""))
    exposed.update(declared)
event_only = {check_chart.exposed_metric_names().get(name) for name in EVENT_ONLY}
missing = sorted(set(families) - set(exposed) - event_only)
check(not missing, f"the four services expose {len(exposed)} of the {len(families)} registered families (all but {sorted(event_only)})"
      + (f"; missing {missing}" if missing else ""))

for service, (_, samples, _) in scrapes.items():
    check(any(n == "orderflow_db_pool_max_connections" and labels.get("pool") == service for n, labels, _ in samples),
          f'{service} reports its PostgreSQL pool: orderflow_db_pool_max_connections{{pool="{service}"}} (DB pool saturation)')
for (name, want, least, feeds), (found, total, _) in zip(WANTED, results):
    sel = ",".join(f'{k}{"!=" if v.startswith("!") else "="}"{v.lstrip("!")}"' for k, v in want.items())
    ok = bool(found) and (least is None or total >= least)
    check(ok, f"{name}{{{sel}}} = {total:g} ({feeds}; want {'a sample' if least is None else f'>= {least}'})"
          + (f" from {', '.join(sorted({s for s, _ in found}))}" if found else ""))
print(f"counts {passed} {failed}")
PY
status=${PIPESTATUS[0]}
set -e
read -r checks_passed checks_failed < <(awk '/^counts / { print $2, $3 }' "$WORK/checks.log") ||
  { checks_passed=0 checks_failed=1; }
if ((status != 0 && checks_failed == 0)); then checks_failed=1; fi
passed=$((passed + checks_passed)) failed=$((failed + checks_failed))

step "Dashboard metric names and samples checked in $SECONDS s"
echo "dashboard: $passed passed, $failed failed"
((failed == 0))

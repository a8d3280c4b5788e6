#!/usr/bin/env bash
# Makes sure a Kafka-protocol broker runs on 127.0.0.1:9092: tansu (crates.io), built once into
# $ORDERFLOW_HOME/bin, storing its log in an embedded sqlite file (durable across restarts).
# Production points the same clients at a real Kafka cluster instead.
source "$(dirname "$0")/lib.sh"

TANSU_VERSION=0.6.0
TANSU="$ORDERFLOW_HOME/bin/tansu"

if ! [[ -x $TANSU ]] || [[ $("$TANSU" --version 2>/dev/null) != "tansu $TANSU_VERSION" ]]; then
  command -v cargo >/dev/null || die "cargo is missing: install the Rust toolchain (rustup) first"
  "$(dirname "$0")/ensure-build-tools.sh"
  step "Building the broker: tansu $TANSU_VERSION (first time only, ~10 min on 2 cores)"
  # cargo prints one line per crate it compiles (about 600): that is the progress.
  cargo install tansu --locked --version "$TANSU_VERSION" --features libsql \
    --root "$ORDERFLOW_HOME" >&2 || true
  [[ -x $TANSU ]] || die "installing tansu failed; run: cargo install tansu --locked --version $TANSU_VERSION --features libsql --root $ORDERFLOW_HOME"
fi

data="$ORDERFLOW_HOME/broker"
storage="$data/tansu.db"
index_storage() { python3 "$REPO_ROOT/scripts/index-broker-storage.py" "$storage" "$@"; }
command -v python3 >/dev/null || apt_install python3

start_broker() {
  mkdir -p "$data"
  # tansu resolves the sqlite path against its working directory.
  (cd "$data" && setsid nohup "$TANSU" broker \
    --listener-url tcp://127.0.0.1:9092 \
    --advertised-listener-url tcp://127.0.0.1:9092 \
    --storage-engine sqlite://tansu.db \
    >>tansu.log 2>&1 </dev/null &)
  wait_port 127.0.0.1 9092 "the broker (log: $data/tansu.log)" 30
}

# tansu's sqlite storage lacks indexes it needs and slows as it fills without them
# (scripts/index-broker-storage.py). A file that already holds records is indexed while the broker
# is stopped; a file the broker just created, while it runs (its tables are empty).
if port_open 127.0.0.1 9092; then
  if [[ -f $storage ]] && ! index_storage --check 2>/dev/null; then
    pid=$(pgrep -f "^$TANSU broker --listener-url tcp://127.0.0.1:9092" || true)
    [[ -n $pid ]] || die "a broker on 127.0.0.1:9092 that this script did not start keeps $storage unindexed; stop it and rerun"
    step "Adding the broker's missing storage indexes (stop, index, start; once)"
    kill "$pid"
    while port_open 127.0.0.1 9092 || kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
    index_storage
    start_broker
  fi
else
  step "Starting the broker (tansu) on 127.0.0.1:9092"
  if [[ -f $storage ]]; then index_storage || true; fi
  start_broker
  # A fresh file gets its schema at start-up; wait for it, then index the empty tables.
  index_storage --wait 10 || die "could not index the broker's storage $storage"
fi
note "Broker ready on 127.0.0.1:9092"

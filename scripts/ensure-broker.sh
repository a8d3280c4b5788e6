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

if ! port_open 127.0.0.1 9092; then
  step "Starting the broker (tansu) on 127.0.0.1:9092"
  data="$ORDERFLOW_HOME/broker"
  mkdir -p "$data"
  # tansu resolves the sqlite path against its working directory.
  (cd "$data" && setsid nohup "$TANSU" broker \
    --listener-url tcp://127.0.0.1:9092 \
    --advertised-listener-url tcp://127.0.0.1:9092 \
    --storage-engine sqlite://tansu.db \
    >>tansu.log 2>&1 </dev/null &)
  wait_port 127.0.0.1 9092 "the broker (log: $data/tansu.log)" 30
fi
note "Broker ready on 127.0.0.1:9092"

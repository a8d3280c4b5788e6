#!/usr/bin/env bash
# Brings up the dependencies of orderflow on loopback, starting only what is not running and
# installing only what is missing: PostgreSQL, Redis and the Kafka-protocol broker.
source "$(dirname "$0")/lib.sh"

"$REPO_ROOT/scripts/ensure-build-tools.sh"
"$REPO_ROOT/scripts/ensure-postgres.sh"
"$REPO_ROOT/scripts/ensure-redis.sh"
"$REPO_ROOT/scripts/ensure-broker.sh"

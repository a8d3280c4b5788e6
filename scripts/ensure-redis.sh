#!/usr/bin/env bash
# Makes sure Redis runs on 127.0.0.1:6379 (no persistence: orderflow rebuilds what it needs).
# Installs redis-server (and redis-tools, whose redis-cli the cluster tests use) if missing.
source "$(dirname "$0")/lib.sh"

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  apt_install redis-server redis-tools
fi
if ! port_open 127.0.0.1 6379; then
  step "Starting Redis"
  mkdir -p "$ORDERFLOW_HOME/redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir "$ORDERFLOW_HOME/redis" --logfile "$ORDERFLOW_HOME/redis/redis.log"
  wait_port 127.0.0.1 6379 Redis 15
fi
note "Redis ready on 127.0.0.1:6379"

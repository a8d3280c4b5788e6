#!/usr/bin/env bash
# The Redis ceiling of a reservation: redis-benchmark running inventory-svc's own admission
# script (inventory-svc/src/scripts/reserve.lua, by EVALSHA, a fresh reservation per call on
# one hot SKU), unpipelined and pipelined, and a bare "decrement if ≥ 1" script for comparison.
# Keys live under a prefix of their own and are deleted afterwards (reservation hashes expire
# after 60 s by themselves).
#
#   scripts/bench-redis.sh CLIENTS REQUESTS
#
# Prints one JSON line per case: {"case", "clients", "pipeline", "rps", "p50_ms", "p99_ms"}.
source "$(dirname "$0")/lib.sh"

clients=${1:?clients}
requests=${2:?requests}
host=${BENCH_REDIS_HOST:-127.0.0.1}
port=${BENCH_REDIS_PORT:-6379}
command -v redis-benchmark >/dev/null || apt_install redis-tools
redis() { redis-cli -h "$host" -p "$port" "$@"; }

prefix="{redisbench$(date +%s)}"
stock="$prefix:stock:HOT"
unrecorded="$prefix:unrecorded"
trap 'redis DEL "$stock" "$unrecorded" >/dev/null' EXIT
redis HSET "$stock" available 1000000000000 reserved 0 sold 0 price_cents 1999 >/dev/null
reserve_sha=$(redis SCRIPT LOAD "$(cat "$REPO_ROOT/inventory-svc/src/scripts/reserve.lua")")
decrement_sha=$(redis SCRIPT LOAD "
  if tonumber(redis.call('HGET', KEYS[1], 'available')) >= 1 then
    return redis.call('HINCRBY', KEYS[1], 'available', -1)
  end
  return -1")

# bench CASE PIPELINE REQUESTS COMMAND…: one JSON line from redis-benchmark's CSV.
bench() {
  local name=$1 pipeline=$2 count=$3
  shift 3
  redis-benchmark -h "$host" -p "$port" -c "$clients" -n "$count" -P "$pipeline" \
    -r 100000000 --csv "$@" |
    python3 -c '
import csv, json, sys
name, clients, pipeline = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for row in csv.DictReader(sys.stdin):
    print(json.dumps({"case": name, "clients": clients, "pipeline": pipeline,
                      "rps": float(row["rps"]), "p50_ms": float(row["p50_latency_ms"]),
                      "p99_ms": float(row["p99_latency_ms"])}))
' "$name" "$clients" "$pipeline"
}

# KEYS: the reservation hash (a fresh one per call), the unrecorded set, the stock hash.
# ARGV: hash TTL (ms), order id, then sku and quantity.
reserve=(EVALSHA "$reserve_sha" 3 "$prefix:reservation:__rand_int__" "$unrecorded" "$stock"
  60000 "__rand_int__" HOT 1)
bench "reserve.lua (EVALSHA)" 1 "$requests" "${reserve[@]}"
bench "reserve.lua (EVALSHA)" 16 $((requests * 2)) "${reserve[@]}"
bench "decrement if >= 1 (EVALSHA)" 1 "$requests" EVALSHA "$decrement_sha" 1 "$stock"

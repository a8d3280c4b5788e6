#!/usr/bin/env bash
# The baseline a user would build instead of orderflow: one plain PostgreSQL transaction per
# order (decrement the SKU's row if it has stock, insert the order), driven by pgbench against
# the same PostgreSQL, in a database of its own (orderflow_pgbench, recreated each run).
#
#   scripts/bench-pgbench.sh CLIENTS SECONDS SKUS
#
# SKUS=1 is the hot row of a flash sale; more spreads the orders over that many rows. Prints
# one JSON line: {"skus", "clients", "seconds", "tps", "latency_ms", "orders"}.
source "$(dirname "$0")/lib.sh"

clients=${1:?clients}
seconds=${2:?seconds}
skus=${3:?number of SKUs}
server="${BENCH_POSTGRES:-postgres://orderflow:orderflow@127.0.0.1:5432}"
export PGOPTIONS="-c client_min_messages=warning"
database=orderflow_pgbench
command -v pgbench >/dev/null || apt_install postgresql-client

psql "$server/postgres" -qX -v ON_ERROR_STOP=1 >/dev/null <<SQL
DROP DATABASE IF EXISTS $database WITH (FORCE);
CREATE DATABASE $database;
SQL
psql "$server/$database" -qX -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE TABLE skus (
    sku         TEXT PRIMARY KEY,
    available   BIGINT NOT NULL CHECK (available >= 0),
    price_cents BIGINT NOT NULL
);
CREATE TABLE orders (
    order_id    BIGSERIAL PRIMARY KEY,
    user_id     BIGINT NOT NULL,
    sku         TEXT NOT NULL,
    quantity    INT NOT NULL,
    total_cents BIGINT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO skus SELECT 'SKU-' || i, 1000000000, 1999 FROM generate_series(1, $skus) AS i;
VACUUM ANALYZE skus;
SQL

script=$(mktemp)
trap 'rm -f "$script"' EXIT
# One statement, so one transaction: the row is locked from the UPDATE to the commit, as any
# "SELECT … FOR UPDATE; UPDATE; INSERT; COMMIT" order path holds it.
cat >"$script" <<SQL
\set user random(1, 1000000000)
\set sku random(1, $skus)
WITH taken AS (
    UPDATE skus SET available = available - 1
     WHERE sku = 'SKU-' || :sku AND available >= 1
    RETURNING sku, price_cents
)
INSERT INTO orders (user_id, sku, quantity, total_cents)
SELECT :user, sku, 1, price_cents FROM taken;
SQL

output=$(pgbench -n -M prepared -c "$clients" -j 2 -T "$seconds" -f "$script" "$server/$database" 2>&1) ||
  die "pgbench failed: $output"
tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$output" | head -1)
latency=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$output")
orders=$(psql "$server/$database" -qXAtc "SELECT count(*) FROM orders")
printf '{"skus": %s, "clients": %s, "seconds": %s, "tps": %s, "latency_ms": %s, "orders": %s}\n' \
  "$skus" "$clients" "$seconds" "${tps:-0}" "${latency:-0}" "${orders:-0}"

#!/usr/bin/env python3
"""Adds the indexes tansu 0.6's sqlite storage lacks to a broker's storage file.

Without them the local broker slows as it fills: every record it hands a consumer looks up that
record's headers with a scan of every header ever stored, and every produce and offset listing
finds its partition's watermark with a scan of all partitions' watermarks
(docs/design.md, "Kafka and the local broker"). Real Kafka has no such tables; this only concerns the
broker the scripts and tests start.

Usage: index-broker-storage.py PATH/tansu.db [--check | --wait SECONDS]

Idempotent. Safe while the broker runs on a file it just created (empty tables: instant); on a
file that already holds many records, stop the broker first (scripts/ensure-broker.sh does),
since building the index locks writers out meanwhile. With --check it only exits 0 when every
index exists and 1 when one is missing. With --wait it first waits up to SECONDS for tansu to
create its tables (a broker that has just started on a new file).
"""

import sqlite3
import sys
import time

# (index name, table, columns): each serves a statement tansu runs per record or per request.
INDEXES = [
    # header_fetch.sql: the headers of one record, once per fetched record.
    ("orderflow_header_topition_offset", "header", "topition, offset_id"),
    # watermark_select*.sql, watermark_update.sql, list_latest_offset_*.sql: per produce/list.
    ("orderflow_watermark_topition", "watermark", "topition"),
]


def missing_tables(path: str) -> set[str]:
    connection = sqlite3.connect(path, timeout=30)
    try:
        tables = {row[0] for row in connection.execute("select name from sqlite_master where type = 'table'")}
    finally:
        connection.close()
    return {table for _, table, _ in INDEXES} - tables


def main() -> int:
    args = sys.argv[1:]
    check_only = "--check" in args
    wait = 0.0
    if "--wait" in args:
        at = args.index("--wait")
        wait = float(args[at + 1])
        del args[at:at + 2]
    paths = [arg for arg in args if arg != "--check"]
    if len(paths) != 1:
        print("usage: index-broker-storage.py PATH/tansu.db [--check | --wait SECONDS]", file=sys.stderr)
        return 2
    deadline = time.monotonic() + wait
    while (absent := missing_tables(paths[0])) and time.monotonic() < deadline:
        time.sleep(0.2)
    if absent:
        print(f"{paths[0]}: no tansu schema yet (tables {sorted(absent)} missing)", file=sys.stderr)
        return 1
    connection = sqlite3.connect(paths[0], timeout=30)
    try:
        existing = {row[0] for row in connection.execute("select name from sqlite_master where type = 'index'")}
        missing = [index for index in INDEXES if index[0] not in existing]
        if check_only:
            return 1 if missing else 0
        for name, table, columns in missing:
            connection.execute(f"create index if not exists {name} on {table} ({columns})")
        connection.commit()
        return 0
    finally:
        connection.close()


if __name__ == "__main__":
    sys.exit(main())

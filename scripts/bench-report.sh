#!/usr/bin/env bash
# Turns the raw results of scripts/bench.sh into the side-by-side report: prints it, and writes
# it into OUTPUT between the markers "<!-- bench:begin" and "<!-- bench:end -->" (everything
# outside them, such as the analysis, is kept; a missing file is created with the markers).
#
#   scripts/bench-report.sh RESULTS_DIR OUTPUT
source "$(dirname "$0")/lib.sh"

results=${1:?results directory}
output=${2:?output file}

python3 - "$results" "$output" <<'PY'
import json, os, platform, re, subprocess, sys, time

results, output = sys.argv[1], sys.argv[2]


def load(name):
    try:
        with open(os.path.join(results, name)) as file:
            text = file.read().strip()
        if name == "redis.json":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        return json.loads(text.splitlines()[-1]) if text else {}
    except (OSError, ValueError, IndexError):
        return {}


def command(*argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def get(data, *path, default=None):
    for key in path:
        if not isinstance(data, dict) or key not in data or data[key] is None:
            return default
        data = data[key]
    return data


def num(value, digits=0):
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def ms(value):
    return "–" if value is None else f"{value:.2f} ms"


def ratio(a, b):
    return None if not a or not b else a / b


settings, finished = load("settings.json"), load("finished.json")
noop_api, noop_tonic = load("noop-order-api.json"), load("noop-tonic.json")
flash, create, create80 = load("flash-sale.json"), load("create.json"), load("create-80.json")
mixed, mixed80, k6 = load("mixed.json"), load("mixed-80.json"), load("k6.json")
reads, reads80 = load("reads.json"), load("reads-80.json")
fill, create_filled = load("fill.json"), load("create-filled.json")
pg_hot, pg_spread = load("pgbench-hot.json"), load("pgbench-spread.json")
redis = {(row["case"], row["pipeline"]): row for row in load("redis.json") or []}
reserve = redis.get(("reserve.lua (EVALSHA)", 1), {})
reserve16 = redis.get(("reserve.lua (EVALSHA)", 16), {})
decrement = redis.get(("decrement if >= 1 (EVALSHA)", 1), {})
concurrency = settings.get("concurrency", 64)
seconds = settings.get("seconds", 10)

# The machine and the versions.
cpuinfo = open("/proc/cpuinfo").read()
model = re.search(r"model name\s*:\s*(.*)", cpuinfo)
meminfo = open("/proc/meminfo").read()
memory = re.search(r"MemTotal:\s*(\d+)", meminfo)
os_name = ""
if os.path.exists("/etc/os-release"):
    found = re.search(r'PRETTY_NAME="(.*)"', open("/etc/os-release").read())
    os_name = found.group(1) if found else ""
home = os.environ.get("ORDERFLOW_HOME", os.path.expanduser("~/.local/orderflow"))
postgres = command("psql", "postgres://orderflow:orderflow@127.0.0.1:5432/postgres", "-qXAtc",
                   "SHOW server_version")
commit = command("git", "rev-parse", "--short", "HEAD")
dirty = " (with uncommitted changes)" if command("git", "status", "--porcelain", "--untracked-files=no") else ""
def first_line(*argv):
    text = command(*argv)
    return text.splitlines()[0] if text else "?"


tansu = first_line(os.path.join(home, "bin", "tansu"), "--version")
k6_version = first_line(os.path.join(home, "venv", "bin", "k6"), "version").split(" (")[0]
machine = [
    (f"{os.cpu_count()} CPUs ({model.group(1) if model else 'unknown model'}), "
     f"{int(memory.group(1)) / 1024 / 1024:.1f} GiB RAM" if memory else f"{os.cpu_count()} CPUs"),
    f"{os_name}, Linux {platform.release()}",
    f"{first_line('rustc', '--version')}; PostgreSQL {postgres.split()[0] if postgres else '?'}; "
    f"{first_line('redis-server', '--version').split(' sha=')[0]}; {tansu}; {k6_version}; "
    f"{first_line('pgbench', '--version')}; {first_line('redis-benchmark', '--version').split(' (')[0]}",
]

lines = []
out = lines.append
out(f"Run of {time.strftime('%Y-%m-%d %H:%M %Z')} at commit {commit}{dirty}; `make bench` took "
    f"{finished.get('total_s', '?')} s (release build {settings.get('build_s', '?')} s). "
    f"{concurrency} requests in flight over {settings.get('connections', 4)} HTTP/2 connections, "
    f"{seconds} s per measured run, every component on this one machine:")
out("")
for line in machine:
    out(f"- {line}")
out("")

create_rate = get(create, "orders_per_s")
create_latency = get(create, "rpcs", "CreateOrder", "ok_latency_ms", default={})
create80_latency = get(create80, "rpcs", "CreateOrder", "ok_latency_ms", default={})
flash_latency = get(flash, "latency_ms", default={})
probe = get(flash, "flash_sale", "sold_out_probe", default={})
k6_rate = get(k6, "ok_per_s")

out("### Side by side")
out("")
out("| what | rate | p50 | p99 | notes |")
out("|---|---:|---:|---:|---|")
out(f"| **orderflow CreateOrder**, saturated (closed loop, {concurrency} in flight, one hot SKU) "
    f"| {num(create_rate)} orders/s | {ms(create_latency.get('p50'))} | {ms(create_latency.get('p99'))} "
    f"| errors {get(create, 'errors', default={}) or 'none'} |")
filled_latency = get(create_filled, "rpcs", "CreateOrder", "ok_latency_ms", default={})
filled_rate = get(create_filled, "orders_per_s")
if create_filled:
    out(f"| orderflow CreateOrder saturated on a broker already holding {num(get(fill, 'events'))} events "
        f"| {num(filled_rate)} orders/s | {ms(filled_latency.get('p50'))} | {ms(filled_latency.get('p99'))} "
        f"| filled at {num(get(fill, 'events_per_second'))} events/s; "
        f"errors {get(create_filled, 'errors', default={}) or 'none'} |")
out(f"| orderflow CreateOrder at 80 % (open loop, {num(get(create80, 'target_rate_per_s'))}/s scheduled) "
    f"| {num(get(create80, 'orders_per_s'))} orders/s | {ms(create80_latency.get('p50'))} "
    f"| {ms(create80_latency.get('p99'))} | p99.9 {ms(create80_latency.get('p999'))}; errors "
    f"{get(create80, 'errors', default={}) or 'none'} |")
cut = " (the race was stopped at its time limit)" if (get(flash, "flash_sale", "buyers") or 0) < (get(flash, "flash_sale", "buyers_asked") or 0) else ""
out(f"| orderflow flash sale{cut}, {num(get(flash, 'flash_sale', 'buyers'))} buyers for "
    f"{num(get(flash, 'flash_sale', 'units'))} units | {num(get(flash, 'throughput_per_s'))} answers/s "
    f"| {ms(flash_latency.get('p50'))} | {ms(flash_latency.get('p99'))} "
    f"| {num(get(flash, 'flash_sale', 'orders'))} orders, {num(get(flash, 'flash_sale', 'sold_out'))} sold out, "
    f"errors {get(flash, 'errors', default={}) or 'none'} |")
out(f"| sold-out answers after the sale ({num(probe.get('requests'))} late buyers) "
    f"| {num(probe.get('per_s'))} answers/s | | | {num(probe.get('pg_xacts'))} PostgreSQL transactions "
    f"(background {num(probe.get('background_xacts'))}): {num(probe.get('pg_xacts_per_answer'), 3)} per answer, "
    f"a lower bound (PostgreSQL's statistics lag); inventory-svc served "
    f"{num(probe.get('inventory_release_calls'))} Release calls (a transaction each) |")
for label, run in (("saturated (closed loop)", mixed), ("at 80 % (open loop)", mixed80)):
    rpcs = get(run, "rpcs", default={})
    out(f"| orderflow mixed workload {label} | {num(get(run, 'throughput_per_s'))} ops/s "
        f"| {ms(get(run, 'latency_ms', 'p50'))} | {ms(get(run, 'latency_ms', 'p99'))} "
        f"| {get(run, 'mix', 'spec', default='')} over {num(get(run, 'mix', 'skus'))} SKUs; "
        f"{num(get(run, 'orders_per_s'))} orders/s; errors {get(run, 'errors', default={}) or 'none'} |")
for label, run in (("saturated (closed loop)", reads), ("at 80 % (open loop)", reads80)):
    latency = get(run, "rpcs", "BatchGetOrders", "ok_latency_ms", default={})
    out(f"| orderflow BatchGetOrders(100) {label}, of {num(get(run, 'mix', 'preloaded'))} orders just placed "
        f"| {num(get(run, 'rpcs', 'BatchGetOrders', 'ok_per_s'))} calls/s | {ms(latency.get('p50'))} "
        f"| {ms(latency.get('p99'))} | errors {get(run, 'errors', default={}) or 'none'} |")
out(f"| k6 CreateOrder, {get(k6, 'vus', default='?')} VUs (one connection each), one hot SKU "
    f"| {num(k6_rate)} orders/s | {ms(get(k6, 'latency_ms', 'p50'))} | {ms(get(k6, 'latency_ms', 'p99'))} "
    f"| {num(get(k6, 'requests'))} requests, {num(get(k6, 'ok'))} OK; "
    f"k6 used {get(k6, 'cpu_s', default='?')} CPU-s, {get(k6, 'cpu_ms_per_request', default='?')} ms per request "
    f"(loadgen {get(create, 'cpu', 'seconds', 'loadgen', default='?')} CPU-s); "
    f"{'server reflection' if get(k6, 'reflection') == 'yes' else 'from the .proto files (reflection: ' + str(get(k6, 'reflection', default='?')) + ')'} |")
out(f"| **pgbench**: decrement the hot SKU row + insert the order, one transaction, "
    f"{get(pg_hot, 'clients', default='?')} clients | {num(get(pg_hot, 'tps'))} orders/s "
    f"| {ms(get(pg_hot, 'latency_ms'))} (mean) | | {num(get(pg_hot, 'orders'))} orders |")
out(f"| pgbench, the same over {num(get(pg_spread, 'skus'))} SKUs | {num(get(pg_spread, 'tps'))} orders/s "
    f"| {ms(get(pg_spread, 'latency_ms'))} (mean) | | |")
for label, row in (("reserve.lua (inventory-svc's admission script) by EVALSHA", reserve),
                   ("reserve.lua, pipeline depth 16", reserve16),
                   ("a bare decrement-if-≥-1 script by EVALSHA", decrement)):
    out(f"| redis-benchmark: {label}, {row.get('clients', '?')} clients | {num(row.get('rps'))}/s "
        f"| {ms(row.get('p50_ms'))} | {ms(row.get('p99_ms'))} | |")
for label, run in (("order-api (its whole server stack)", noop_api), ("a bare tonic server", noop_tonic)):
    out(f"| no-op gRPC call: Health/Check of {label} | {num(get(run, 'throughput_per_s'))}/s "
        f"| {ms(get(run, 'latency_ms', 'p50'))} | {ms(get(run, 'latency_ms', 'p99'))} | |")
out("")

out("### Ratios")
out("")
def ratio_line(label, a, b):
    value = ratio(a, b)
    out(f"- {label}: {'–' if value is None else f'{value:.3g}×'}")
ratio_line("CreateOrder ÷ pgbench hot row", create_rate, get(pg_hot, "tps"))
ratio_line("flash-sale answers ÷ pgbench hot row", get(flash, "throughput_per_s"), get(pg_hot, "tps"))
ratio_line("CreateOrder ÷ pgbench over many SKUs", create_rate, get(pg_spread, "tps"))
ratio_line("CreateOrder ÷ reserve.lua ceiling (unpipelined)", create_rate, reserve.get("rps"))
ratio_line("CreateOrder ÷ no-op call of order-api", create_rate, get(noop_api, "throughput_per_s"))
ratio_line("CreateOrder ÷ no-op call of bare tonic", create_rate, get(noop_tonic, "throughput_per_s"))
agreement = ratio(k6_rate, create_rate)
verdict = "–" if agreement is None else ("within 20 %" if abs(agreement - 1) <= 0.2 else "NOT within 20 %")
ratio_line(f"k6 ÷ loadgen, CreateOrder at the same concurrency on equally fresh stacks ({verdict})",
           k6_rate, create_rate)
out("")

out("### Targets")
out("")
out("| target | measured | met |")
out("|---|---|---|")
def target(label, measured, met):
    out(f"| {label} | {measured} | {'yes' if met else 'no'} |")
times = ratio(create_rate, get(pg_hot, "tps"))
target("CreateOrder saturated ≥ 5× the pgbench hot-row baseline", "–" if times is None else f"{times:.3g}×",
       (times or 0) >= 5)
target("CreateOrder ≥ 10,000 orders/s (moonshot)", f"{num(create_rate)}/s", (create_rate or 0) >= 10_000)
kept = ratio(filled_rate, create_rate)
target(f"CreateOrder on a broker holding {num(get(fill, 'events'))} events ≥ 85 % of the fresh-broker rate",
       "–" if kept is None else f"{100 * kept:.0f} % ({num(filled_rate)}/s)", (kept or 0) >= 0.85)
own_cpu = get(create, "cpu", "all_ms_per_order")
target("CPU per order across all processes ≤ 0.25 ms", f"{num(own_cpu, 3)} ms",
       own_cpu is not None and own_cpu <= 0.25)
target("p99 ≤ 20 ms at 80 % of saturation",
       f"{ms(create80_latency.get('p99'))} at {num(get(create80, 'orders_per_s'))}/s",
       create80_latency.get("p99") is not None and create80_latency["p99"] <= 20)
flash_rate = get(flash, "throughput_per_s")
target("flash sale ≥ 20,000 answers/s", f"{num(flash_rate)}/s", (flash_rate or 0) >= 20_000)
flash_orders, flash_units = get(flash, "flash_sale", "orders"), get(flash, "flash_sale", "units")
target("flash sale: exactly K orders, no errors but sold out",
       f"{num(flash_orders)} of {num(flash_units)}, errors {get(flash, 'errors', default={}) or 'none'}",
       flash_orders is not None and flash_orders == flash_units and not get(flash, "errors"))
per_answer = probe.get("pg_xacts_per_answer")
target("a sold-out answer costs no PostgreSQL query",
       f"{num(per_answer, 3)} transactions per sold-out answer",
       per_answer is not None and per_answer < 0.01)
batch = get(reads80, "rpcs", "BatchGetOrders", "ok_latency_ms", "p50")
target("BatchGetOrders(100) p50 ≤ 2 ms (at 80 % of its saturated rate)",
       f"{ms(batch)} at {num(get(reads80, 'rpcs', 'BatchGetOrders', 'ok_per_s'))} calls/s",
       batch is not None and batch <= 2)
out("")

out("### Latency per RPC, mixed workload at 80 % (open loop)")
out("")
out("| rpc | OK answers/s | p50 | p90 | p99 | p99.9 | errors |")
out("|---|---:|---:|---:|---:|---:|---|")
for rpc, data in sorted(get(mixed80, "rpcs", default={}).items()):
    latency = data.get("ok_latency_ms", {})
    out(f"| {rpc} | {num(data.get('ok_per_s'))} | {ms(latency.get('p50'))} | {ms(latency.get('p90'))} "
        f"| {ms(latency.get('p99'))} | {ms(latency.get('p999'))} "
        f"| {get(mixed80, 'errors_by_rpc', rpc, default={}) or 'none'} |")
out("")

out("### CPU per order (CreateOrder saturated, load and drain)")
out("")
cpu = get(create, "cpu", default={})
if cpu:
    out(f"{num(cpu.get('own_ms_per_order'), 3)} ms of CPU per order in orderflow's four processes, "
        f"{num(cpu.get('all_ms_per_order'), 3)} ms with PostgreSQL, Redis, the broker and loadgen; "
        f"the machine was busy {num(cpu.get('machine_busy_s'), 1)} of {num(cpu.get('machine_capacity_s'), 1)} "
        f"CPU-seconds over {num(cpu.get('window_s'), 1)} s.")
    out("")
    out("| process | CPU s | share | ms per order |")
    out("|---|---:|---:|---:|")
    total = sum(cpu.get("seconds", {}).values()) or 1
    orders = get(create, "orders_acknowledged") or 0
    for label, used in sorted(cpu.get("seconds", {}).items(), key=lambda item: -item[1]):
        out(f"| {label} | {used:.2f} | {100 * used / total:.0f} % "
            f"| {num(1000 * used / orders if orders else None, 3)} |")
    out("")

perf_threads = os.path.join(results, "perf-threads.txt")
perf_symbols = os.path.join(results, "perf-symbols.txt")
if os.path.exists(perf_threads):
    out("### Profile (perf, every CPU, 499 Hz, during CreateOrder saturated)")
    out("")
    owners = {}
    try:
        for line in open(os.path.join(results, "threads.map")):
            parts = line.split(maxsplit=2)
            if len(parts) == 3:
                owners[parts[0]] = parts[2].strip()
    except OSError:
        pass
    per_process, per_thread = {}, []
    for line in open(perf_threads):
        found = re.match(r"^\s+([\d.]+)%\s+(\d+):(.*)$", line)
        if found:
            share, tid, thread = float(found.group(1)), found.group(2), found.group(3).strip()
            owner = "idle" if tid == "0" else owners.get(tid, "(ended)")
            per_process[owner] = per_process.get(owner, 0.0) + share
            per_thread.append((share, owner, thread))
    out("| process | share of all CPU samples | busiest threads |")
    out("|---|---:|---|")
    for owner, share in sorted(per_process.items(), key=lambda item: -item[1])[:10]:
        threads = [f"{thread} {thread_share:.1f} %" for thread_share, who, thread in per_thread
                   if who == owner][:4]
        out(f"| {owner} | {share:.1f} % | {', '.join(threads)} |")
    out("")
    if os.path.exists(perf_symbols):
        top = [re.sub(r"\s+", " ", line.strip()) for line in open(perf_symbols)
               if re.match(r"^\s+[\d.]+%", line)][:25]
        out("Hottest symbols (share of all samples, object, symbol):")
        out("")
        out("```")
        out("\n".join(top))
        out("```")
        out("")

out("### Invariants")
out("")
for name, run in (("flash-sale", flash), ("create", create), ("create-filled", create_filled),
                  ("create-80", create80),
                  ("mixed", mixed), ("mixed-80", mixed80), ("reads", reads), ("reads-80", reads80)):
    checks = run.get("invariants", [])
    bad = [check for check in checks if not check.get("ok")]
    state = "no result" if not checks else ("all held" if not bad else "FAILED: " + "; ".join(
        f"{check['name']}: {check['detail']}" for check in bad))
    out(f"- {name}: {len(checks)} checks, {state}")
if finished.get("failed"):
    out(f"- failed steps: {', '.join(finished['failed'])}")

report = "\n".join(lines)
print(report)

begin = "<!-- bench:begin: written by `make bench` (scripts/bench-report.sh); edit outside the markers -->"
end = "<!-- bench:end -->"
block = f"{begin}\n{report}\n{end}"
try:
    existing = open(output).read()
except OSError:
    existing = "# Benchmarks\n\n" + begin + "\n" + end + "\n"
start, stop = existing.find("<!-- bench:begin"), existing.find(end)
if start < 0 or stop < 0:
    existing = existing.rstrip("\n") + "\n\n## Latest run\n\n" + begin + "\n" + end + "\n"
    start, stop = existing.find("<!-- bench:begin"), existing.find(end)
with open(output, "w") as file:
    file.write(existing[:start] + block + existing[stop + len(end):])
PY

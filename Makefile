# The two commands of the README, and a few helpers. Each script says what it does.
.PHONY: run test lint stack bench-inventory bench-orders bench-worker bench

## Set up whatever is missing, build, and run the stack and all four services (Ctrl-C stops them).
run:
	@scripts/run.sh

## Set up whatever is missing, then run every test.
test:
	@scripts/test.sh

## Formatting, clippy (warnings as errors) and the protobuf lint of the contracts.
lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	@scripts/lint-proto.sh
	@scripts/api-doc.sh --check

## Only install and start PostgreSQL, Redis and the broker.
stack:
	@scripts/stack.sh

## Reservations per second on one hot SKU: Reserve end to end, the Lua script, the lock (release build).
bench-inventory:
	@scripts/bench-inventory.sh

## CreateOrder, GetOrder and BatchGetOrders(100) rate and latency (release build).
bench-orders:
	@scripts/bench-orders.sh

## Events per second consumer-worker applies to PostgreSQL, batching on vs off (release build).
bench-worker:
	@scripts/bench-worker.sh

## The system (loadgen) vs plain PostgreSQL (pgbench), Redis and no-op gRPC ceilings, k6; writes docs/BENCHMARKS.md.
bench:
	@scripts/bench.sh

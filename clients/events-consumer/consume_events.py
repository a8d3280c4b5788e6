#!/usr/bin/env python3
"""orderflow's order events from Kafka, read by an independent consumer group (kafka-python).

Subscribes to the five order topics (`<prefix>order-created` ... `<prefix>order-completed`),
decodes each `orderflow.events.v1` message (stubs generated from ../../proto by grpcio-tools at
start-up), skips duplicates by `event_id` (the services deliver at least once), prints one line
per event, and commits offsets only after the events of a poll were handled (auto-commit off).

With --expect-order ORDER_ID --expect-events created,paid,shipped,completed it exits 0 as soon as
it has seen those events of that order, and 1 if --timeout passes first. With --forbid-order
ORDER_ID it exits 1 if an event of that order arrives, 0 once caught up with every partition
(run again in the same group: it resumes after its commits). Otherwise it runs until Ctrl-C, or
until --timeout when one is given.
"""

import argparse
import atexit
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from kafka import ConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata

HERE = Path(__file__).resolve().parent
DEFAULT_PROTO_DIR = HERE.parent.parent / "proto"
PROTO_FILES = ["orderflow/order/v1/order.proto", "orderflow/events/v1/events.proto"]

# Topic suffix (proto/src/topics.rs) -> short name -> the type the `event-type` header names.
TOPICS = {
    "order-created": ("created", "orderflow.events.v1.OrderCreated"),
    "order-paid": ("paid", "orderflow.events.v1.OrderPaid"),
    "order-cancelled": ("cancelled", "orderflow.events.v1.OrderCancelled"),
    "order-shipped": ("shipped", "orderflow.events.v1.OrderShipped"),
    "order-completed": ("completed", "orderflow.events.v1.OrderCompleted"),
}
EVENT_TYPE_HEADER = "event-type"


def generate_stubs(proto_dir: Path, out_dir: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    args = ["protoc", f"-I{proto_dir}", f"-I{well_known}", f"--python_out={out_dir}", *PROTO_FILES]
    if protoc.main(args) != 0:
        raise SystemExit(f"error: protoc could not compile {PROTO_FILES} under {proto_dir}")
    sys.path.insert(0, str(out_dir))


def parse_args() -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--brokers", default=env("ORDERFLOW_KAFKA_BROKERS", "127.0.0.1:9092"),
                   help="bootstrap servers, comma-separated (env ORDERFLOW_KAFKA_BROKERS; "
                        "default %(default)s)")
    p.add_argument("--topic-prefix", default=env("ORDERFLOW_KAFKA_TOPIC_PREFIX", ""),
                   help="the services' --kafka-topic-prefix, put in front of each topic name as "
                        "is (env ORDERFLOW_KAFKA_TOPIC_PREFIX; default none)")
    p.add_argument("--group-id", default="orderflow-events-consumer-example",
                   help="this consumer's group; never the services' own (default %(default)s)")
    p.add_argument("--offset-reset", choices=("earliest", "latest"), default="earliest",
                   help="where a group without committed offsets starts (default %(default)s)")
    p.add_argument("--expect-order", help="order id whose events to wait for")
    p.add_argument("--expect-events", default="created,paid,shipped,completed",
                   help="comma-separated among created, paid, cancelled, shipped, completed "
                        "(default %(default)s)")
    p.add_argument("--forbid-order",
                   help="order id none of whose events may arrive: exit 1 if one does, 0 once "
                        "caught up with the end of every partition (run again with the same "
                        "group, this shows it resumes after its committed offsets)")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds: stop after this long, failing with --expect-order or "
                        "--forbid-order (default 60 with them, else run until Ctrl-C)")
    p.add_argument("--proto-dir", type=Path, default=DEFAULT_PROTO_DIR,
                   help="root of the .proto files (default %(default)s)")
    args = p.parse_args()
    args.expected = {name.strip() for name in args.expect_events.split(",") if name.strip()}
    unknown = args.expected - {short for short, _ in TOPICS.values()}
    if unknown:
        p.error(f"--expect-events: unknown {sorted(unknown)}")
    if args.timeout is None and (args.expect_order or args.forbid_order):
        args.timeout = 60.0
    return args


class Listener(ConsumerRebalanceListener):
    def on_partitions_revoked(self, revoked):
        if revoked:
            print(f"revoked {len(revoked)} partitions", flush=True)

    def on_partitions_assigned(self, assigned):
        names = sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned)
        print(f"assigned {len(names)} partitions: {' '.join(names)}", flush=True)


def main() -> int:
    args = parse_args()
    out = Path(tempfile.mkdtemp(prefix="orderflow-events-stubs-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    generate_stubs(args.proto_dir, out)
    from orderflow.events.v1 import events_pb2
    from orderflow.order.v1 import order_pb2

    by_type = {
        "orderflow.events.v1.OrderCreated": events_pb2.OrderCreated,
        "orderflow.events.v1.OrderPaid": events_pb2.OrderPaid,
        "orderflow.events.v1.OrderCancelled": events_pb2.OrderCancelled,
        "orderflow.events.v1.OrderShipped": events_pb2.OrderShipped,
        "orderflow.events.v1.OrderCompleted": events_pb2.OrderCompleted,
    }
    topics = {args.topic_prefix + suffix: suffix for suffix in TOPICS}

    consumer = KafkaConsumer(
        bootstrap_servers=args.brokers.split(","),
        group_id=args.group_id,
        client_id=f"{args.group_id}-{os.getpid()}",
        enable_auto_commit=False,
        auto_offset_reset=args.offset_reset,
    )
    consumer.subscribe(sorted(topics), listener=Listener())
    print(f"group {args.group_id} on {args.brokers}: subscribed to {' '.join(sorted(topics))}",
          flush=True)

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    seen_ids = set()  # event ids handled: the dedup key the contract gives every event
    seen_for_order = set()  # short names of --expect-order's events
    forbidden = []  # events of --forbid-order
    counts = {"events": 0, "duplicates": 0, "undecodable": 0}
    deadline = time.monotonic() + args.timeout if args.timeout else None
    status = 0
    try:
        while not stop:
            if args.expect_order and args.expected <= seen_for_order:
                print(f"seen {','.join(sorted(args.expected))} of order {args.expect_order}",
                      flush=True)
                break
            if forbidden:
                print(f"order {args.forbid_order} delivered again: {' '.join(forbidden)}",
                      flush=True)
                status = 1
                break
            if args.forbid_order and caught_up(consumer):
                print(f"caught up with every partition without an event of order "
                      f"{args.forbid_order}", flush=True)
                break
            if deadline and time.monotonic() >= deadline:
                print(f"timeout after {args.timeout:g} s", flush=True)
                if args.expect_order:
                    missing = sorted(args.expected - seen_for_order)
                    print(f"order {args.expect_order} still misses {','.join(missing)}", flush=True)
                status = 1 if args.expect_order or args.forbid_order else 0
                break
            batch = consumer.poll(timeout_ms=500)
            handled = {}
            for tp, records in batch.items():
                for record in records:
                    event = handle(record, topics, by_type, order_pb2, seen_ids, counts)
                    if event is not None and event[1] == args.expect_order:
                        seen_for_order.add(event[0])
                    if event is not None and event[1] == args.forbid_order:
                        forbidden.append(event[0])
                    handled[tp] = OffsetAndMetadata(record.offset + 1, "", -1)
            if handled:
                # After handling: a crash before this line re-delivers, and the event_id dedup
                # (kept in memory here; in a real consumer, with its effects) absorbs it.
                consumer.commit(handled)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close(autocommit=False)
    print(f"{counts['events']} events, {counts['duplicates']} duplicates skipped, "
          f"{counts['undecodable']} undecodable", flush=True)
    if args.expect_order and not args.expected <= seen_for_order:
        status = 1
    if (args.expect_order or args.forbid_order) and status == 0:
        print("OK", flush=True)
    return status


def caught_up(consumer):
    """Whether this member holds partitions and has reached the end of each."""
    assigned = consumer.assignment()
    if not assigned:
        return False
    ends = consumer.end_offsets(list(assigned))
    for tp in assigned:
        position = consumer.position(tp)  # from the group's committed offset, or the reset
        if position is None or position < ends[tp]:
            return False
    return True


def handle(record, topics, by_type, order_pb2, seen_ids, counts):
    """Decodes, deduplicates and prints one record; answers (short name, order id) of a new
    event, None for a duplicate or a message that is not an order event (skipped)."""
    suffix = topics.get(record.topic)
    short, expected_type = TOPICS[suffix]
    headers = {key: value for key, value in (record.headers or [])}
    header = headers.get(EVENT_TYPE_HEADER)
    event_type = header.decode(errors="replace") if header is not None else expected_type
    where = f"{record.topic}[{record.partition}]@{record.offset}"
    if event_type != expected_type or event_type not in by_type:
        counts["undecodable"] += 1
        print(f"{where} skipped: event-type {event_type!r} does not belong on this topic", flush=True)
        return None
    try:
        event = by_type[event_type].FromString(record.value)
    except Exception as error:  # a DecodeError: poison, skipped (and committed past)
        counts["undecodable"] += 1
        print(f"{where} skipped: undecodable {event_type}: {error}", flush=True)
        return None
    if event.event_id in seen_ids:
        counts["duplicates"] += 1
        print(f"{where} duplicate event {event.event_id} skipped", flush=True)
        return None
    seen_ids.add(event.event_id)
    counts["events"] += 1
    order = event.order
    status = order_pb2.OrderStatus.Name(order.status)
    print(f"{short:<9} order {event.order_id} {status} v{order.version} "
          f"total {order.total_cents} {order.currency} event {event.event_id} "
          f"at {event.occurred_at.ToJsonString()} ({where})", flush=True)
    return short, event.order_id


if __name__ == "__main__":
    sys.exit(main())

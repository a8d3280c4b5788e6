#!/usr/bin/env python3
"""orderflow from Python: one order through its whole life, with a safe retry policy.

Stubs are generated from ../../proto at start-up by grpcio-tools into a temporary directory
(nothing generated is committed). Every step prints one line; the last line is `OK` when every
step behaved as documented in docs/api.md, and the exit status is non-zero otherwise.

Run `python order_flow.py --help` for the options; README.md beside this file shows how to run it
against `make run`.
"""

import argparse
import atexit
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import grpc

HERE = Path(__file__).resolve().parent
DEFAULT_PROTO_DIR = HERE.parent.parent / "proto"
PROTO_FILES = [
    "orderflow/order/v1/order.proto",
    "orderflow/inventory/v1/inventory.proto",
]

# The only codes a retry may fix: the request may not have been applied, or not in time.
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def status_code(error, started, timeout):
    """The call's status code, reading a CANCELLED that arrived once the deadline had passed as
    DEADLINE_EXCEEDED: when the server's copy of the deadline (the grpc-timeout header) fires
    before the client's own timer, the server (tonic) answers CANCELLED "Timeout expired"."""
    code = error.code()
    if code == grpc.StatusCode.CANCELLED and time.monotonic() - started >= timeout:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return code


def generate_stubs(proto_dir: Path, out_dir: Path) -> None:
    """Compiles the contracts with grpcio-tools' bundled protoc into `out_dir` and imports them."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    args = [
        "protoc",
        f"-I{proto_dir}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *PROTO_FILES,
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"error: protoc could not compile {PROTO_FILES} under {proto_dir}")
    sys.path.insert(0, str(out_dir))


def parse_args() -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--order-api", default=env("ORDERFLOW_ORDER_API", "127.0.0.1:50051"),
                   help="order-api host:port (env ORDERFLOW_ORDER_API; default %(default)s)")
    p.add_argument("--inventory", default=env("ORDERFLOW_INVENTORY", "127.0.0.1:50052"),
                   help="inventory-svc host:port (env ORDERFLOW_INVENTORY; default %(default)s)")
    p.add_argument("--token", default=env("ORDERFLOW_TOKEN"),
                   help="buyer bearer token (scope orders) for the buyer's calls (env ORDERFLOW_TOKEN)")
    p.add_argument("--admin-token", default=env("ORDERFLOW_ADMIN_TOKEN"),
                   help="operator bearer token (scope admin) for SetStock, ShipOrder, "
                        "CompleteOrder (env ORDERFLOW_ADMIN_TOKEN; default: --token)")
    p.add_argument("--tls-ca", default=env("ORDERFLOW_TLS_CA"),
                   help="PEM CA file: connect with TLS and trust this CA (env ORDERFLOW_TLS_CA); "
                        "default plaintext")
    p.add_argument("--tls-server-name", default=env("ORDERFLOW_TLS_SERVER_NAME"),
                   help="name to verify the servers' certificates against (default: the host)")
    p.add_argument("--user", default="alice",
                   help="user_id of the buyer (with --token: the token's subject)")
    p.add_argument("--sku", default=f"PY-{uuid.uuid4().hex[:12]}",
                   help="SKU to put on sale (default: a fresh one per run)")
    p.add_argument("--stock", type=int, default=5, help="units put on sale (default %(default)s)")
    p.add_argument("--quantity", type=int, default=2, help="units ordered (default %(default)s)")
    p.add_argument("--price-cents", type=int, default=1999, help="unit price (default %(default)s)")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="deadline of each unary call in seconds (default %(default)s)")
    p.add_argument("--first-deadline-ms", type=float, default=20.0,
                   help="the tiny deadline of the first CreateOrder, to simulate a timeout "
                        "(default %(default)s)")
    p.add_argument("--watch-timeout", type=float, default=60.0,
                   help="deadline of the WatchOrder stream in seconds (default %(default)s)")
    p.add_argument("--max-attempts", type=int, default=6,
                   help="attempts of a retryable call (default %(default)s)")
    p.add_argument("--proto-dir", type=Path, default=DEFAULT_PROTO_DIR,
                   help="root of the .proto files (default %(default)s)")
    p.add_argument("--build-dir", type=Path,
                   help="where to generate the stubs (default: a temporary directory, removed at exit)")
    p.add_argument("--order-id-file", type=Path,
                   help="write the id of the order placed and completed to this file")
    return p.parse_args()


class Flow:
    """Runs the steps and counts what did not behave as expected."""

    def __init__(self, args, order_pb2, order_grpc, inventory_pb2, inventory_grpc):
        self.args = args
        self.pb = order_pb2
        self.inv_pb = inventory_pb2
        self.failures = []
        self.order_channel = self._channel(args.order_api)
        self.inventory_channel = self._channel(args.inventory)
        self.orders = order_grpc.OrderServiceStub(self.order_channel)
        self.inventory = inventory_grpc.InventoryServiceStub(self.inventory_channel)
        self.buyer_md = self._metadata(args.token)
        self.admin_md = self._metadata(args.admin_token or args.token)

    def _channel(self, target):
        if not self.args.tls_ca:
            return grpc.insecure_channel(target)
        credentials = grpc.ssl_channel_credentials(root_certificates=Path(self.args.tls_ca).read_bytes())
        options = []
        if self.args.tls_server_name:
            options.append(("grpc.ssl_target_name_override", self.args.tls_server_name))
        return grpc.secure_channel(target, credentials, options=options)

    @staticmethod
    def _metadata(token):
        return (("authorization", f"Bearer {token}"),) if token else ()

    def close(self):
        self.order_channel.close()
        self.inventory_channel.close()

    # -- reporting ---------------------------------------------------------------------------

    def say(self, step, text):
        print(f"[{step}] {text}", flush=True)

    def check(self, step, ok, text):
        print(f"[{step}] {'ok  ' if ok else 'FAIL'} {text}", flush=True)
        if not ok:
            self.failures.append(f"{step}: {text}")
        return ok

    def status_name(self, status):
        return self.pb.OrderStatus.Name(status)

    # -- the retry policy --------------------------------------------------------------------

    def call(self, step, method, request, *, metadata, retry=False, timeout=None):
        """One unary call with a deadline. With `retry` (only for CreateOrder with the SAME
        request, hence the same idempotency key, and for reads), UNAVAILABLE and
        DEADLINE_EXCEEDED are retried with exponential backoff and full jitter; every other code
        (INVALID_ARGUMENT, FAILED_PRECONDITION, ALREADY_EXISTS, NOT_FOUND, ...) is final."""
        timeout = self.args.timeout if timeout is None else timeout
        attempts = self.args.max_attempts if retry else 1
        for attempt in range(1, attempts + 1):
            started = time.monotonic()
            try:
                return method(request, timeout=timeout, metadata=metadata)
            except grpc.RpcError as error:
                code = status_code(error, started, timeout)
                if code not in RETRYABLE or attempt == attempts:
                    raise
                pause = random.uniform(0, min(2.0, 0.1 * 2 ** attempt))
                self.say(step, f"attempt {attempt}: {code.name} ({error.details()}); "
                               f"retrying in {pause:.2f} s with the same request")
                time.sleep(pause)
        raise AssertionError("unreachable")

    def expect_error(self, step, code, method, request, metadata):
        """Calls once (these codes are never retried) and checks the status code."""
        try:
            answer = self.call(step, method, request, metadata=metadata)
        except grpc.RpcError as error:
            return self.check(step, error.code() == code,
                              f"{error.code().name} (expected {code.name}): {error.details()}")
        self.check(step, False, f"succeeded (expected {code.name}): {answer}")
        return False

    # -- the steps ---------------------------------------------------------------------------

    def run(self):
        a, pb, inv = self.args, self.pb, self.inv_pb

        # 1. An operator puts units of a fresh SKU on sale.
        stock = self.call("SetStock", self.inventory.SetStock,
                          inv.SetStockRequest(sku=a.sku, quantity=a.stock, price_cents=a.price_cents),
                          metadata=self.admin_md).stock
        self.check("SetStock", stock.available == a.stock,
                   f"{stock.sku}: available {stock.available}, price {stock.price_cents}")

        # 2. CreateOrder, first with a tiny deadline (a simulated timeout), then the same key again.
        key = f"py-{uuid.uuid4()}"
        create = pb.CreateOrderRequest(idempotency_key=key, user_id=a.user,
                                       items=[pb.OrderLine(sku=a.sku, quantity=a.quantity)])
        first_id = None
        started = time.monotonic()
        try:
            first = self.orders.CreateOrder(create, timeout=a.first_deadline_ms / 1000,
                                            metadata=self.buyer_md)
            first_id = first.order.order_id
            self.say("CreateOrder", f"first try ({a.first_deadline_ms:g} ms deadline) answered "
                                    f"order {first_id} in time")
        except grpc.RpcError as error:
            code = status_code(error, started, a.first_deadline_ms / 1000)
            if not self.check("CreateOrder", code in RETRYABLE,
                              f"first try ({a.first_deadline_ms:g} ms deadline): "
                              f"{code.name}: {error.details()}"):
                return
        # The retry: same request, same key; the policy waits out "still being recorded".
        order = self.call("CreateOrder", self.orders.CreateOrder, create,
                          metadata=self.buyer_md, retry=True).order
        order_id = order.order_id
        print(f"order {order_id}", flush=True)
        self.check("CreateOrder", order.status == pb.ORDER_STATUS_PENDING
                   and order.total_cents == a.quantity * a.price_cents,
                   f"retry with key {key}: order {order_id} {self.status_name(order.status)}, "
                   f"total {order.total_cents} {order.currency}")
        again = self.call("CreateOrder", self.orders.CreateOrder, create,
                          metadata=self.buyer_md, retry=True).order
        same = again.order_id == order_id and (first_id is None or first_id == order_id)
        self.check("CreateOrder", same, f"same key again: order {again.order_id} "
                                        f"({'the same' if same else 'DIFFERENT'} order id)")
        if a.order_id_file:
            a.order_id_file.write_text(order_id + "\n")

        # 3. Read it back (an idempotent read: retried on UNAVAILABLE / DEADLINE_EXCEEDED).
        got = self.call("GetOrder", self.orders.GetOrder, pb.GetOrderRequest(order_id=order_id),
                        metadata=self.buyer_md, retry=True).order
        self.check("GetOrder", got.order_id == order_id and got.status == pb.ORDER_STATUS_PENDING,
                   f"{got.order_id} {self.status_name(got.status)} version {got.version}")

        # 4. Watch it from now on, in the background, until the stream ends by itself.
        watcher = Watcher(self, order_id)
        watcher.start()
        if not watcher.first.wait(a.watch_timeout):
            self.check("WatchOrder", False, "no first message (the current state)")

        # 5. Pay, ship, complete. State changes are not retried here (a retry is safe only with
        #    the same payment id / tracking number; this example keeps the policy minimal).
        paid = self.call("PayOrder", self.orders.PayOrder,
                         pb.PayOrderRequest(order_id=order_id, payment_id=f"pay-{key}",
                                            amount_cents=order.total_cents),
                         metadata=self.buyer_md).order
        self.check("PayOrder", paid.status == pb.ORDER_STATUS_PAID,
                   f"{self.status_name(paid.status)} with payment {paid.payment_id}, version {paid.version}")
        shipped = self.call("ShipOrder", self.orders.ShipOrder,
                            pb.ShipOrderRequest(order_id=order_id, tracking_number="SF-PY-1"),
                            metadata=self.admin_md).order
        self.check("ShipOrder", shipped.status == pb.ORDER_STATUS_SHIPPED,
                   f"{self.status_name(shipped.status)}, tracking {shipped.tracking_number}, "
                   f"version {shipped.version}")
        done = self.call("CompleteOrder", self.orders.CompleteOrder,
                         pb.CompleteOrderRequest(order_id=order_id), metadata=self.admin_md).order
        self.check("CompleteOrder", done.status == pb.ORDER_STATUS_COMPLETED,
                   f"{self.status_name(done.status)}, version {done.version}")

        # 6. The watch must have ended on its own after the terminal status.
        watcher.join(a.watch_timeout)
        expected = ["ORDER_STATUS_PENDING", "ORDER_STATUS_PAID", "ORDER_STATUS_SHIPPED",
                    "ORDER_STATUS_COMPLETED"]
        seen = [self.status_name(s) for s in watcher.statuses]
        self.check("WatchOrder", not watcher.is_alive() and watcher.error is None and seen == expected,
                   f"stream ended ({'by itself' if watcher.error is None else watcher.error}) "
                   f"after {' -> '.join(seen) or 'nothing'}")

        # 7. Errors: each is final, so the policy makes exactly one attempt.
        bad = pb.CreateOrderRequest(idempotency_key=f"py-{uuid.uuid4()}", user_id=a.user,
                                    items=[pb.OrderLine(sku=a.sku, quantity=0)])
        self.expect_error("CreateOrder quantity 0", grpc.StatusCode.INVALID_ARGUMENT,
                          self.orders.CreateOrder, bad, self.buyer_md)
        too_many = pb.CreateOrderRequest(idempotency_key=f"py-{uuid.uuid4()}", user_id=a.user,
                                         items=[pb.OrderLine(sku=a.sku, quantity=a.stock + 1)])
        self.expect_error("CreateOrder over stock", grpc.StatusCode.FAILED_PRECONDITION,
                          self.orders.CreateOrder, too_many, self.buyer_md)
        pay_again = pb.PayOrderRequest(order_id=order_id, payment_id=f"pay-other-{key}",
                                       amount_cents=order.total_cents)
        self.expect_error("PayOrder completed", grpc.StatusCode.FAILED_PRECONDITION,
                          self.orders.PayOrder, pay_again, self.buyer_md)

        # 8. The final state, and the stock: the ordered units are sold.
        final = self.call("GetOrder", self.orders.GetOrder, pb.GetOrderRequest(order_id=order_id),
                          metadata=self.buyer_md, retry=True).order
        self.check("GetOrder", final.status == pb.ORDER_STATUS_COMPLETED and final.version == 4,
                   f"{self.status_name(final.status)} version {final.version}")
        stock = self.call("GetStock", self.inventory.GetStock, inv.GetStockRequest(sku=a.sku),
                          metadata=self.buyer_md, retry=True).stock
        self.check("GetStock", stock.sold == a.quantity,
                   f"{stock.sku}: available {stock.available}, reserved {stock.reserved}, "
                   f"sold {stock.sold}")


class Watcher(threading.Thread):
    """WatchOrder in the background: records every status until the server ends the stream."""

    def __init__(self, flow, order_id):
        super().__init__(daemon=True)
        self.flow, self.order_id = flow, order_id
        self.statuses, self.error = [], None
        self.first = threading.Event()

    def run(self):
        flow = self.flow
        try:
            stream = flow.orders.WatchOrder(flow.pb.WatchOrderRequest(order_id=self.order_id),
                                            timeout=flow.args.watch_timeout, metadata=flow.buyer_md)
            for message in stream:
                self.statuses.append(message.order.status)
                flow.say("WatchOrder", f"{flow.status_name(message.order.status)} "
                                       f"version {message.order.version}")
                self.first.set()
        except grpc.RpcError as error:
            self.error = f"{error.code().name}: {error.details()}"
        finally:
            self.first.set()


def main() -> int:
    args = parse_args()
    if args.build_dir:
        out = args.build_dir
        out.mkdir(parents=True, exist_ok=True)
    else:
        out = Path(tempfile.mkdtemp(prefix="orderflow-py-stubs-"))
        atexit.register(shutil.rmtree, out, ignore_errors=True)
    generate_stubs(args.proto_dir, out)
    from orderflow.inventory.v1 import inventory_pb2, inventory_pb2_grpc
    from orderflow.order.v1 import order_pb2, order_pb2_grpc

    flow = Flow(args, order_pb2, order_pb2_grpc, inventory_pb2, inventory_pb2_grpc)
    print(f"order-api {args.order_api}, inventory-svc {args.inventory}, "
          f"{'TLS' if args.tls_ca else 'plaintext'}, "
          f"{'with' if args.token or args.admin_token else 'without'} bearer tokens", flush=True)
    try:
        flow.run()
    except grpc.RpcError as error:
        flow.failures.append(f"{error.code().name}: {error.details()}")
        print(f"FAIL unexpected {error.code().name}: {error.details()}", flush=True)
    finally:
        flow.close()
    if flow.failures:
        print(f"FAILED: {len(flow.failures)} step(s) did not behave as expected", flush=True)
        return 1
    print("OK", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

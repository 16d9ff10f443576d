"""The processes of the soak suite (``bench/soak.py``): a fault-injecting downstream and a worker.

``python -m bench.soak_procs stub --fault-rate 0.3 --seed 1``
    A minimal Airflow 3 REST API on 127.0.0.1 (the calls the delivery worker makes: resolve an
    asset, create an asset event, list an asset's events with ``timestamp_gte``/``order_by``/
    ``limit``/``offset``) that fails ``--fault-rate`` of all calls, each failure drawn from:

    ==============  ==========================================================================
    ``500``         answers 500 without recording anything
    ``502_after``   records the event (a POST), then answers 502: a proxy whose upstream
                    closed the connection after it acted
    ``503``         answers 503 without recording anything
    ``504_after``   records the event, then answers 504
    ``reset``       closes the connection with a TCP RST without answering, without recording
    ``reset_after`` records the event, then resets the connection
    ``timeout``     records the event, then answers only after the client's read timeout
    ``slow``        answers correctly after 0.2-0.6 s (below the read timeout)
    ==============  ==========================================================================

    It counts, by ``extra.xdeps_event_id``, how many events it created: a duplicate is an id
    counted twice. ``GET /_soak/stats`` returns the counts. It prints ``PORT <n>`` when it listens
    and exits when its stdin closes (it never outlives the suite).

``python -m bench.soak_procs worker --outbox URL --table-prefix P --downstream URL``
    A :class:`DeliveryWorker` thread delivering from the outbox to the downstream until stdin
    closes (then it stops cleanly) or it is killed. Prints ``READY`` once started.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import struct
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

FAULTS = ("500", "502_after", "503", "504_after", "reset", "reset_after", "timeout", "slow")
TOKEN = "soak-token"
TARGET = "soak_downstream"
READ_TIMEOUT = 1.0  # the workers' client read timeout; the stub's "timeout" answers after it


class SoakState:
    def __init__(self, fault_rate: float, seed: int, latency: float) -> None:
        self.fault_rate = fault_rate
        self.latency = latency
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.assets: dict[str, int] = {}
        self.events: dict[int, list[dict]] = {}  # asset id -> events, oldest first
        self.created: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.requests = 0
        self.next_event_id = 1

    def draw_fault(self) -> str | None:
        with self.lock:
            self.requests += 1
            if self.random.random() >= self.fault_rate:
                return None
            fault = self.random.choice(FAULTS)
            self.faults[fault] += 1
            return fault

    def asset_id(self, uri: str) -> int:
        with self.lock:
            if uri not in self.assets:
                self.assets[uri] = len(self.assets) + 1
                self.events[self.assets[uri]] = []
            return self.assets[uri]

    def create(self, asset_id: int, extra: dict) -> dict:
        with self.lock:
            now = datetime.now(timezone.utc)
            event = {
                "id": self.next_event_id,
                "asset_id": asset_id,
                "extra": extra,
                "timestamp": now.isoformat().replace("+00:00", "Z"),
                "_ts": now.timestamp(),
            }
            self.next_event_id += 1
            self.events.setdefault(asset_id, []).append(event)
            event_id = extra.get("xdeps_event_id")
            if event_id:
                self.created[event_id] += 1
            return event

    def search(self, asset_id: int, since: float | None, offset: int, limit: int) -> list[dict]:
        with self.lock:
            events = self.events.get(asset_id, [])
            matching = [e for e in events if since is None or e["_ts"] >= since]
        newest_first = matching[::-1]
        return newest_first[offset : offset + limit]


def _parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def make_handler(state: SoakState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _send(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _reset(self) -> None:
            """Close with RST (SO_LINGER 0): the client sees 'connection reset by peer'."""
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()

        def _body(self) -> dict:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length) or b"{}")

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            if parts.path == "/_soak/stats":
                with state.lock:
                    stats = {
                        "requests": state.requests,
                        "faults": dict(state.faults),
                        "created": dict(state.created),
                        "events": sum(len(v) for v in state.events.values()),
                    }
                return self._send(200, stats)
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._send(401, {"detail": "not authenticated"})
            fault = state.draw_fault()
            if fault and not self._fail_before(fault):
                return
            if parts.path == "/api/v2/assets":
                uri = query.get("uri_pattern", "")
                return self._send(
                    200,
                    {"assets": [{"id": state.asset_id(uri), "uri": uri, "name": uri}], "total_entries": 1},
                )
            if parts.path == "/api/v2/assets/events":
                since = _parse_time(query["timestamp_gte"]) if "timestamp_gte" in query else None
                events = state.search(
                    int(query.get("asset_id", 0)),
                    since,
                    int(query.get("offset", 0)),
                    int(query.get("limit", 100)),
                )
                body = [{k: v for k, v in e.items() if k != "_ts"} for e in events]
                return self._send(200, {"asset_events": body, "total_entries": len(body)})
            return self._send(404, {"detail": "not found"})

        def do_POST(self) -> None:
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._body()
                return self._send(401, {"detail": "not authenticated"})
            if urlsplit(self.path).path != "/api/v2/assets/events":
                self._body()
                return self._send(404, {"detail": "not found"})
            body = self._body()
            fault = state.draw_fault()
            if fault and not self._fail_before(fault):
                return
            if state.latency:
                time.sleep(state.latency)
            event = state.create(int(body["asset_id"]), body.get("extra") or {})
            if fault == "502_after":
                return self._send(502, {"detail": "bad gateway: upstream closed the connection"})
            if fault == "504_after":
                return self._send(504, {"detail": "gateway timeout"})
            if fault == "reset_after":
                return self._reset()
            if fault == "timeout":
                time.sleep(READ_TIMEOUT + 0.5)
            return self._send(200, {k: v for k, v in event.items() if k != "_ts"})

        def _fail_before(self, fault: str) -> bool:
            """Act out a fault that happens before the server acts; True to go on with the request."""
            if fault == "500":
                self._send(500, {"detail": "internal server error"})
            elif fault == "503":
                self._send(503, {"detail": "service unavailable"})
            elif fault == "reset":
                self._reset()
            elif fault == "slow":
                time.sleep(0.2 + 0.4 * random.random())
                return True
            else:
                return True  # *_after and timeout act after the event is recorded (GETs: plain answers)
            return False

    return Handler


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that gave up (read timeout, reset) is expected here, not worth a traceback."""


def run_stub(fault_rate: float, seed: int, latency: float) -> None:
    state = SoakState(fault_rate, seed, latency)
    server = QuietServer(("127.0.0.1", 0), make_handler(state))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"PORT {server.server_address[1]}", flush=True)
    sys.stdin.read()  # until the parent closes the pipe (or dies)
    server.shutdown()


def run_worker(outbox_url: str, table_prefix: str, downstream: str, lease: float, concurrency: int) -> None:
    import logging

    from astro_xdeps.client import DeploymentClient, DeploymentConfig, Timeouts
    from astro_xdeps.outbox.store import Outbox
    from astro_xdeps.outbox.worker import ClientPool, DeliveryWorker

    logging.basicConfig(level=logging.ERROR)
    for name in ("astro_xdeps", "urllib3"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # thousands of expected retries

    def client(target: str) -> DeploymentClient:
        config = DeploymentConfig(
            name=target,
            base_url=downstream,
            token=TOKEN,
            api_version="v2",
            retries=0,
            timeouts=Timeouts(connect=1.0, read=READ_TIMEOUT),
        )
        return DeploymentClient(config)

    outbox = Outbox.from_url(outbox_url, table_prefix=table_prefix)
    worker = DeliveryWorker(
        outbox,
        clients=ClientPool(factory=client),
        lease_seconds=lease,
        concurrency=concurrency,
        backoff_base=0.2,
        backoff_max=2.0,
        idle_poll=0.2,
        purge_after=None,
    )
    worker.start()
    print("READY", flush=True)
    sys.stdin.read()
    worker.stop(timeout=10)
    outbox.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak_procs")
    sub = parser.add_subparsers(dest="role", required=True)
    stub = sub.add_parser("stub")
    stub.add_argument("--fault-rate", type=float, default=0.3)
    stub.add_argument("--seed", type=int, default=1)
    stub.add_argument("--latency", type=float, default=0.0, help="seconds before each POST is recorded")
    worker = sub.add_parser("worker")
    worker.add_argument("--outbox", required=True)
    worker.add_argument("--table-prefix", required=True)
    worker.add_argument("--downstream", required=True)
    worker.add_argument("--lease", type=float, default=3.0)
    worker.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args(argv)
    if args.role == "stub":
        run_stub(args.fault_rate, args.seed, args.latency)
    else:
        run_worker(args.outbox, args.table_prefix, args.downstream, args.lease, args.concurrency)


if __name__ == "__main__":
    main()

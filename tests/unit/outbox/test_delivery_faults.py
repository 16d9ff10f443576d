"""Acceptance: a downstream answering 500/503, 429 and timeouts loses nothing and duplicates nothing.

The downstream is a small stateful fake of Airflow 3's asset API served over real HTTP on
127.0.0.1, so the whole path runs as in production: outbox claim, keep-alive sessions, read
timeouts, error classification, the worker's lookup of the event id after an ambiguous failure.
Faults are drawn from a seeded RNG:

- 503 before storing (unambiguous: the event is not there);
- 500 after storing (ambiguous: the event is there, the client cannot know);
- a response delayed past the client's read timeout, after storing (ambiguous);
- 429 with ``Retry-After: 0``;
- 500 on the events listing the worker reads to find an already-stored event.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from astro_xdeps.client import DeploymentClient, DeploymentConfig, Timeouts
from astro_xdeps.outbox import ASSET_EVENT, DEAD, DELIVERED, PENDING, NewItem, Outbox
from astro_xdeps.outbox.worker import ClientPool, DeliveryWorker

TOKEN = "tok-fault-injection-7f6e5d"
READ_TIMEOUT = 0.3
N_ASSETS = 10
EVENTS_PER_ASSET = 100  # the worker looks at the newest 100 events of an asset
DEADLINE_SECONDS = 120.0


@dataclass
class FaultRates:
    """Probabilities per POST /assets/events (cumulative in this order) and per events listing."""

    unavailable_before_store: float = 0.10
    error_after_store: float = 0.10
    slow_after_store: float = 0.05
    too_many_requests: float = 0.05
    listing_error: float = 0.10


@dataclass
class FakeAirflow:
    """The state of a fake Airflow 3 api-server: assets, stored events, and what went wrong."""

    asset_uris: list[str]
    seed: int = 0
    rates: FaultRates = field(default_factory=FaultRates)
    slow_seconds: float = READ_TIMEOUT * 2

    def __post_init__(self) -> None:
        self.assets = [{"id": i + 1, "uri": uri, "name": uri} for i, uri in enumerate(self.asset_uris)]
        self.events: list[dict[str, Any]] = []
        self.faults: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.lookups: list[tuple[int, int]] = []  # (events of the asset, limit asked) per listing
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    def draw(self) -> float:
        with self._lock:
            return self._rng.random()

    def store(self, asset: dict, extra: dict) -> dict:
        with self._lock:
            event = {
                "id": len(self.events) + 1,
                "asset_id": asset["id"],
                "uri": asset["uri"],
                "extra": {**extra, "from_rest_api": True},  # as Airflow marks REST-created events
                "source_task_id": None,
                "source_dag_id": None,
                "source_run_id": None,
                "source_map_index": -1,
                "created_dagruns": [],
                "timestamp": datetime.now(timezone.utc).isoformat(),
            }
            self.events.append(event)
            return event

    def count(self, name: str) -> None:
        with self._lock:
            self.faults[name] += 1

    def events_of(self, asset_id: int) -> list[dict]:
        with self._lock:
            return [e for e in self.events if e["asset_id"] == asset_id]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the worker's sessions expect
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms ACK wait
    server: FakeServer

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    @property
    def fake(self) -> FakeAirflow:
        return self.server.fake

    def reply(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body if body is not None else {"detail": self.responses[status][0]}).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up (read timeout) and closed the connection
            self.close_connection = True

    def authorized(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {TOKEN}":
            return True
        self.reply(401, {"detail": "Not authenticated"})
        return False

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.fake.requests[f"GET {url.path}"] += 1
        if url.path == "/api/v2/version":
            self.reply(200, {"version": "3.3.2", "git_version": None})
        elif not self.authorized():
            return
        elif url.path == "/api/v2/assets":
            self.list_assets(query)
        elif url.path == "/api/v2/assets/events":
            self.list_events(query)
        else:
            self.reply(404)

    def list_assets(self, query: dict[str, str]) -> None:
        # Airflow: case-insensitive LIKE '%pattern%'; good enough without wildcards in the uris.
        pattern = query.get("uri_pattern", "").lower()
        found = [a for a in self.fake.assets if pattern in a["uri"].lower()]
        offset, limit = int(query.get("offset", 0)), int(query.get("limit", 50))
        self.reply(200, {"assets": found[offset : offset + limit], "total_entries": len(found)})

    def list_events(self, query: dict[str, str]) -> None:
        if self.fake.draw() < self.fake.rates.listing_error:
            self.fake.count("listing 500")
            self.reply(500)
            return
        asset_id, limit = int(query["asset_id"]), int(query.get("limit", 50))
        events = self.fake.events_of(asset_id)
        assert query.get("order_by") == "-timestamp", query
        newest_first = sorted(events, key=lambda e: (e["timestamp"], e["id"]), reverse=True)
        with self.fake._lock:
            self.fake.lookups.append((len(events), limit))
        self.reply(200, {"asset_events": newest_first[:limit], "total_entries": len(events)})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        self.fake.requests[f"POST {self.path}"] += 1
        if not self.authorized():
            return
        if self.path != "/api/v2/assets/events":
            self.reply(404)
            return
        asset = next((a for a in self.fake.assets if a["id"] == body.get("asset_id")), None)
        if asset is None:
            self.reply(404, {"detail": f"Asset with ID {body.get('asset_id')} not found"})
            return
        rates, draw = self.fake.rates, self.fake.draw()
        if draw < (edge := rates.unavailable_before_store):
            self.fake.count("503 before store")
            self.reply(503)
            return
        if draw < (edge := edge + rates.error_after_store):
            self.fake.store(asset, body.get("extra") or {})
            self.fake.count("500 after store")
            self.reply(500)
            return
        if draw < (edge := edge + rates.slow_after_store):
            event = self.fake.store(asset, body.get("extra") or {})
            self.fake.count("timeout after store")
            time.sleep(self.fake.slow_seconds)
            self.reply(200, event)
            return
        if draw < edge + rates.too_many_requests:
            self.fake.count("429")
            self.reply(429, headers={"Retry-After": "0"})
            return
        self.reply(200, self.fake.store(asset, body.get("extra") or {}))


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeAirflow) -> None:
        super().__init__(("127.0.0.1", 0), Handler)  # port 0: any free port
        self.fake = fake

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


@pytest.fixture
def downstream() -> Iterator[FakeServer]:
    fake = FakeAirflow([f"s3://faults/asset-{i:02d}" for i in range(N_ASSETS)], seed=20240601)
    server = FakeServer(fake)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_fake_downstream_behaves_like_airflow_without_faults(downstream: FakeServer, tmp_path) -> None:
    """The client sees the fake as an Airflow 3 deployment (guards the acceptance test's stub)."""
    downstream.fake.rates = FaultRates(0, 0, 0, 0, 0)
    client = DeploymentClient(DeploymentConfig(name="fake", base_url=downstream.url, token=TOKEN, retries=0))
    try:
        assert client.api_version == "v2"
        uri = "s3://faults/asset-03"
        assert client.resolve_asset(uri).id == 4
        first = client.create_asset_event(uri, {"xdeps_event_id": "a"})
        second = client.create_asset_event(uri, {"xdeps_event_id": "b"})
        assert first["extra"] == {"xdeps_event_id": "a", "from_rest_api": True}
        assert [e["id"] for e in client.recent_events(uri)] == [second["id"], first["id"]]
        assert client.find_event(uri, "xdeps_event_id", "a") == first
        assert client.find_event(uri, "xdeps_event_id", "missing") is None
    finally:
        client.close()


def test_1000_events_through_faults_no_loss_no_duplicates(
    downstream: FakeServer, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = downstream.fake
    config = DeploymentConfig(
        name="faulty",
        base_url=downstream.url,
        token=TOKEN,
        api_version="auto",  # detected from the fake's /api/v2/version
        timeouts=Timeouts(connect=2.0, read=READ_TIMEOUT),
        retries=0,  # the worker and the outbox own retries
    )
    outbox = Outbox.sqlite(tmp_path / "outbox.db")
    pool = ClientPool(factory=lambda target: DeploymentClient(config))
    worker = DeliveryWorker(
        outbox,
        clients=pool,
        concurrency=4,
        batch_size=50,
        backoff_base=0.001,
        backoff_max=0.01,
    )
    expected: dict[str, str] = {}
    items = []
    for n in range(N_ASSETS * EVENTS_PER_ASSET):
        event_id = f"evt-{n:05d}"
        uri = fake.asset_uris[n % N_ASSETS]
        expected[event_id] = uri
        payload = {
            "uri": uri,
            "extra": {"n": n, "xdeps_event_id": event_id},
            "partition_key": None,
            "event_id": event_id,
        }
        items.append(NewItem(ASSET_EVENT, "faulty", payload, f"{event_id}:{uri}"))
    outbox.enqueue(items)

    started = time.monotonic()
    rounds = 0
    try:
        while time.monotonic() - started < DEADLINE_SECONDS:
            rounds += 1
            worker.drain(timeout=DEADLINE_SECONDS)
            if not outbox.list_items(state=PENDING, limit=1):
                break
            time.sleep(0.005)  # the rest are backing off for a few milliseconds
        elapsed = time.monotonic() - started
    finally:
        worker.stop(timeout=5)
        pool.close()

    delivered = outbox.list_items(state=DELIVERED, limit=5000)
    dead = outbox.list_items(state=DEAD, limit=5000)
    pending = outbox.list_items(state=PENDING, limit=5000)
    outbox.close()
    stored = Counter(e["extra"]["xdeps_event_id"] for e in fake.events)
    with capsys.disabled():
        print(
            f"\n1,000-event fault run: {elapsed:.1f} s, {rounds} drain rounds, "
            f"{fake.requests['POST /api/v2/assets/events']} POSTs, "
            f"{fake.requests['GET /api/v2/assets/events']} lookups, faults {dict(sorted(fake.faults.items()))}"
        )

    # Nothing lost, nothing doubled: every event id is stored downstream exactly once.
    assert pending == [], f"not delivered within {DEADLINE_SECONDS:g} s: {len(pending)}"
    assert dead == [], [(i.id, i.last_error) for i in dead[:5]]
    assert len(delivered) == len(expected)
    duplicates = {k: v for k, v in stored.items() if v > 1}
    assert duplicates == {}
    assert set(stored) == set(expected)
    assert len(fake.events) == len(expected)
    for event in fake.events:  # each went to its own asset, with the extra intact
        event_id = event["extra"]["xdeps_event_id"]
        assert event["uri"] == expected[event_id]
        assert event["extra"]["n"] == int(event_id.removeprefix("evt-"))

    # The faults really happened, so this cannot pass vacuously...
    for fault in ("503 before store", "500 after store", "timeout after store", "429", "listing 500"):
        assert fake.faults[fault] > 0, f"no {fault!r} was injected: {fake.faults}"
    # ...and the ambiguous ones were settled by finding the event, not by sending it again.
    found_existing = [i for i in delivered if i.result.get("found_existing")]
    assert len(found_existing) >= fake.faults["500 after store"] + fake.faults["timeout after store"]
    assert all(i.attempts > 1 for i in found_existing)
    # The lookup saw every event of the asset, so "not found" really meant "not stored".
    assert fake.lookups, "the worker never looked for an already-stored event"
    assert max(total for total, _ in fake.lookups) <= min(limit for _, limit in fake.lookups)

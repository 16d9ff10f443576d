"""Background delivery yields to the listener's hook: pacing at the writer, before each request
and before a response is read."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests
import responses
from responses import matchers

from astro_xdeps.client import DeploymentClient, DeploymentConfig
from astro_xdeps.outbox import ASSET_EVENT, DELIVERED, NewItem, Outbox, pacing
from astro_xdeps.outbox.sending import ClientPool, PacedAdapter
from astro_xdeps.outbox.worker import DeliveryWorker

BASE = "https://down.example.com"
URI = "s3://sales/orders"


def asset_item(n: int) -> NewItem:
    event_id = f"evt-{n:04d}"
    payload = {"uri": URI, "extra": {"xdeps_event_id": event_id}, "partition_key": None, "event_id": event_id}
    return NewItem(kind=ASSET_EVENT, target="down", payload=payload, idempotency_key=event_id)


def test_the_workers_threads_yield_to_hooks_and_a_hooks_thread_does_not(
    rsps: responses.RequestsMock, sqlite_store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real threads: the delivery loop (its claims) and the senders (their requests) pass the
    pacing checkpoints as background threads; a thread that never said so (a hook's) is not one."""
    outbox: Outbox = sqlite_store.open()
    checkpoints: list[tuple[str, bool]] = []
    real_yield = pacing.yield_to_foreground

    def recording_yield() -> None:
        checkpoints.append((threading.current_thread().name, pacing.is_background()))
        real_yield()

    monkeypatch.setattr(pacing, "yield_to_foreground", recording_yield)

    def answer(request) -> tuple[int, dict, str]:
        return 200, {}, json.dumps({"id": 1})

    rsps.get(
        f"{BASE}/api/v2/assets",
        json={"assets": [{"id": 7, "uri": URI, "name": URI}], "total_entries": 1},
        match=[
            matchers.query_param_matcher({"uri_pattern": URI, "limit": 100, "offset": 0, "order_by": "id"})
        ],
    )
    rsps.add_callback(responses.POST, f"{BASE}/api/v2/assets/events", callback=answer)
    config = DeploymentConfig(name="down", base_url=BASE, token="tok", api_version="v2", retries=0)
    worker = DeliveryWorker(
        outbox, clients=ClientPool(factory=lambda _: DeploymentClient(config)), concurrency=2
    )
    worker._send_seconds = 1.0  # sends measured slow: the sender threads send, not the delivery thread
    try:
        worker.start()  # its first claim commits from the delivery thread
        results = outbox.enqueue([asset_item(1), asset_item(2)])
        worker.wake()
        deadline = time.monotonic() + 10
        while {outbox.get(r.id).state for r in results} != {DELIVERED} and time.monotonic() < deadline:
            time.sleep(0.02)
        assert {outbox.get(r.id).state for r in results} == {DELIVERED}
    finally:
        worker.stop(timeout=5)
        worker.clients.close()
    by_thread = dict(checkpoints)
    assert by_thread["xdeps-delivery"] is True  # its claims
    senders = {name: bg for name, bg in checkpoints if name.startswith("xdeps-send")}
    assert senders and all(senders.values())  # its requests
    outbox.write("a hook's write", lambda conn: None)  # from this (a hook's) thread
    assert checkpoints[-1] == (threading.current_thread().name, False)
    assert not pacing.is_background()


def test_a_background_write_waits_while_a_hook_is_in_flight(
    sqlite_store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pacing, "MAX_YIELD_SECONDS", 60.0)
    outbox: Outbox = sqlite_store.open()
    order: list[str] = []
    ready = threading.Event()

    def background() -> None:
        pacing.background_thread()
        ready.set()
        outbox.write("test", lambda conn: order.append("worker"))

    thread = threading.Thread(target=background)
    with pacing.foreground():
        thread.start()
        assert ready.wait(10)
        thread.join(0.3)
        assert thread.is_alive()  # held back at the writer while the hook is in flight
        outbox.write("test", lambda conn: order.append("hook"))  # the hook's own write never waits
        assert order == ["hook"]
    thread.join(10)
    assert not thread.is_alive()
    assert order == ["hook", "worker"]
    assert pacing.in_flight() == 0


def test_a_background_write_waits_for_the_hooks_at_most_a_bounded_time(
    sqlite_store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A steady stream of hooks cannot stall delivery: each checkpoint waits MAX_YIELD_SECONDS at most."""
    monkeypatch.setattr(pacing, "MAX_YIELD_SECONDS", 0.05)
    outbox: Outbox = sqlite_store.open()
    order: list[str] = []

    def background() -> None:
        pacing.background_thread()
        for _ in range(3):
            outbox.write("test", lambda conn: order.append("worker"))

    with pacing.foreground():
        thread = threading.Thread(target=background)
        thread.start()
        thread.join(10)
        assert not thread.is_alive()
    assert order == ["worker"] * 3


class _Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def answering_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def paced_session() -> requests.Session:
    session = requests.Session()
    session.mount("http://", PacedAdapter())
    return session


def test_a_response_is_read_only_after_the_hook_in_flight(
    answering_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer arrives during the hook; the background thread parses it only afterwards."""
    monkeypatch.setattr(pacing, "MAX_YIELD_SECONDS", 60.0)
    session = paced_session()
    statuses: list[int] = []

    def background() -> None:
        pacing.background_thread()
        statuses.append(session.get(answering_url, timeout=10).status_code)

    thread = threading.Thread(target=background)
    with pacing.foreground():
        thread.start()
        thread.join(0.5)
        assert thread.is_alive() and statuses == []  # answered (at once), but not read
    thread.join(10)
    assert statuses == [200]
    # A thread that is not a background one (a hook's, an operator's) reads at once.
    with pacing.foreground():
        assert session.get(answering_url, timeout=10).status_code == 200


def test_a_paced_read_times_out_after_the_read_timeout_not_twice_it() -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # accepts (backlog), never answers
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
    errors: list[BaseException] = []

    def background() -> None:
        pacing.background_thread()
        try:
            paced_session().get(url, timeout=(5, 0.3))
        except requests.RequestException as exc:
            errors.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=background)
    thread.start()
    thread.join(10)
    listener.close()
    assert len(errors) == 1 and isinstance(errors[0], requests.ReadTimeout)
    assert time.monotonic() - started < 0.55

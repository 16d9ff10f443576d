"""Background delivery yields to the listener's hook: pacing at the writer, lower CPU priority."""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import pytest
import responses
from responses import matchers

from astro_xdeps.client import DeploymentClient, DeploymentConfig
from astro_xdeps.outbox import ASSET_EVENT, DELIVERED, NewItem, Outbox, pacing
from astro_xdeps.outbox import writer as writer_module
from astro_xdeps.outbox.sending import ClientPool
from astro_xdeps.outbox.worker import DeliveryWorker

BASE = "https://down.example.com"
URI = "s3://sales/orders"

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")


def priority(native_id: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, native_id)


def process_priority() -> int:
    return priority(os.getpid())


def background_priority() -> int:
    return min(19, process_priority() + pacing.BACKGROUND_NICE)


def asset_item(n: int) -> NewItem:
    event_id = f"evt-{n:04d}"
    payload = {"uri": URI, "extra": {"xdeps_event_id": event_id}, "partition_key": None, "event_id": event_id}
    return NewItem(kind=ASSET_EVENT, target="down", payload=payload, idempotency_key=event_id)


@linux_only
def test_background_thread_lowers_its_own_priority_only() -> None:
    seen: dict[str, int] = {}

    def run() -> None:
        pacing.background_thread()
        seen["self"] = priority(threading.get_native_id())
        child = threading.Thread(target=lambda: seen.setdefault("child", priority(threading.get_native_id())))
        child.start()
        child.join()

    before = priority(threading.get_native_id())
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen["self"] == background_priority()
    assert seen["child"] == background_priority()  # inherited: why the writer starts its threads itself
    assert priority(threading.get_native_id()) == before
    assert not pacing.is_background()


@linux_only
def test_the_workers_threads_run_at_a_lower_priority_and_the_writers_do_not(
    rsps: responses.RequestsMock, sqlite_store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real threads, real priorities: the delivery loop, the sender and the lease renewer are
    lowered; the writer's checkpoint thread, woken by the worker's first commits, is not."""
    monkeypatch.setattr(writer_module, "CHECKPOINT_EVERY", 1)
    outbox: Outbox = sqlite_store.open()
    seen: dict[str, int] = {}

    def answer(request) -> tuple[int, dict, str]:
        seen["sender"] = priority(threading.get_native_id())
        for thread in threading.enumerate():
            if thread.name in ("xdeps-delivery", "xdeps-lease-renewal", "xdeps-outbox-checkpoint"):
                seen[thread.name] = priority(thread.native_id)
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
    try:
        worker.start()  # its first claim commits from the delivery thread
        [result] = outbox.enqueue([asset_item(1)])
        worker.wake()
        deadline = time.monotonic() + 10
        while outbox.get(result.id).state != DELIVERED and time.monotonic() < deadline:
            time.sleep(0.02)
        assert outbox.get(result.id).state == DELIVERED
    finally:
        worker.stop(timeout=5)
        worker.clients.close()
    low, normal = background_priority(), process_priority()
    assert seen == {
        "sender": low,
        "xdeps-delivery": low,
        "xdeps-lease-renewal": low,
        "xdeps-outbox-checkpoint": normal,
    }
    assert priority(threading.get_native_id()) == normal


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

"""Leases and retention of the delivery worker (issue 9, defects 1 and 12).

Two workers share one outbox, as the api-server and the scheduler (or PostgreSQL replicas) do.
The downstream is mocked with ``responses``; it keeps the events it was sent, answers the
event search from them, and takes a while per send.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import responses

from astro_xdeps.outbox import DELIVERED, Outbox
from astro_xdeps.outbox.worker import DeliveryWorker
from tests.unit.outbox.test_delivery_worker import (  # the fixtures are shared with that module
    ASSET_ID,
    URI,
    asset_item,
    created_clients,
    enqueue,
    events_url,
    get,
    make_worker,
    outbox,
    register_asset,
)

__all__ = ["created_clients", "make_worker", "outbox"]  # fixtures used by name


class SlowDownstream:
    """A downstream that takes ``send_seconds`` per created event and records each one."""

    def __init__(self, send_seconds: float) -> None:
        self.send_seconds = send_seconds
        self.events: list[dict] = []
        self.lock = threading.Lock()

    def post(self, request) -> tuple[int, dict, str]:
        body = json.loads(request.body)
        time.sleep(self.send_seconds)
        with self.lock:
            event = {"id": len(self.events) + 1, "asset_id": ASSET_ID, "extra": body["extra"]}
            self.events.append(event)
        return 200, {}, json.dumps(event)

    def search(self, request) -> tuple[int, dict, str]:
        with self.lock:
            events = list(reversed(self.events))
        return 200, {}, json.dumps({"asset_events": events, "total_entries": len(events)})

    def sends_per_event_id(self) -> Counter:
        with self.lock:
            return Counter(e["extra"]["xdeps_event_id"] for e in self.events)


def run_until_delivered(
    workers: list[DeliveryWorker], outbox: Outbox, ids: list[int], timeout: float
) -> None:
    """Each worker delivers in its own thread, over and over, until every item is delivered."""
    done = threading.Event()
    errors: list[BaseException] = []

    def loop(worker: DeliveryWorker) -> None:
        try:
            while not done.is_set():
                if worker.deliver_due().handled == 0:
                    time.sleep(0.05)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(w,), daemon=True) for w in workers]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if all(get(outbox, i).state == DELIVERED for i in ids):
                break
            time.sleep(0.1)
    finally:
        done.set()
        for t in threads:
            t.join(30)
    assert not errors, errors


def test_two_workers_with_slow_sends_and_a_short_lease_send_each_event_once(
    rsps: responses.RequestsMock, outbox: Outbox, make_worker
) -> None:
    """Regression (defect 1): a batch outlived its 1 s lease, the other worker re-sent it."""
    register_asset(rsps)
    downstream = SlowDownstream(send_seconds=0.7)
    rsps.add_callback("POST", events_url(), callback=downstream.post)
    rsps.add_callback("GET", events_url(), callback=downstream.search)
    rsps.assert_all_requests_are_fired = False  # the search runs only if a worker takes an item over
    ids = enqueue(outbox, *(asset_item(n) for n in range(1, 7)))
    workers = [make_worker(lease_seconds=1.0, concurrency=1), make_worker(lease_seconds=1.0, concurrency=1)]

    run_until_delivered(workers, outbox, ids, timeout=60)

    assert all(get(outbox, i).state == DELIVERED for i in ids)
    sent = downstream.sends_per_event_id()
    assert sent == Counter({f"evt-{n:04d}": 1 for n in range(1, 7)})


def test_claim_is_sized_to_what_can_be_sent_within_half_a_lease(make_worker) -> None:
    worker = make_worker(lease_seconds=10.0, concurrency=4, batch_size=200)
    assert worker.claim_limit() == 20  # 1 s assumed per send until one is measured
    worker._record_send_time(0.05)
    assert worker.claim_limit() == 200  # capped by batch_size
    worker._send_seconds = 2.0
    assert worker.claim_limit() == 10
    worker._send_seconds = 100.0
    assert worker.claim_limit() == 1


def test_an_item_taken_over_by_another_worker_is_not_sent(
    rsps: responses.RequestsMock, outbox: Outbox, make_worker
) -> None:
    """The lease ran out (no renewal reached the database in time) and another worker took it."""
    [item_id] = enqueue(outbox, asset_item(1))
    worker = make_worker(lease_seconds=1.0)
    [item] = outbox.claim(worker.owner, limit=1, lease_seconds=1.0)
    worker._held[item.id] = time.time() + 0.1  # close to its end: the worker must renew first
    outbox.claim("other-worker", limit=1, lease_seconds=60.0, now=time.time() + 5)  # took it over

    outcome = worker._deliver_one(item, set(), threading.Lock())

    assert outcome is None  # skipped: nothing sent, nothing to record
    assert len(rsps.calls) == 0  # nothing sent
    assert get(outbox, item_id).lease_owner == "other-worker"


def test_renewal_keeps_held_leases_and_forgets_lost_ones(outbox: Outbox, make_worker) -> None:
    ids = enqueue(outbox, asset_item(1), asset_item(2))
    worker = make_worker(lease_seconds=1.0)
    now = time.time()
    outbox.claim(worker.owner, limit=2, lease_seconds=1.0, now=now)
    worker._held.update({i: now + 1.0 for i in ids})
    outbox.claim("other-worker", limit=1, lease_seconds=60.0, now=now + 5)  # takes the first

    worker.renew_leases()

    assert set(worker._held) == {ids[1]}
    assert get(outbox, ids[1]).lease_until >= time.time() + 0.5


# -- retention ------------------------------------------------------------------------------------


def test_worker_thread_purges_delivered_items_past_the_retention(
    rsps: responses.RequestsMock, outbox: Outbox, make_worker
) -> None:
    """Regression (defect 12): nothing ever called purge_delivered, the table grew without bound."""
    register_asset(rsps)
    rsps.post(events_url(), json={"id": 1})
    [old, recent] = enqueue(outbox, asset_item(1), asset_item(2))
    assert make_worker().drain().delivered == 2
    with outbox.write_engine.begin() as conn:  # delivered 8 days ago
        conn.exec_driver_sql(
            f"UPDATE {outbox.table_name} SET delivered_at = delivered_at - {8 * 86400} WHERE id = {old}"
        )
    worker = make_worker(purge_after=7 * 86400.0, idle_poll=0.05)
    worker.start()
    deadline = time.monotonic() + 20
    while outbox.get(old) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.stop()
    assert outbox.get(old) is None
    assert outbox.get(recent) is not None


def test_purge_runs_at_most_once_per_interval_and_not_when_retention_is_off(
    outbox: Outbox, make_worker
) -> None:
    worker = make_worker(purge_after=60.0, purge_interval=3600.0)
    calls = []
    outbox.purge_delivered = lambda seconds, now=None: calls.append(seconds) or 0  # type: ignore[method-assign]
    worker.purge_if_due()
    worker.purge_if_due()
    assert calls == [60.0]
    make_worker(purge_after=0).purge_if_due()
    assert calls == [60.0]


def test_retry_check_reads_events_since_the_item_was_enqueued(
    rsps: responses.RequestsMock, outbox: Outbox, make_worker
) -> None:
    """Regression (defect 12): the check read only the 100 newest events of the asset."""
    register_asset(rsps)
    item = asset_item(1)
    [item_id] = enqueue(outbox, item)
    rsps.post(events_url(), status=504)
    assert make_worker().deliver_due().retried == 1
    created = get(outbox, item_id).created_at
    busy = [{"id": 1000 - i, "extra": {"xdeps_event_id": f"x-{i}"}} for i in range(100)]
    mine = {"id": 7, "extra": {"xdeps_event_id": "evt-0001"}}
    rsps.get(events_url(), json={"asset_events": busy})
    rsps.get(events_url(), json={"asset_events": [mine]})
    outbox.retry([item_id])
    assert make_worker().deliver_due().delivered == 1
    searches = [
        c.request for c in rsps.calls if c.request.method == "GET" and "/assets/events" in c.request.url
    ]
    assert [r.params.get("offset") for r in searches] == ["0", "100"]
    since = searches[0].params["timestamp_gte"]
    from datetime import datetime

    assert datetime.fromisoformat(since.replace("Z", "+00:00")).timestamp() <= created - 600 + 1
    assert get(outbox, item_id).result == {"event_id": 7, "found_existing": True}
    assert len([c for c in rsps.calls if c.request.method == "POST"]) == 1
    _ = URI

"""The delivery worker against a real SQLite outbox and a mocked downstream REST API.

Each failure class ends in the outcome the worker's docstring promises: delivered, retried
later (with backoff, ``Retry-After`` and a retry horizon) or dead. Time is an injected clock.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import responses
import sqlalchemy as sa
from responses import matchers

from astro_xdeps.client import DeploymentClient, DeploymentConfig
from astro_xdeps.exceptions import ConfigError
from astro_xdeps.outbox import ASSET_EVENT, DAG_RUN, DEAD, DELIVERED, PENDING, Item, NewItem, Outbox
from astro_xdeps.outbox import worker as worker_module
from astro_xdeps.outbox.worker import ClientPool, DeliveryWorker, DrainStats, backoff_delay

BASE = "https://down.example.com"
OTHER = "https://other.example.com"
TOKEN = "tok-SECRET-0a1b2c3d4e5f"
URI = "s3://sales/orders"
ASSET_ID = 7
HOUR = 3600.0


class Clock:
    """Epoch seconds that move only when told to.

    Starts a second ahead of real time: items enqueue stamps with ``time.time()`` during the
    test are then already due for it.
    """

    def __init__(self) -> None:
        self.now = time.time() + 1.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def config(name: str) -> DeploymentConfig:
    base = OTHER if name == "other" else BASE
    return DeploymentConfig(name=name, base_url=base, token=TOKEN, api_version="v2", retries=0)


class RecordingClient(DeploymentClient):
    closed = False

    def close(self) -> None:
        self.closed = True
        super().close()


@pytest.fixture
def outbox(sqlite_store) -> Outbox:
    return sqlite_store.open()


@pytest.fixture
def created_clients() -> list[RecordingClient]:
    return []


@pytest.fixture
def make_worker(
    outbox: Outbox, created_clients: list[RecordingClient]
) -> Iterator[Callable[..., DeliveryWorker]]:
    workers: list[DeliveryWorker] = []

    def factory(target: str) -> DeploymentClient:
        client = RecordingClient(config(target))
        created_clients.append(client)
        return client

    def make(**kw: Any) -> DeliveryWorker:
        kw.setdefault("backoff_base", 1.0)
        kw.setdefault("backoff_max", 300.0)
        worker = DeliveryWorker(outbox, clients=ClientPool(factory=factory), **kw)
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.stop(timeout=5)
        worker.clients.close()


def asset_item(n: int = 1, *, target: str = "down", uri: str = URI) -> NewItem:
    event_id = f"evt-{n:04d}"
    payload = {
        "uri": uri,
        "extra": {"n": n, "xdeps_event_id": event_id},
        "partition_key": None,
        "event_id": event_id,
    }
    return NewItem(kind=ASSET_EVENT, target=target, payload=payload, idempotency_key=f"{event_id}:{uri}")


def dag_run_item(run_id: str = "xdeps__rule__abc") -> NewItem:
    payload = {"dag_id": "consumer", "dag_run_id": run_id, "conf": {"why": "upstream"}, "note": None}
    return NewItem(kind=DAG_RUN, target="down", payload=payload, idempotency_key=run_id)


def enqueue(outbox: Outbox, *items: NewItem) -> list[int]:
    return [r.id for r in outbox.enqueue(list(items))]


def get(outbox: Outbox, item_id: int) -> Item:
    item = outbox.get(item_id)
    assert item is not None
    return item


def assets_url(base: str = BASE) -> str:
    return f"{base}/api/v2/assets"


def events_url(base: str = BASE) -> str:
    return f"{base}/api/v2/assets/events"


def register_asset(mock: responses.RequestsMock, base: str = BASE, uri: str = URI) -> None:
    mock.get(
        assets_url(base),
        json={"assets": [{"id": ASSET_ID, "uri": uri, "name": uri}], "total_entries": 1},
        match=[
            matchers.query_param_matcher({"uri_pattern": uri, "limit": 100, "offset": 0, "order_by": "id"})
        ],
    )


def recent_events_match() -> list:
    params = {"asset_id": ASSET_ID, "order_by": "-timestamp", "limit": 100, "offset": 0}
    return [matchers.query_param_matcher(params, strict_match=False)]


def stored_event(event_id: str, server_id: int = 555) -> dict:
    return {
        "id": server_id,
        "asset_id": ASSET_ID,
        "uri": URI,
        "extra": {"xdeps_event_id": event_id, "from_rest_api": True},
        "timestamp": "2024-06-01T00:00:00Z",
    }


def posts(mock: responses.RequestsMock, base: str = BASE) -> list:
    return [c for c in mock.calls if c.request.method == "POST" and c.request.url.startswith(base)]


# -- success -------------------------------------------------------------------------------------


def test_delivered_on_200_with_the_result_kept(
    rsps: responses.RequestsMock, outbox: Outbox, make_worker
) -> None:
    register_asset(rsps)
    item = asset_item(1)
    rsps.post(
        events_url(),
        json={"id": 101, "asset_id": ASSET_ID, "extra": {}},
        match=[
            matchers.json_params_matcher({"asset_id": ASSET_ID, "extra": item.payload["extra"]}),
            matchers.header_matcher({"Authorization": f"Bearer {TOKEN}"}),
        ],
    )
    [item_id] = enqueue(outbox, item)

    stats = make_worker().deliver_due()

    assert stats == DrainStats(delivered=1)
    stored = get(outbox, item_id)
    assert stored.state == DELIVERED
    assert stored.result == {"event_id": 101}
    assert stored.attempts == 1
    assert stored.last_error is None
    assert stored.lease_owner is None
    # A first attempt does not look for the event downstream: nothing can be there yet.
    assert not [c for c in rsps.calls if "/assets/events" in c.request.url and c.request.method == "GET"]


def test_partition_key_is_sent(rsps: responses.RequestsMock, outbox: Outbox, make_worker) -> None:
    register_asset(rsps)
    item = asset_item(1)
    item.payload["partition_key"] = "2024-06-01"
    rsps.post(
        events_url(),
        json={"id": 5},
        match=[
            matchers.json_params_matcher(
                {"asset_id": ASSET_ID, "extra": item.payload["extra"], "partition_key": "2024-06-01"}
            )
        ],
    )
    [item_id] = enqueue(outbox, item)
    assert make_worker().deliver_due().delivered == 1
    assert get(outbox, item_id).state == DELIVERED


def test_nothing_due_nothing_sent(rsps: responses.RequestsMock, make_worker) -> None:
    assert make_worker().deliver_due() == DrainStats()
    assert len(rsps.calls) == 0


# -- retried -------------------------------------------------------------------------------------


def test_5xx_is_retried_later_with_backoff_and_attempts_counted(
    rsps: responses.RequestsMock, outbox: Outbox, make_worker
) -> None:
    register_asset(rsps)
    rsps.post(events_url(), status=503, body="upstream connect error")
    rsps.get(events_url(), json={"asset_events": [], "total_entries": 0}, match=recent_events_match())
    clock = Clock()
    worker = make_worker(clock=clock)
    [item_id] = enqueue(outbox, asset_item(1))

    assert worker.deliver_due() == DrainStats(retried=1)
    first = get(outbox, item_id)
    assert first.state == PENDING
    assert first.attempts == 1
    assert clock.now + 0.5 <= first.next_attempt_at <= clock.now + 1.0  # base 1 s, jitter 50-100%
    assert "HTTP 503" in first.last_error
    assert "upstream connect error" in first.last_error
    assert TOKEN not in first.last_error
    assert first.lease_owner is None

    assert worker.deliver_due() == DrainStats()  # not due yet
    clock.advance(1.0)
    assert worker.deliver_due() == DrainStats(retried=1)
    second = get(outbox, item_id)
    assert second.state == PENDING
    assert second.attempts == 2
    assert clock.now + 1.0 <= second.next_attempt_at <= clock.now + 2.0  # doubled
    assert len(posts(rsps)) == 2


def test_422_is_dead_at_once(rsps: responses.RequestsMock, outbox: Outbox, make_worker) -> None:
    register_asset(rsps)
    rsps.post(events_url(), status=422, json={"detail": "partition_key not allowed"})
    [item_id] = enqueue(outbox, asset_item(1))

    assert make_worker().deliver_due() == DrainStats(dead=1)
    item = get(outbox, item_id)
    assert item.state == DEAD
    assert item.attempts == 1
    assert item.last_error.startswith("rejected by the target, not retried: ")
    assert "HTTP 422" in item.last_error and "partition_key not allowed" in item.last_error


def test_missing_asset_during_a_deploy_is_retried_then_delivered(
    rsps: responses.RequestsMock, outbox: Outbox, make_worker
) -> None:
    deployed = {"asset": False}

    def asset_search(request: requests.PreparedRequest) -> tuple[int, dict, str]:
        assets = [{"id": ASSET_ID, "uri": URI, "name": URI}] if deployed["asset"] else []
        return 200, {}, json.dumps({"assets": assets, "total_entries": len(assets)})

    rsps.add_callback(responses.GET, assets_url(), callback=asset_search)
    rsps.get(events_url(), json={"asset_events": [], "total_entries": 0}, match=recent_events_match())
    rsps.post(events_url(), json={"id": 9})
    clock = Clock()
    worker = make_worker(clock=clock)
    [item_id] = enqueue(outbox, asset_item(1))

    assert worker.deliver_due() == DrainStats(retried=1)
    item = get(outbox, item_id)
    assert item.state == PENDING
    assert "No asset with uri 's3://sales/orders'" in item.last_error
    assert posts(rsps) == []

    clock.advance(HOUR)  # still missing an hour later: still not dead
    assert worker.deliver_due() == DrainStats(retried=1)
    assert get(outbox, item_id).state == PENDING

    deployed["asset"] = True
    clock.advance(HOUR)
    assert worker.deliver_due() == DrainStats(delivered=1)
    item = get(outbox, item_id)
    assert item.state == DELIVERED
    assert item.result == {"event_id": 9}
    assert item.attempts == 3
    assert len(posts(rsps)) == 1


def test_asset_removed_after_resolution_is_retried(
    rsps: responses.RequestsMock, outbox: Outbox, make_worker
) -> None:
    """A 404 on the POST itself (the cached asset id went away) is a retry, not a dead letter."""
    register_asset(rsps)
    rsps.post(events_url(), status=404, json={"detail": "asset not found"})
    [item_id] = enqueue(outbox, asset_item(1))
    assert make_worker().deliver_due() == DrainStats(retried=1)
    assert get(outbox, item_id).state == PENDING


def test_dead_after_the_retry_horizon(rsps: responses.RequestsMock, outbox: Outbox, make_worker) -> None:
    register_asset(rsps)
    rsps.post(events_url(), status=503)
    rsps.get(events_url(), json={"asset_events": [], "total_entries": 0})
    clock = Clock()
    worker = make_worker(clock=clock, retry_horizon=72 * HOUR)
    [item_id] = enqueue(outbox, asset_item(1))

    clock.advance(72 * HOUR - 60)  # a minute short of the horizon: retried
    assert worker.deliver_due() == DrainStats(retried=1)
    assert get(outbox, item_id).state == PENDING

    clock.advance(120)
    assert worker.deliver_due() == DrainStats(dead=1)
    item = get(outbox, item_id)
    assert item.state == DEAD
    assert item.attempts == 2
    assert item.last_error.startswith("gave up after 72 h of retries: The deployment is overloaded")
    assert "HTTP 503" in item.last_error


def test_an_item_an_operator_retries_gets_a_new_horizon(
    rsps: responses.RequestsMock, outbox: Outbox, make_worker
) -> None:
    """Regression: the horizon counted from created_at, so a dead item revived with
    ``astro-xdeps outbox retry`` was killed again at its first failure after the retry."""
    register_asset(rsps)
    rsps.post(events_url(), status=503)
    rsps.get(events_url(), json={"asset_events": [], "total_entries": 0})
    clock = Clock()
    worker = make_worker(clock=clock, retry_horizon=72 * HOUR)
    [item_id] = enqueue(outbox, asset_item(1))
    created = time.time() - 73 * HOUR  # enqueued three days ago, the downstream down ever since
    t = sa.table(outbox.table_name, sa.column("id"), sa.column("created_at"))
    with outbox.write_engine.begin() as conn:
        conn.execute(sa.update(t).where(t.c.id == item_id).values(created_at=created))
    assert worker.deliver_due() == DrainStats(dead=1)

    assert outbox.retry([item_id]) == 1
    clock.advance(1)
    assert worker.deliver_due() == DrainStats(retried=1)  # a failure after the retry: retried again
    item = get(outbox, item_id)
    assert item.state == PENDING
    assert item.created_at == pytest.approx(created)  # kept: find_event(since=) reads from it


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(
    rsps: responses.RequestsMock, outbox: Outbox, make_worker, status: int
) -> None:
    register_asset(rsps)
    rsps.post(events_url(), status=status, headers={"Retry-After": "90"})
    clock = Clock()
    [item_id] = enqueue(outbox, asset_item(1))
    assert make_worker(clock=clock).deliver_due() == DrainStats(retried=1)
    assert get(outbox, item_id).next_attempt_at - clock.now == pytest.approx(90, abs=1e-3)


def test_backoff_is_capped_but_retry_after_may_exceed_the_cap() -> None:
    for attempts in range(1, 30):
        assert 0.5 * min(10.0, 2 ** (attempts - 1)) <= backoff_delay(attempts, base=1, maximum=10) <= 10.0
    assert backoff_delay(30, base=1, maximum=10, retry_after=60) == 60


# -- effectively once ----------------------------------------------------------------------------


def test_retry_after_an_ambiguous_500_finds_the_event_and_does_not_post_again(
    rsps: responses.RequestsMock, outbox: Outbox, make_worker
) -> None:
    register_asset(rsps)
    rsps.post(events_url(), status=500, body="Internal Server Error")  # the event was written anyway
    rsps.get(
        events_url(),
        json={
            "asset_events": [stored_event("evt-0999", 554), stored_event("evt-0001", 555)],
            "total_entries": 2,
        },
        match=recent_events_match(),
    )
    clock = Clock()
    worker = make_worker(clock=clock)
    [item_id] = enqueue(outbox, asset_item(1))

    assert worker.deliver_due() == DrainStats(retried=1)
    assert "HTTP 500" in get(outbox, item_id).last_error
    clock.advance(5)
    assert worker.deliver_due() == DrainStats(delivered=1)

    item = get(outbox, item_id)
    assert item.state == DELIVERED
    assert item.result == {"event_id": 555, "found_existing": True}
    assert len(posts(rsps)) == 1  # no second POST, so no second event downstream


def test_retry_after_an_ambiguous_timeout_resends_when_the_event_is_not_there(
    rsps: responses.RequestsMock, outbox: Outbox, make_worker
) -> None:
    register_asset(rsps)
    rsps.post(events_url(), body=requests.ReadTimeout("read timed out"))
    rsps.get(
        events_url(),
        json={"asset_events": [stored_event("evt-0999")], "total_entries": 1},
        match=recent_events_match(),
    )
    clock = Clock()
    worker = make_worker(clock=clock)
    [item_id] = enqueue(outbox, asset_item(1))
    assert worker.deliver_due() == DrainStats(retried=1)
    assert "timed out" in get(outbox, item_id).last_error

    rsps.replace(responses.POST, events_url(), json={"id": 777})
    clock.advance(5)
    assert worker.deliver_due() == DrainStats(delivered=1)
    assert get(outbox, item_id).result == {"event_id": 777}
    assert len(posts(rsps)) == 2


def test_a_failing_lookup_is_retried_without_posting(
    rsps: responses.RequestsMock, outbox: Outbox, make_worker
) -> None:
    register_asset(rsps)
    rsps.post(events_url(), status=500)
    rsps.get(events_url(), status=500, match=recent_events_match())
    clock = Clock()
    worker = make_worker(clock=clock)
    [item_id] = enqueue(outbox, asset_item(1))
    worker.deliver_due()
    clock.advance(5)
    assert worker.deliver_due() == DrainStats(retried=1)
    assert "GET /api/v2/assets/events" in get(outbox, item_id).last_error
    assert len(posts(rsps)) == 1  # could not check, so did not send


def test_replayed_dead_item_is_checked_before_sending_again(
    rsps: responses.RequestsMock, outbox: Outbox, make_worker
) -> None:
    """An item dead-lettered after an ambiguous failure may have arrived: replay must check."""
    register_asset(rsps)
    rsps.post(events_url(), status=500)
    rsps.get(
        events_url(),
        json={"asset_events": [stored_event("evt-0001", 555)], "total_entries": 1},
        match=recent_events_match(),
    )
    clock = Clock()
    worker = make_worker(clock=clock, retry_horizon=60)
    [item_id] = enqueue(outbox, asset_item(1))
    clock.advance(61)
    assert worker.deliver_due() == DrainStats(dead=1)

    assert outbox.retry(all_dead=True) == 1  # the operator's replay resets attempts to 0
    assert worker.deliver_due() == DrainStats(delivered=1)
    assert get(outbox, item_id).result == {"event_id": 555, "found_existing": True}
    assert len(posts(rsps)) == 1


# -- DAG runs ------------------------------------------------------------------------------------

DAG_RUNS = f"{BASE}/api/v2/dags/consumer/dagRuns"


def test_dag_run_created(rsps: responses.RequestsMock, outbox: Outbox, make_worker) -> None:
    rsps.post(
        DAG_RUNS,
        json={"dag_run_id": "xdeps__rule__abc", "state": "queued"},
        match=[
            matchers.json_params_matcher(
                {"dag_run_id": "xdeps__rule__abc", "conf": {"why": "upstream"}, "logical_date": None}
            )
        ],
    )
    [item_id] = enqueue(outbox, dag_run_item())
    assert make_worker().deliver_due() == DrainStats(delivered=1)
    item = get(outbox, item_id)
    assert item.state == DELIVERED
    assert item.result == {"dag_run_id": "xdeps__rule__abc", "created": True}


def test_dag_run_that_already_exists_is_delivered(
    rsps: responses.RequestsMock, outbox: Outbox, make_worker
) -> None:
    rsps.post(DAG_RUNS, status=409, json={"detail": "DAGRun with run_id exists"})
    [item_id] = enqueue(outbox, dag_run_item())
    assert make_worker().deliver_due() == DrainStats(delivered=1)
    item = get(outbox, item_id)
    assert item.state == DELIVERED
    assert item.result == {"dag_run_id": "xdeps__rule__abc", "created": False}


def test_dag_missing_during_a_deploy_is_retried(
    rsps: responses.RequestsMock, outbox: Outbox, make_worker
) -> None:
    rsps.post(DAG_RUNS, status=404, json={"detail": "DAG not found"})
    [item_id] = enqueue(outbox, dag_run_item())
    assert make_worker().deliver_due() == DrainStats(retried=1)
    assert get(outbox, item_id).state == PENDING


# -- targets -------------------------------------------------------------------------------------


def test_unreachable_target_short_circuits_the_rest_of_its_batch(
    rsps: responses.RequestsMock, outbox: Outbox, make_worker
) -> None:
    rsps.get(assets_url(), body=requests.ConnectionError("[Errno 111] Connection refused"))
    ids = enqueue(outbox, asset_item(1), asset_item(2), asset_item(3))

    assert make_worker(concurrency=1).deliver_due() == DrainStats(retried=3)
    assert len(rsps.calls) == 1  # one connection attempt, not one per item
    first, *rest = (get(outbox, i) for i in ids)
    assert "could not be reached" in first.last_error
    for item in rest:
        assert item.state == PENDING
        assert item.last_error == "not sent: the target was unreachable earlier in this batch"


def test_one_target_down_does_not_hold_back_another(
    rsps: responses.RequestsMock, outbox: Outbox, make_worker
) -> None:
    rsps.get(assets_url(BASE), body=requests.ConnectionError("[Errno 111] Connection refused"))
    register_asset(rsps, OTHER)
    rsps.post(events_url(OTHER), json={"id": 1})
    down = enqueue(outbox, asset_item(1), asset_item(2))
    up = enqueue(outbox, asset_item(3, target="other"), asset_item(4, target="other"))

    assert make_worker(concurrency=1).deliver_due() == DrainStats(delivered=2, retried=2)
    assert [get(outbox, i).state for i in up] == [DELIVERED, DELIVERED]
    assert [get(outbox, i).state for i in down] == [PENDING, PENDING]
    assert len([c for c in rsps.calls if c.request.url.startswith(BASE)]) == 1


def test_an_unreachable_target_is_left_alone_until_its_probe(
    rsps: responses.RequestsMock, outbox: Outbox, make_worker, caplog: pytest.LogCaptureFixture
) -> None:
    """Its breaker: while it is open the target's items are not claimed (no write, no connection
    attempt, attempts unchanged); at the probe one goes out; its success closes the breaker."""
    refused = rsps.get(assets_url(), body=requests.ConnectionError("[Errno 111] Connection refused"))
    clock = Clock()
    worker = make_worker(concurrency=1, clock=clock, backoff_base=10.0)  # first probe in 5..10 s
    [first] = enqueue(outbox, asset_item(1))
    assert worker.deliver_due() == DrainStats(retried=1)
    assert "Target down is unreachable: its items wait" in caplog.text

    waiting = enqueue(outbox, asset_item(2), asset_item(3))  # due now, but their target is down
    clock.advance(4.9)
    assert worker.deliver_due() == DrainStats()
    assert refused.call_count == 1
    assert [get(outbox, i).attempts for i in waiting] == [0, 0]
    # The worker sleeps until the probe (or item 1's retry), not "due now" on the waiting items.
    next_due = worker._next_due()
    assert next_due is not None and clock.now < next_due <= clock.now + 5.2

    rsps.remove(refused)
    register_asset(rsps)
    rsps.get(events_url(), json={"asset_events": [], "total_entries": 0}, match=recent_events_match())
    rsps.post(events_url(), json={"id": 1})
    clock.advance(5.2)  # past the probe and item 1's retry
    assert worker.deliver_due() == DrainStats(delivered=1)  # the probe: the oldest item
    assert "Target down is reachable again" in caplog.text
    assert worker.deliver_due() == DrainStats(delivered=2)
    assert [get(outbox, i).state for i in [first, *waiting]] == [DELIVERED] * 3


def test_a_probe_refused_again_waits_longer(
    rsps: responses.RequestsMock, outbox: Outbox, make_worker
) -> None:
    refused = rsps.get(assets_url(), body=requests.ConnectionError("[Errno 111] Connection refused"))
    clock = Clock()
    worker = make_worker(concurrency=1, clock=clock, backoff_base=10.0)
    enqueue(outbox, asset_item(1))
    worker.deliver_due()
    clock.advance(10.1)  # probe due (first wait: 5..10 s)
    [second] = enqueue(outbox, asset_item(2))
    assert worker.deliver_due() == DrainStats(retried=1)  # one probe, the oldest item
    assert refused.call_count == 2
    assert get(outbox, second).attempts == 0
    clock.advance(9.9)  # the second wait is 10..20 s
    assert worker.deliver_due() == DrainStats()
    assert refused.call_count == 2


def test_items_of_a_target_down_past_the_retry_horizon_are_dead_at_its_next_probe(
    rsps: responses.RequestsMock, outbox: Outbox, make_worker, caplog: pytest.LogCaptureFixture
) -> None:
    """Its breaker keeps them from being claimed, so no send finds them past the horizon."""
    rsps.get(assets_url(), body=requests.ConnectionError("[Errno 111] Connection refused"))
    clock = Clock()
    worker = make_worker(concurrency=1, clock=clock, retry_horizon=HOUR, backoff_max=2 * HOUR)
    [first] = enqueue(outbox, asset_item(1))
    worker.deliver_due()  # refused: the breaker opens
    waiting = [first, *enqueue(outbox, asset_item(2), asset_item(3))]
    worker._breakers.trip("down", clock.now)  # refused again, and again: the next probe is far off
    worker._breakers.trip("down", clock.now)
    clock.advance(HOUR + 1)
    assert [get(outbox, i).state for i in waiting] == [PENDING] * 3

    worker.deliver_due()

    for item_id in waiting:
        item = get(outbox, item_id)
        assert (item.state, item.last_error) == (
            DEAD,
            "gave up after 1 h of retries: the target was unreachable",
        )
    assert "3 outbox item(s) to down are dead: the target was unreachable for 1 h" in caplog.text


def test_a_probe_with_nothing_due_closes_the_breaker(outbox: Outbox, make_worker) -> None:
    clock = Clock()
    worker = make_worker(clock=clock)
    worker._breakers.trip("down", clock.now)
    assert worker._next_due() == pytest.approx(worker._breakers.next_probe())
    clock.advance(1.1)
    assert worker.deliver_due() == DrainStats()
    assert worker._breakers.open_targets() == []
    assert worker._next_due() is None


def test_fast_sends_go_out_from_the_workers_thread_and_slow_ones_from_the_senders(
    rsps: responses.RequestsMock, outbox: Outbox, make_worker
) -> None:
    """A send that waits on the CPU (the GIL), not the network, gains nothing from more threads:
    the worker's own thread sends; once sends turn slow, the sender threads take the rest."""
    register_asset(rsps)
    senders: list[str] = []
    worker = make_worker(concurrency=4)

    def post(request: requests.PreparedRequest) -> tuple[int, dict, str]:
        senders.append(threading.current_thread().name)
        if len(senders) == 2:
            worker._send_seconds = 1.0  # the downstream turned slow
        return 200, {}, json.dumps({"id": len(senders)})

    rsps.add_callback(responses.POST, events_url(), callback=post)
    worker._send_seconds = 0.001  # measured fast
    enqueue(outbox, *(asset_item(n) for n in range(1, 7)))

    assert worker.deliver_due() == DrainStats(delivered=6)
    here = threading.current_thread().name
    assert senders[:2] == [here, here]
    assert senders[2:] and all(name.startswith("xdeps-send") for name in senders[2:])


def test_targets_are_interleaved(rsps: responses.RequestsMock, outbox: Outbox, make_worker) -> None:
    register_asset(rsps, BASE)
    register_asset(rsps, OTHER)
    rsps.post(events_url(BASE), json={"id": 1})
    rsps.post(events_url(OTHER), json={"id": 2})
    enqueue(outbox, asset_item(1), asset_item(2), asset_item(3), asset_item(4, target="other"))

    assert make_worker(concurrency=1).deliver_due() == DrainStats(delivered=4)
    sent = [
        (c.request.url.split("/api")[0], c.request.body) for c in rsps.calls if c.request.method == "POST"
    ]
    assert [base for base, _ in sent] == [BASE, OTHER, BASE, BASE]


def test_auth_error_drops_the_client_so_the_connection_is_read_again(
    rsps: responses.RequestsMock, outbox: Outbox, make_worker, created_clients: list[RecordingClient]
) -> None:
    register_asset(rsps)
    rsps.post(events_url(), status=401, json={"detail": "token expired"})
    clock = Clock()
    worker = make_worker(clock=clock)
    [item_id] = enqueue(outbox, asset_item(1))

    assert worker.deliver_due() == DrainStats(retried=1)
    item = get(outbox, item_id)
    assert item.state == PENDING
    assert "did not accept our credentials" in item.last_error
    assert len(created_clients) == 1 and created_clients[0].closed

    rsps.replace(responses.POST, events_url(), json={"id": 3})
    rsps.get(events_url(), json={"asset_events": [], "total_entries": 0})
    clock.advance(5)
    assert worker.deliver_due() == DrainStats(delivered=1)
    assert len(created_clients) == 2  # a fresh client, i.e. a fresh read of the connection


def test_client_reused_across_items_when_healthy(
    rsps: responses.RequestsMock, outbox: Outbox, make_worker, created_clients: list[RecordingClient]
) -> None:
    register_asset(rsps)
    rsps.post(events_url(), json={"id": 1})
    enqueue(outbox, *(asset_item(n) for n in range(5)))
    # One sender: with several, each may resolve the asset before the first caches it.
    assert make_worker(concurrency=1).deliver_due() == DrainStats(delivered=5)
    assert len(created_clients) == 1 and not created_clients[0].closed
    assert len([c for c in rsps.calls if c.request.method == "GET"]) == 1  # asset id resolved once


def test_missing_connection_is_retried(outbox: Outbox) -> None:
    attempts: list[str] = []

    def factory(target: str) -> DeploymentClient:
        attempts.append(target)
        raise ConfigError(f"The connection {target!r} is not defined")

    clock = Clock()
    worker = DeliveryWorker(outbox, clients=ClientPool(factory=factory), clock=clock)
    try:
        [item_id] = enqueue(outbox, asset_item(1))
        assert worker.deliver_due() == DrainStats(retried=1)
        clock.advance(HOUR)
        assert worker.deliver_due() == DrainStats(retried=1)
    finally:
        worker.stop(timeout=5)
    assert attempts == ["down", "down"]
    item = get(outbox, item_id)
    assert item.state == PENDING
    assert item.last_error == "The connection 'down' is not defined"


def test_unexpected_error_keeps_the_item(rsps: responses.RequestsMock, outbox: Outbox, make_worker) -> None:
    broken = asset_item(1)
    del broken.payload["event_id"]  # a payload bug: the worker must not lose the item over it
    [item_id] = enqueue(outbox, broken)
    assert make_worker().deliver_due() == DrainStats(retried=1)
    item = get(outbox, item_id)
    assert item.state == PENDING
    assert item.last_error == "KeyError: 'event_id'"


# -- drain and the background thread -------------------------------------------------------------


def test_drain_delivers_everything_due_then_stops(
    ordered: responses.RequestsMock, outbox: Outbox, make_worker
) -> None:
    register_asset(ordered)
    ordered.post(events_url(), status=500)  # first try: nothing delivered in this round
    ordered.get(events_url(), json={"asset_events": [], "total_entries": 0})  # second try: check
    ordered.post(events_url(), json={"id": 1})  # second try: sent
    [item_id] = enqueue(outbox, asset_item(1))

    worker = make_worker(backoff_base=0.0)  # the retry is due at once, so drain goes on
    assert worker.drain(timeout=30) == DrainStats(delivered=1, retried=1)
    assert get(outbox, item_id).state == DELIVERED
    assert worker.drain(timeout=30) == DrainStats()


def test_drain_stops_when_only_later_retries_remain(
    rsps: responses.RequestsMock, outbox: Outbox, make_worker
) -> None:
    register_asset(rsps)
    rsps.post(events_url(), status=503)
    enqueue(outbox, asset_item(1))
    started = time.monotonic()
    assert make_worker(backoff_base=60.0).drain() == DrainStats(retried=1)
    assert time.monotonic() - started < 10
    assert len(posts(rsps)) == 1


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_background_thread_delivers_an_item_enqueued_after_start(
    rsps: responses.RequestsMock, outbox: Outbox, make_worker
) -> None:
    register_asset(rsps)
    rsps.post(events_url(), json={"id": 1})
    worker = make_worker(idle_poll=60.0)  # only wake() can make it look before a minute passes
    worker.start()
    assert worker.running
    worker.start()  # idempotent
    assert [t.name for t in threading.enumerate()].count("xdeps-delivery") == 1
    time.sleep(0.2)  # let it find the outbox empty and go to sleep

    [item_id] = enqueue(outbox, asset_item(1))
    worker.wake()
    assert wait_for(lambda: get(outbox, item_id).state == DELIVERED)

    started = time.monotonic()
    worker.stop(timeout=5)
    assert time.monotonic() - started < 5
    assert not worker.running


def test_worker_can_be_started_again_after_stop(
    rsps: responses.RequestsMock, outbox: Outbox, make_worker
) -> None:
    register_asset(rsps)
    rsps.post(events_url(), json={"id": 1})
    worker = make_worker(idle_poll=60.0)
    worker.start()
    worker.stop(timeout=5)
    worker.start()
    [item_id] = enqueue(outbox, asset_item(1))
    worker.wake()
    assert wait_for(lambda: get(outbox, item_id).state == DELIVERED)
    worker.stop(timeout=5)
    [second] = enqueue(outbox, asset_item(2))
    assert worker.drain(timeout=10) == DrainStats(delivered=1)  # and drained by hand after stop
    assert get(outbox, second).state == DELIVERED


def test_stop_during_a_batch_ends_the_thread_and_records_what_was_sent(
    rsps: responses.RequestsMock, outbox: Outbox, make_worker
) -> None:
    """A stop that outlasts its timeout cancels the sends not started; the thread must not wait
    for their outcomes, and nothing is lost: they stay pending under their lease."""
    register_asset(rsps)
    started = threading.Event()

    def slow_post(request: requests.PreparedRequest) -> tuple[int, dict, str]:
        started.set()
        time.sleep(0.3)
        return 200, {}, json.dumps({"id": 1})

    rsps.add_callback(responses.POST, events_url(), callback=slow_post)
    ids = enqueue(outbox, *(asset_item(n) for n in range(1, 9)))
    worker = make_worker(concurrency=2, idle_poll=60.0)
    worker._send_seconds = 0.01  # claim the whole batch at once
    worker.start()
    assert started.wait(10)

    worker.stop(timeout=0.4)  # gives up waiting for the batch, cancels the sends not started

    assert wait_for(lambda: not worker.running)  # the batch ends with the sends under way
    states = [get(outbox, i).state for i in ids]
    assert 1 <= states.count(DELIVERED) < len(ids)  # the sends under way finished and were recorded
    assert set(states) == {DELIVERED, PENDING}  # the others wait for their lease to run out
    assert len(posts(rsps)) == states.count(DELIVERED)


def test_items_enqueued_close_together_share_one_claim(
    rsps: responses.RequestsMock, outbox: Outbox, make_worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Woken by an enqueue, the worker waits CLAIM_GATHER_SECONDS for the next ones: one claim
    and one outcome write for all of them, not one each."""
    monkeypatch.setattr(worker_module, "CLAIM_GATHER_SECONDS", 0.5)
    register_asset(rsps)
    rsps.post(events_url(), json={"id": 1})
    claimed: list[int] = []
    real_claim = outbox.claim

    def counting_claim(*args: Any, **kwargs: Any) -> list[Item]:
        items = real_claim(*args, **kwargs)
        claimed.append(len(items))
        return items

    monkeypatch.setattr(outbox, "claim", counting_claim)
    worker = make_worker(idle_poll=60.0)
    worker.start()
    assert wait_for(lambda: claimed == [0])  # idle now
    ids = []
    for n in range(1, 6):
        ids += enqueue(outbox, asset_item(n))
        worker.wake()

    assert wait_for(lambda: all(get(outbox, i).state == DELIVERED for i in ids))
    assert [n for n in claimed if n] == [5]

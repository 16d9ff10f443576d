"""Asset forwarding between two real Airflow 3 deployments: healthy, downstream down, upstream crash, loops."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path

from astro_xdeps.testing.local_deployment import COMPONENTS
from tests.integration.conftest import run_cli

BEARS = "file://include/bears"


def _run_producer(upstream, n: int) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    run_ids = [upstream.trigger("producer_dag", run_id=f"t{tag}_{i}") for i in range(n)]
    for run_id in run_ids:
        assert upstream.wait_for_run("producer_dag", run_id)["state"] == "success"
    return run_ids


def _forwarded(downstream, run_ids: list[str]) -> Counter:
    """How many downstream events carry each upstream run id in their provenance."""
    counts: Counter = Counter()
    for event in downstream.asset_events(BEARS, limit=100):
        source = (event.get("extra") or {}).get("xdeps", {}).get("source", {})
        if source.get("run_id") in run_ids:
            counts[source["run_id"]] += 1
    return counts


def _wait_forwarded(downstream, run_ids: list[str], timeout: float = 90) -> Counter:
    deadline = time.monotonic() + timeout
    counts: Counter = Counter()
    while time.monotonic() < deadline:
        counts = _forwarded(downstream, run_ids)
        if len(counts) == len(run_ids):
            time.sleep(3)  # give a would-be duplicate the chance to show up
            return _forwarded(downstream, run_ids)
        time.sleep(1)
    return counts


def _outbox_status(deployment) -> str:
    result = run_cli("outbox", "status", env={"AIRFLOW_HOME": str(deployment.home)})
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_healthy_every_event_arrives_once_with_provenance_and_the_consumer_runs(upstream, downstream):
    consumer_runs_before = len(downstream.dag_runs("consumer_dag"))
    run_ids = _run_producer(upstream, 3)

    counts = _wait_forwarded(downstream, run_ids)
    assert counts == Counter({r: 1 for r in run_ids})

    event = next(
        e
        for e in downstream.asset_events(BEARS)
        if e["extra"].get("xdeps", {}).get("source", {}).get("run_id") == run_ids[0]
    )
    source = event["extra"]["xdeps"]["source"]
    assert source["deployment"] == "upstream"
    assert source["dag_id"] == "producer_dag"
    assert source["task_id"] == "get_bear"
    assert event["extra"]["xdeps_event_id"] == event["extra"]["xdeps"]["event_id"]

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(downstream.dag_runs("consumer_dag")) <= consumer_runs_before:
        time.sleep(1)
    assert len(downstream.dag_runs("consumer_dag")) > consumer_runs_before


def test_downstream_down_then_back_every_event_arrives_once(upstream, downstream):
    downstream.stop()
    try:
        run_ids = _run_producer(upstream, 3)
        time.sleep(3)
        status = _outbox_status(upstream)
        assert "pending" in status and "could not be reached" in status, status
    finally:
        downstream.start()
    counts = _wait_forwarded(downstream, run_ids)
    assert counts == Counter({r: 1 for r in run_ids})


def test_upstream_killed_with_undelivered_events_delivers_them_after_restart(upstream, downstream):
    downstream.stop()
    try:
        run_ids = _run_producer(upstream, 3)
        upstream.kill()  # SIGKILL every component: nothing gets to flush anything
    finally:
        downstream.start()
    # Downstream is back but upstream is dead: nothing can arrive yet.
    time.sleep(3)
    assert _forwarded(downstream, run_ids) == Counter()
    upstream.start(COMPONENTS)
    counts = _wait_forwarded(downstream, run_ids)
    assert counts == Counter({r: 1 for r in run_ids})


def test_received_events_are_not_bounced_back(upstream, downstream):
    """Downstream routes everything to upstream, but events it got over REST stay there."""
    before = len(upstream.asset_events(BEARS, limit=100))
    run_ids = _run_producer(upstream, 1)
    assert _wait_forwarded(downstream, run_ids) == Counter({run_ids[0]: 1})
    time.sleep(5)
    after = upstream.asset_events(BEARS, limit=100)
    # Upstream has exactly its own new event; nothing came back from downstream.
    assert len(after) == before + 1
    assert all("xdeps" not in (e.get("extra") or {}) for e in after)
    assert "empty: nothing pending" in _outbox_status(downstream)


def test_asset_missing_downstream_is_retried_reported_and_delivered_once_it_exists(upstream, downstream):
    late = "file://include/late_bears"
    run_id = upstream.trigger("late_producer", run_id=f"late_{uuid.uuid4().hex[:8]}")
    assert upstream.wait_for_run("late_producer", run_id)["state"] == "success"
    time.sleep(4)
    status = _outbox_status(upstream)
    assert "pending" in status and f"No asset with uri '{late}'" in status, status

    # Deploy the consumer downstream: once parsed, the asset exists and the retry succeeds.
    downstream.add_dag(Path(__file__).with_name("dags_later") / "late_consumer.py")
    downstream.wait_for_dag("late_consumer")
    deadline = time.monotonic() + 90
    events: list = []
    while time.monotonic() < deadline and not events:
        events = [
            e for e in downstream.asset_events(late) if e["extra"]["xdeps"]["source"]["run_id"] == run_id
        ]
        time.sleep(1)
    time.sleep(3)
    events = [e for e in downstream.asset_events(late) if e["extra"]["xdeps"]["source"]["run_id"] == run_id]
    assert len(events) == 1

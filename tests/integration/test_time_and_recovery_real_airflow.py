"""Issue 14 against real Airflow: count rules and deadline (absence) rules of the relay.

The upstream scheduler runs the relay's rules (its listener) and its deadline clock; actions
start ``recovery_dag`` downstream. Conf ``via`` tells which rule started a run.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from astro_xdeps.testing.local_deployment import COMPONENTS
from tests.integration.conftest import (
    DEADLINE,
    DEADLINE_GRACE_SECONDS,
    DEADLINE_WINDOW,
    UPSTREAM_ROUTES,
    run_cli,
    write_relay_config,
)

PARTITIONED = "file://include/partitioned_bears"
BEARS = "file://include/bears"


def _runs(downstream, **conf: str) -> list[dict]:
    return [
        r
        for r in downstream.dag_runs("recovery_dag")
        if all((r.get("conf") or {}).get(k) == v for k, v in conf.items())
    ]


def _wait_runs(downstream, *, timeout: float = 120, settle: float = 8, **conf: str) -> list[dict]:
    """The runs with ``conf`` once at least one appeared (and ``settle`` s for a duplicate)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _runs(downstream, **conf):
            time.sleep(settle)
            break
        time.sleep(2)
    return _runs(downstream, **conf)


def _sleep_until(when: datetime) -> None:
    wait = (when - datetime.now(timezone.utc)).total_seconds()
    if wait > 0:
        time.sleep(wait)


@pytest.mark.timeout(900)  # waits for the deadline it sets, about two minutes ahead
def test_a_missed_deadline_runs_the_downstream_dag_once_and_a_kept_one_does_not(upstream, downstream):
    # The deadline moves to about two minutes from now; the restarted scheduler's clock watches it
    # (and the restart is one the decisions must survive).
    deadline: datetime = write_relay_config(DEADLINE["path"], datetime.now(timezone.utc))
    DEADLINE["at"] = deadline
    upstream.stop_component("scheduler")
    upstream.start_component("scheduler")
    opens = deadline - DEADLINE_WINDOW
    _sleep_until(opens + timedelta(seconds=5))
    kept = upstream.trigger("deadline_met", run_id=f"kept_{uuid.uuid4().hex[:8]}")
    assert upstream.wait_for_run("deadline_met", kept, timeout=180)["state"] == "success"
    assert datetime.now(timezone.utc) < deadline, "deadline_met finished after its deadline"

    # deadline_watched does not run before the deadline: its rule fires, once.
    _sleep_until(deadline + timedelta(seconds=DEADLINE_GRACE_SECONDS))
    runs = _wait_runs(downstream, via="deadline", failed_dag="deadline_watched", timeout=120, settle=15)
    assert len(runs) == 1, runs
    conf = runs[0]["conf"]
    assert conf["failed_run"] == "dag_run.missed_deadline"
    assert datetime.fromisoformat(conf["deadline"]) == deadline
    assert runs[0]["note"].startswith("no dag_run.success of deadline_watched by ")
    assert runs[0]["note"].endswith(" Europe/Berlin")
    # It runs (its task's own outcome is the example DAG's business: on this shared machine the
    # task can fail to reach the execution API in time).
    assert downstream.wait_for_run("recovery_dag", runs[0]["dag_run_id"])["state"] in ("success", "failed")
    # deadline_met succeeded inside its window: its rule never fires.
    assert _runs(downstream, via="deadline", failed_dag="deadline_met") == []

    # deadline_watched finally succeeds: on_late runs once, and the missed rule does not again.
    finally_run = upstream.trigger("deadline_watched", run_id=f"late_{uuid.uuid4().hex[:8]}")
    assert upstream.wait_for_run("deadline_watched", finally_run, timeout=180)["state"] == "success"
    late = _wait_runs(downstream, via="late", failed_dag="deadline_watched")
    assert [r["conf"]["failed_run"] for r in late] == [finally_run]
    assert len(_runs(downstream, via="deadline", failed_dag="deadline_watched")) == 1


def _fail_once(upstream) -> str:
    run_id = upstream.trigger("count_failer", run_id=f"count_{uuid.uuid4().hex[:8]}")
    assert upstream.wait_for_run("count_failer", run_id, timeout=180)["state"] == "failed"
    return run_id


@pytest.mark.timeout(1200)  # four failing runs on a shared machine, after the session's start
def test_a_count_rule_fires_once_on_the_third_failure(upstream, downstream):
    first, second = _fail_once(upstream), _fail_once(upstream)
    time.sleep(8)  # the listener's events of two failures are in: nothing may have fired
    assert _runs(downstream, via="count") == []

    third = _fail_once(upstream)
    runs = _wait_runs(downstream, via="count")
    assert len(runs) == 1
    assert runs[0]["conf"]["failed_run"] == third
    assert [e["run_id"] for e in runs[0]["conf"]["xdeps"]["events"]] == [first, second, third]
    assert runs[0]["dag_run_id"].startswith("xdeps__third-failure__")

    _fail_once(upstream)  # the fourth starts over: no second firing
    time.sleep(8)
    assert len(_runs(downstream, via="count")) == 1


def _events_of_runs(deployment, uri: str, run_ids: set[str]) -> list[dict]:
    return [
        e
        for e in deployment.asset_events(uri, limit=100)
        if ((e.get("extra") or {}).get("xdeps") or {}).get("source", {}).get("run_id") in run_ids
    ]


def _wait_events(deployment, uri: str, run_ids: set[str], *, count: int, timeout: float = 240) -> list[dict]:
    deadline = time.monotonic() + timeout
    events: list[dict] = []
    while time.monotonic() < deadline:
        events = _events_of_runs(deployment, uri, run_ids)
        if len(events) >= count:
            time.sleep(5)  # a duplicate would show up now
            return _events_of_runs(deployment, uri, run_ids)
        time.sleep(2)
    return events


@pytest.mark.timeout(900)
def test_a_partitioned_event_arrives_with_the_routes_mapped_key(upstream, downstream):
    run_id = upstream.trigger(
        "partitioned_producer", run_id=f"part_{uuid.uuid4().hex[:8]}", conf={"partition": "2026-11-30"}
    )
    assert upstream.wait_for_run("partitioned_producer", run_id, timeout=180)["state"] == "success"
    [upstream_event] = _events_of_runs_upstream(upstream, run_id)
    assert upstream_event["partition_key"] == "2026-11-30"

    [event] = _wait_events(downstream, PARTITIONED, {run_id}, count=1)
    assert event["partition_key"] == "eu-2026-11-30"  # the route's template
    source = event["extra"]["xdeps"]["source"]
    assert (source["partition_key"], source["deployment"]) == ("2026-11-30", "upstream")
    assert event["extra"]["xdeps"]["route"] == "partitions"


def _events_of_runs_upstream(upstream, run_id: str) -> list[dict]:
    return [e for e in upstream.asset_events(PARTITIONED, limit=100) if e.get("source_run_id") == run_id]


def _replay(upstream, downstream, since: str, *extra: str):
    env = {
        "AIRFLOW_CONN_XDEPS_SELF": upstream.connection_json(),
        "AIRFLOW_CONN_XDEPS_DEFAULT": downstream.connection_json(),
        "AIRFLOW__ASTRO_XDEPS__OUTBOX_URL": f"sqlite:///{upstream.home / 'xdeps_outbox.db'}",
        "AIRFLOW__ASTRO_XDEPS__DEPLOYMENT_NAME": "upstream",
        "AIRFLOW__ASTRO_XDEPS__ROUTES": UPSTREAM_ROUTES,
        "AIRFLOW__ASTRO_XDEPS__DELIVERY_WORKER": "false",
        "AIRFLOW__ASTRO_XDEPS__RETRY_MAX_DELAY": "2",
    }
    return run_cli(
        "replay",
        "--since",
        since,
        "--asset",
        BEARS,
        "--target",
        "xdeps_default",
        *extra,
        env=env,
        timeout=300,
    )


@pytest.mark.timeout(1500)  # restarts the upstream deployment: run last
def test_replay_after_losing_the_upstream_outbox_sends_every_missing_event_once(upstream, downstream):
    since = datetime.now(timezone.utc).isoformat()
    # The downstream is down while two runs produce: their events wait in the upstream outbox.
    downstream.stop_component("api-server")
    try:
        runs = {
            upstream.trigger("producer_dag", run_id=f"replay_{i}_{uuid.uuid4().hex[:6]}") for i in range(2)
        }
        for run_id in runs:
            assert upstream.wait_for_run("producer_dag", run_id, timeout=240)["state"] == "success"
        # ... and the outbox is lost with its container.
        upstream.stop()
        for path in upstream.home.glob("xdeps_outbox.db*"):
            path.unlink()
        for component in COMPONENTS:
            upstream.start_component(component)
        upstream.wait_ready(timeout=240)
    finally:
        downstream.start_component("api-server")
    downstream.wait_ready(timeout=240)
    time.sleep(10)
    assert _events_of_runs(downstream, BEARS, runs) == [], "the lost events arrived without a replay"

    dry = _replay(upstream, downstream, since, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "0 already at the target(s), 2 to send" in dry.stdout, dry.stdout
    assert dry.stdout.count("would send event") == 2
    time.sleep(5)
    assert _events_of_runs(downstream, BEARS, runs) == []  # a dry run sends nothing

    first = _replay(upstream, downstream, since)
    assert first.returncode == 0, first.stdout + first.stderr
    # It delivers what it can at once; what the just-restarted downstream answers with a 5xx stays
    # in the outbox and the deployment's own worker delivers it, as with any other item.
    assert "enqueued 2" in first.stdout, first.stdout
    events = _wait_events(downstream, BEARS, runs, count=2)
    assert sorted(e["extra"]["xdeps"]["source"]["run_id"] for e in events) == sorted(runs)

    second = _replay(upstream, downstream, since)
    assert second.returncode == 0, second.stderr
    assert "2 already at the target(s), 0 to send" in second.stdout, second.stdout
    time.sleep(5)
    assert len(_events_of_runs(downstream, BEARS, runs)) == 2

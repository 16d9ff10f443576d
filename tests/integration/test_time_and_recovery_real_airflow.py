"""Issue 14 against real Airflow: count rules and deadline (absence) rules of the relay.

The upstream scheduler runs the relay's rules (its listener) and its deadline clock; actions
start ``recovery_dag`` downstream. Conf ``via`` tells which rule started a run.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from tests.integration.conftest import DEADLINE, DEADLINE_GRACE_SECONDS, DEADLINE_WINDOW


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


def _fail_once(upstream) -> str:
    run_id = upstream.trigger("count_failer", run_id=f"count_{uuid.uuid4().hex[:8]}")
    assert upstream.wait_for_run("count_failer", run_id, timeout=180)["state"] == "failed"
    return run_id


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


def _sleep_until(when: datetime) -> None:
    wait = (when - datetime.now(timezone.utc)).total_seconds()
    if wait > 0:
        time.sleep(wait)


def test_a_missed_deadline_runs_the_downstream_dag_once_and_a_kept_one_does_not(upstream, downstream):
    deadline: datetime = DEADLINE["at"]
    opens = deadline - DEADLINE_WINDOW
    if datetime.now(timezone.utc) > deadline - timedelta(seconds=90):
        pytest.fail(
            f"the session reached this test at {datetime.now(timezone.utc):%H:%M:%S}, too close to its "
            f"deadline {deadline:%H:%M:%S} UTC to run deadline_met in time; raise DEADLINE_AFTER"
        )
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
    assert downstream.wait_for_run("recovery_dag", runs[0]["dag_run_id"])["state"] == "success"
    # deadline_met succeeded inside its window: its rule never fires.
    assert _runs(downstream, via="deadline", failed_dag="deadline_met") == []

    # deadline_watched finally succeeds: on_late runs once, and the missed rule does not again.
    finally_run = upstream.trigger("deadline_watched", run_id=f"late_{uuid.uuid4().hex[:8]}")
    assert upstream.wait_for_run("deadline_watched", finally_run, timeout=180)["state"] == "success"
    late = _wait_runs(downstream, via="late", failed_dag="deadline_watched")
    assert [r["conf"]["failed_run"] for r in late] == [finally_run]
    assert len(_runs(downstream, via="deadline", failed_dag="deadline_watched")) == 1

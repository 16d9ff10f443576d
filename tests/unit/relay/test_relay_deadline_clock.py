"""The deadline clock runs in the scheduler (and ``relay serve``), not in other processes."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from astro_xdeps import runtime

RULES = """
rules:
  - name: a-by-the-minute
    deadline:
      expect: {type: dag_run.success, dag_id: extract_a}
      cron: "* * * * *"
      timezone: UTC
      grace: 1s
    then: [{trigger_dag: {target: down, dag_id: fallback}}]
"""


@pytest.fixture
def relay_env(xdeps_options: Callable[..., None], tmp_path: Path) -> Path:
    rules = tmp_path / "relay.yaml"
    rules.write_text(RULES)
    xdeps_options(relay_config=rules, deadline_tick_seconds=1)
    return rules


def test_the_scheduler_starts_the_clock_and_it_writes_decisions(
    relay_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["airflow", "scheduler"])
    runtime.start_worker_for_component()
    clock = runtime._clock
    assert clock is not None and clock.running and clock.interval == 1.0
    # It ticks: the rule is being watched (the first decision row is written by a tick).
    import sqlalchemy as sa

    from astro_xdeps.relay.deadlines import deadlines_table

    deadline = time.monotonic() + 20
    rows: list = []
    while time.monotonic() < deadline and not rows:
        with runtime.get_outbox().engine.connect() as conn:
            rows = conn.execute(sa.select(deadlines_table.c.outcome)).all()
        time.sleep(0.2)
    assert ("watching",) in [tuple(r) for r in rows]
    runtime.reset()
    assert not clock.running


def test_the_api_server_does_not_start_a_clock(relay_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["airflow", "api-server"])
    runtime.start_worker_for_component()
    assert runtime._clock is None


def test_no_clock_without_deadline_rules(relay_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    relay_env.write_text(
        "rules: [{name: r, when: {dag_id: a}, then: [{trigger_dag: {target: t, dag_id: d}}]}]\n"
    )
    monkeypatch.setattr(sys, "argv", ["airflow", "scheduler"])
    runtime.start_worker_for_component()
    assert runtime._clock is None


def test_a_process_forked_from_the_scheduler_does_not_start_a_clock(
    relay_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Task processes forked from the scheduler keep its command line; they get no clock."""
    monkeypatch.setattr(sys, "argv", ["airflow", "scheduler"])
    monkeypatch.setattr(runtime, "_IMPORT_PID", os.getpid() + 1)
    runtime.start_worker_for_component()
    assert runtime._clock is None

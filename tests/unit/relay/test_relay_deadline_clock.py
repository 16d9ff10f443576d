"""The deadline clock runs in the scheduler (and ``relay serve``), not in other processes."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from astro_xdeps import runtime

ENV_PREFIX = "AIRFLOW__ASTRO_XDEPS__"
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
def relay_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    rules = tmp_path / "relay.yaml"
    rules.write_text(RULES)
    monkeypatch.setenv(f"{ENV_PREFIX}OUTBOX_URL", f"sqlite:///{tmp_path / 'outbox.db'}")
    monkeypatch.setenv(f"{ENV_PREFIX}DELIVERY_WORKER", "false")
    monkeypatch.setenv(f"{ENV_PREFIX}RELAY_CONFIG", str(rules))
    monkeypatch.setenv(f"{ENV_PREFIX}DEADLINE_TICK_SECONDS", "1")
    runtime.reset()
    yield rules
    runtime.reset()


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

"""``astro-xdeps replay``: what a target lacks is found by provenance and sent once."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest
import responses

from astro_xdeps import runtime
from astro_xdeps.cli.main import main
from astro_xdeps.cli.replay import TargetHistory, parse_when, plan_replay, replay_event_id
from astro_xdeps.exceptions import ConfigError
from astro_xdeps.forwarding.plan import ForwardingPlan, plan_items
from astro_xdeps.forwarding.routes import Route

pytestmark = pytest.mark.usefixtures("sleeps")

SELF = "https://upstream.example.com"
DOWN = "https://downstream.example.com"
URI = "s3://sales/daily"
PLAN = ForwardingPlan(
    enabled=True, routes=(Route(name="default", targets=("down",)),), deployment="up", max_hops=1, reason=""
)


def upstream_event(event_id: int, run_id: str, **kw) -> dict:
    return {
        "id": event_id,
        "uri": URI,
        "extra": {},
        "source_dag_id": "sales",
        "source_task_id": "load",
        "source_run_id": run_id,
        "source_map_index": -1,
        "timestamp": "2026-11-30T06:00:00Z",
        "partition_key": None,
        **kw,
    }


def forwarded(run_id: str, *, replay_of: str | None = None, deployment: str = "up") -> dict:
    source = {
        "deployment": deployment,
        "uri": URI,
        "dag_id": "sales",
        "task_id": "load",
        "run_id": run_id,
        "map_index": -1,
        "partition_key": None,
    }
    prov = {"event_id": "x", "hops": 1, "route": "default", "source": source}
    if replay_of:
        prov["replay_of"] = replay_of
    return {"id": 900, "uri": URI, "extra": {"xdeps_event_id": "x", "xdeps": prov}}


def items_for(event, event_id):
    return plan_items(event, PLAN, event_id=event_id)


def test_only_events_the_target_lacks_are_planned() -> None:
    upstream = [upstream_event(1, "r1"), upstream_event(2, "r2"), upstream_event(3, "r2")]
    history = TargetHistory.from_events(
        [forwarded("r1"), forwarded("r2"), forwarded("r9", deployment="other")]
    )
    missing, present = plan_replay(upstream, items_for, {("down", URI): history}, deployment="up")
    # Run r2 emitted twice upstream, once downstream: one of them is missing.
    assert present == 2
    assert [p.upstream["id"] for p in missing] == [3]
    [planned] = missing
    assert planned.item.idempotency_key == f"{replay_event_id('up', 3)}:{URI}"
    assert planned.item.payload["extra"]["xdeps"]["replay_of"] == "3"
    assert planned.item.payload["extra"]["xdeps"]["source"]["run_id"] == "r2"


def test_a_replayed_event_is_found_by_its_upstream_id() -> None:
    history = TargetHistory.from_events([forwarded("r1", replay_of="1")])
    missing, present = plan_replay(
        [upstream_event(1, "r1")], items_for, {("down", URI): history}, deployment="up"
    )
    assert (missing, present) == ([], 1)


def test_received_events_are_not_replayed() -> None:
    received = upstream_event(1, "r1", extra={"from_rest_api": True})
    assert plan_replay([received], items_for, {}, deployment="up") == ([], 0)


def test_the_replay_id_is_stable() -> None:
    assert replay_event_id("up", 5) == replay_event_id("up", "5") != replay_event_id("other", 5)


def test_when_accepts_iso_and_spans() -> None:
    now = datetime(2026, 11, 30, 12, tzinfo=timezone.utc)
    assert parse_when("6h", now=now, flag="--since") == datetime(2026, 11, 30, 6, tzinfo=timezone.utc)
    assert parse_when("2026-11-30T05:00:00Z", now=now, flag="--since").hour == 5
    assert parse_when("2026-11-30T05:00", now=now, flag="--since").tzinfo is timezone.utc
    with pytest.raises(ConfigError, match="--since: expected an ISO 8601 time"):
        parse_when("yesterday", now=now, flag="--since")


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    for name in list(os.environ):
        if name.startswith("AIRFLOW__ASTRO_XDEPS__") or name.startswith("AIRFLOW_CONN_"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("DEPLOYMENT_URL", raising=False)
    monkeypatch.setenv("AIRFLOW__ASTRO_XDEPS__OUTBOX_URL", f"sqlite:///{tmp_path / 'outbox.db'}")
    monkeypatch.setenv("AIRFLOW__ASTRO_XDEPS__DEPLOYMENT_NAME", "up")
    monkeypatch.setenv("AIRFLOW__ASTRO_XDEPS__CONN_ID", "down")
    for conn_id, host in (("XDEPS_SELF", SELF), ("DOWN", DOWN)):
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{conn_id}",
            json.dumps({"conn_type": "xdeps_deployment", "host": host, "password": "tok-1234567890"}),
        )
    runtime.reset()
    yield
    runtime.reset()


def register(mock: responses.RequestsMock, base: str, events: list[dict]) -> None:
    mock.get(f"{base}/api/v2/version", json={"version": "3.3.2"})
    mock.get(f"{base}/api/v2/assets/events", json={"asset_events": events, "total_entries": len(events)})


def test_dry_run_lists_and_sends_nothing(
    cli_env, rsps: responses.RequestsMock, capsys: pytest.CaptureFixture
) -> None:
    register(rsps, SELF, [upstream_event(1, "r1"), upstream_event(2, "r2")])
    register(rsps, DOWN, [forwarded("r1")])
    rsps.get(f"{DOWN}/api/v2/assets", json={"assets": [{"id": 7, "uri": URI}], "total_entries": 1})
    assert main(["replay", "--since", "1d", "--dry-run", "--target", "down"]) == 0
    out = capsys.readouterr().out
    assert "2 asset event(s) in " in out and "1 already at the target(s), 1 to send" in out
    assert f"would send event 2 (2026-11-30T06:00:00Z) {URI} -> down sales/load/r2" in out
    assert not [c for c in rsps.calls if c.request.method == "POST"]
    assert runtime.get_outbox().list_items(limit=10) == []


def test_an_unknown_target_is_a_usage_error(cli_env, capsys: pytest.CaptureFixture) -> None:
    assert main(["replay", "--since", "1d", "--target", "nowhere"]) == 2
    assert (
        "--target nowhere: no forwarding route sends events there (targets: down)" in capsys.readouterr().err
    )

"""The scheduler's DAG-run and task-instance states feed the relay's rules, and never break Airflow."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from astro_xdeps import runtime
from astro_xdeps.listeners.states import StateListener, state_event
from astro_xdeps.outbox import Outbox
from astro_xdeps.relay.rules import dag_run_id
from astro_xdeps.version_compat import AIRFLOW_V_3_0_PLUS
from tests.unit.airflow_listeners import airflow_listener_manager

ENV_PREFIX = "AIRFLOW__ASTRO_XDEPS__"
ENDED = datetime(2026, 1, 31, 12, 0, 0, tzinfo=timezone.utc)

RULES = """\
rules:
  - name: recover-orders
    when: {type: dag_run.failed, dag_id: "load_orders*"}
    then:
      - trigger_dag: {target: downstream, dag_id: recover_orders, conf: {failed_run: "{run_id}"}}
  - name: task-alarm
    when: {type: task_instance.failed, task_id: "extract*"}
    then:
      - asset_event: {target: downstream, uri: "s3://alarms/{task_id}", extra: {task: "{task_id}"}}
"""


@pytest.fixture
def env(
    xdeps_options: Callable[..., None], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> pytest.MonkeyPatch:
    """A relay config and an SQLite outbox in tmp_path, no delivery thread, fresh runtime state."""
    monkeypatch.delenv("ASTRO_DEPLOYMENT_NAMESPACE", raising=False)
    rules = tmp_path / "relay.yaml"
    rules.write_text(RULES)
    xdeps_options(relay_config=rules, deployment_name="upstream-test")
    return monkeypatch


def dag_run(dag_id: str = "load_orders", run_id: str = "scheduled__2026-01-31T00:00:00+00:00", **kw: Any):
    return SimpleNamespace(**{"dag_id": dag_id, "run_id": run_id, "end_date": ENDED, **kw})


def task_instance(task_id: str = "extract_eu", try_number: int = 2, **kw: Any):
    fields = {"dag_id": "load_orders", "run_id": "manual__1", "task_id": task_id, "try_number": try_number}
    return SimpleNamespace(**{**fields, "end_date": ENDED, **kw})


def items(tmp_path: Path) -> list:
    with Outbox.sqlite(tmp_path / "outbox.db") as outbox:
        return outbox.list_items()


def test_a_failed_dag_run_enqueues_the_rules_action(env, tmp_path: Path) -> None:
    StateListener().on_dag_run_failed(dag_run(), "task extract failed")
    [item] = items(tmp_path)
    event = state_event(
        "dag_run.failed",
        dag_id="load_orders",
        run_id="scheduled__2026-01-31T00:00:00+00:00",
        deployment="upstream-test",
        occurred_at=ENDED,
        message="task extract failed",
    )
    assert (item.kind, item.target) == ("dag_run", "downstream")
    assert item.payload["dag_id"] == "recover_orders"
    assert item.payload["dag_run_id"] == dag_run_id("recover-orders", [f"@scheduler/{event.id}"])
    assert item.payload["conf"] == {
        "failed_run": "scheduled__2026-01-31T00:00:00+00:00",
        "xdeps": {"rule": "recover-orders", "events": [event.to_dict()]},
    }
    assert event.to_dict()["attributes"] == {"source": "listener"}
    assert event.to_dict()["occurred_at"] == "2026-01-31T12:00:00+00:00"


def test_the_same_state_change_reported_twice_is_one_item(env, tmp_path: Path) -> None:
    listener = StateListener()
    listener.on_dag_run_failed(dag_run(), "msg")
    listener.on_dag_run_failed(dag_run(end_date=None), "another message")  # same run, same state
    assert len(items(tmp_path)) == 1


def test_another_run_is_another_item(env, tmp_path: Path) -> None:
    listener = StateListener()
    listener.on_dag_run_failed(dag_run(run_id="r1"), "msg")
    listener.on_dag_run_failed(dag_run(run_id="r2"), "msg")
    assert len({i.payload["dag_run_id"] for i in items(tmp_path)}) == 2


def test_a_dag_no_rule_concerns_enqueues_nothing(env, tmp_path: Path) -> None:
    StateListener().on_dag_run_success(dag_run("load_orders"), "ok")  # the rule wants failures
    StateListener().on_dag_run_failed(dag_run("other_dag"), "msg")
    assert items(tmp_path) == []


def test_without_relay_config_nothing_happens(env, tmp_path: Path) -> None:
    env.delenv(f"{ENV_PREFIX}RELAY_CONFIG")
    listener = StateListener()
    listener.on_dag_run_failed(dag_run(), "msg")
    listener.on_task_instance_failed(None, task_instance(), RuntimeError("boom"))
    assert not (tmp_path / "outbox.db").exists()  # not even opened


def test_the_delivery_worker_is_woken_only_for_new_actions(env, tmp_path: Path) -> None:
    woken: list[int] = []
    env.setattr(runtime, "ensure_worker", lambda: woken.append(1))
    listener = StateListener()
    listener.on_dag_run_failed(dag_run(), "msg")
    listener.on_dag_run_failed(dag_run(), "msg")
    listener.on_dag_run_failed(dag_run("other_dag"), "msg")
    assert woken == [1]


def test_a_broken_rules_file_never_reaches_airflow(
    env, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "relay.yaml").write_text("rules: [{name: r, when: {type: nope}}]\n")
    with caplog.at_level(logging.ERROR, logger="astro_xdeps.listeners.states"):
        StateListener().on_dag_run_failed(dag_run(), "msg")
        StateListener().on_task_instance_failed(None, task_instance(), None)
    assert [r.getMessage() for r in caplog.records] == [
        "astro-xdeps could not relay dag_run.failed of load_orders",
        "astro-xdeps could not relay task_instance.failed of load_orders",
    ]
    assert "matches no event type" in caplog.records[0].exc_text


def test_an_unusable_outbox_never_reaches_airflow(
    env, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env.setenv(f"{ENV_PREFIX}OUTBOX_URL", f"sqlite:///{tmp_path / 'missing' / 'outbox.db'}")
    with caplog.at_level(logging.ERROR, logger="astro_xdeps.listeners.states"):
        StateListener().on_dag_run_failed(dag_run(), "msg")
    assert [r.getMessage() for r in caplog.records] == [
        "astro-xdeps could not relay dag_run.failed of load_orders"
    ]


@pytest.mark.parametrize(
    "bad_run",
    [
        object(),
        SimpleNamespace(dag_id="has space", run_id="r", end_date=ENDED),
        SimpleNamespace(dag_id="d", run_id=""),
    ],
    ids=["no-attributes", "invalid-dag-id", "empty-run-id"],
)
def test_an_unreadable_dag_run_never_reaches_airflow(
    env, tmp_path: Path, caplog: pytest.LogCaptureFixture, bad_run: Any
) -> None:
    with caplog.at_level(logging.ERROR, logger="astro_xdeps.listeners.states"):
        StateListener().on_dag_run_failed(bad_run, "msg")
    assert [r.getMessage() for r in caplog.records] == ["astro-xdeps could not read a DAG run"]
    assert items(tmp_path) == []


def test_an_unreadable_task_instance_never_reaches_airflow(env, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="astro_xdeps.listeners.states"):
        StateListener().on_task_instance_failed(None, object(), None)
    assert [r.getMessage() for r in caplog.records] == ["astro-xdeps could not read a task instance"]


def test_broken_asset_forwarding_options_do_not_stop_the_relay(env, tmp_path: Path) -> None:
    env.setenv(f"{ENV_PREFIX}FORWARD_ASSETS", "sometimes")  # invalid: the forwarding plan refuses it
    env.setenv(f"{ENV_PREFIX}ROUTES", "[not json")
    StateListener().on_dag_run_failed(dag_run(), "msg")
    assert len(items(tmp_path)) == 1


def test_a_failed_task_instance_becomes_a_task_event(env, tmp_path: Path) -> None:
    StateListener().on_task_instance_failed(None, task_instance(), RuntimeError("connection reset"))
    [item] = items(tmp_path)
    assert (item.kind, item.payload["uri"]) == (
        "asset_event",
        "s3://alarms/{task_id}",
    )  # uri is not a template
    [event] = item.payload["extra"]["xdeps"]["events"]
    assert event == {
        "id": event["id"],
        "type": "task_instance.failed",
        "dag_id": "load_orders",
        "run_id": "manual__1",
        "task_id": "extract_eu",
        "deployment": "upstream-test",
        "occurred_at": "2026-01-31T12:00:00+00:00",
        "message": "connection reset",
        "attributes": {"source": "listener", "try_number": 2},
        "source": "@scheduler",
    }
    assert item.payload["extra"]["task"] == "extract_eu"


def test_each_try_of_a_task_is_its_own_event(env, tmp_path: Path) -> None:
    listener = StateListener()
    listener.on_task_instance_failed(None, task_instance(try_number=1), "boom")
    listener.on_task_instance_failed(None, task_instance(try_number=1), "boom again")
    listener.on_task_instance_failed(None, task_instance(try_number=2), "boom")
    assert len(items(tmp_path)) == 2


def test_a_task_no_rule_concerns_enqueues_nothing(env, tmp_path: Path) -> None:
    StateListener().on_task_instance_failed(None, task_instance(task_id="load"), "boom")
    assert items(tmp_path) == []


def test_event_ids_are_deterministic_per_state_change() -> None:
    def ident(**kw: Any) -> str:
        base: dict[str, Any] = {
            "dag_id": "d",
            "run_id": "r",
            "deployment": "up",
            "occurred_at": None,
            "task_id": "t",
            "try_number": 1,
        }
        return state_event("task_instance.failed", **{**base, **kw}).id

    assert ident() == ident(occurred_at=ENDED, message="other text")
    others = {
        ident(try_number=2),
        ident(run_id="r2"),
        ident(task_id="t2"),
        ident(deployment="up2"),
        ident(dag_id="d2"),
    }
    assert ident() not in others and len(others) == 5
    assert (
        state_event("dag_run.failed", dag_id="d", run_id="r", deployment="up", occurred_at=None).id
        != state_event("dag_run.success", dag_id="d", run_id="r", deployment="up", occurred_at=None).id
    )


def test_long_messages_are_cut() -> None:
    event = state_event(
        "dag_run.failed", dag_id="d", run_id="r", deployment="up", occurred_at=None, message="x" * 5000
    )
    assert event.message == "x" * 2000
    assert event.occurred_at.tzinfo is not None


def test_the_hooks_match_airflows_listener_spec(env, tmp_path: Path) -> None:
    """Registered with Airflow's own hook specs (pluggy checks the argument names) and called by them."""
    manager = airflow_listener_manager()
    manager.add_listener(StateListener())
    manager.hook.on_dag_run_failed(dag_run=dag_run(), msg="failed")
    manager.hook.on_dag_run_success(dag_run=dag_run(), msg="ok")
    # Airflow 2's spec also passes the ORM session (our hook takes fewer arguments, which pluggy allows).
    session = {} if AIRFLOW_V_3_0_PLUS else {"session": None}
    manager.hook.on_task_instance_failed(
        previous_state=None, task_instance=task_instance(), error="boom", **session
    )
    assert sorted(i.kind for i in items(tmp_path)) == ["asset_event", "dag_run"]

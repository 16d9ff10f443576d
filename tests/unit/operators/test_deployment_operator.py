"""TriggerDeploymentDagRunOperator: parse-time checks, idempotent triggering, waiting, the extra link."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import requests
import responses
from responses import matchers

from astro_xdeps.exceptions import ConfigError
from astro_xdeps.operators import deployment as op_module
from astro_xdeps.operators.deployment import (
    XCOM_RUN_ID,
    XCOM_RUN_URL,
    DeploymentDagRunLink,
    TriggerDeploymentDagRunOperator,
    deterministic_run_id,
)
from astro_xdeps.triggers.deployment import DeploymentDagRunTrigger
from astro_xdeps.version_compat import AirflowException
from tests.unit.deployments import UP

pytestmark = pytest.mark.usefixtures("sleeps", "up_conn")
RUNS = f"{UP}/api/v2/dags/target/dagRuns"


class TI:
    """The parts of a task instance the operator uses."""

    def __init__(self, try_number: int = 1, map_index: int = -1) -> None:
        self.dag_id, self.run_id, self.task_id = "here", "manual__2026-03-01T00:00:00+00:00", "kick"
        self.map_index, self.try_number = map_index, try_number
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


def operator(**kw: Any) -> TriggerDeploymentDagRunOperator:
    kw.setdefault("trigger_dag_id", "target")
    return TriggerDeploymentDagRunOperator(task_id="kick", xdeps_conn_id="xdeps_up", **kw)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trigger_dag_id": ""}, "trigger_dag_id must be"),
        ({"conf": ["a"]}, "conf must be a dict"),
        ({"conf": {"when": object()}}, "conf must be JSON-serialisable"),
        ({"note": 5}, "note must be a string"),
        ({"poke_interval": 0}, "poke_interval must be a positive"),
        ({"failed_states": "failed"}, "not a string"),
        ({"allowed_states": ["done"]}, r"unknown DAG run state\(s\) \['done'\]"),
        ({"missing_dag_timeout": -5}, "missing_dag_timeout must be"),
    ],
)
def test_bad_arguments_fail_when_the_dag_is_parsed(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        operator(**kwargs)


def test_run_id_is_the_same_for_every_try_and_differs_per_task_instance() -> None:
    a = deterministic_run_id("here", "manual__2026-03-01T00:00:00+00:00", "kick", -1)
    assert a == deterministic_run_id("here", "manual__2026-03-01T00:00:00+00:00", "kick", -1)
    others = {
        deterministic_run_id("here", "manual__2026-03-02T00:00:00+00:00", "kick", -1),
        deterministic_run_id("here", "manual__2026-03-01T00:00:00+00:00", "kick", 0),
        deterministic_run_id("here", "manual__2026-03-01T00:00:00+00:00", "other", -1),
    }
    assert a not in others and len(others) == 3
    weird = deterministic_run_id("d/ä g", "run id with spaces" * 30, "t", 7)
    assert re.fullmatch(r"[A-Za-z0-9_.~:+-]+", weird) and len(weird) <= 250


def test_trigger_sends_conf_note_and_the_derived_run_id_then_pushes_id_and_url(
    rsps: responses.RequestsMock,
) -> None:
    ti = TI()
    run_id = deterministic_run_id(ti.dag_id, ti.run_id, ti.task_id, -1)
    rsps.post(
        RUNS,
        json={"dag_run_id": run_id, "state": "queued"},
        match=[
            matchers.json_params_matcher(
                {"dag_run_id": run_id, "conf": {"x": 1}, "note": "hi", "logical_date": None}
            ),
            matchers.header_matcher({"Authorization": "Bearer tok-secret-123"}),
        ],
    )
    assert operator(conf={"x": 1}, note="hi").execute({"ti": ti}) == run_id
    assert ti.xcoms == {XCOM_RUN_ID: run_id, XCOM_RUN_URL: f"{UP}/dags/target/runs/{run_id}"}


def test_a_retry_finds_its_run_and_starts_no_second_one(rsps: responses.RequestsMock, capsys) -> None:
    rsps.post(RUNS, status=409, json={"detail": "exists"})
    ti = TI(try_number=2)
    assert operator().execute({"ti": ti}) == ti.xcoms[XCOM_RUN_ID]
    assert len(rsps.calls) == 1  # no clear, no second trigger
    out = capsys.readouterr().out  # operators log through Airflow's structlog, to stdout here
    assert "already exists" in out and "not starting another" in out


def test_reset_dag_run_clears_the_existing_run(rsps: responses.RequestsMock) -> None:
    ti = TI()
    run_id = deterministic_run_id(ti.dag_id, ti.run_id, ti.task_id, -1)
    rsps.post(RUNS, status=409)
    rsps.post(f"{RUNS}/{run_id}/clear", json={}, match=[matchers.json_params_matcher({"dry_run": False})])
    operator(reset_dag_run=True).execute({"ti": ti})


def test_explicit_trigger_run_id_wins(rsps: responses.RequestsMock) -> None:
    rsps.post(RUNS, json={}, match=[matchers.json_params_matcher({"dag_run_id": "mine"}, strict_match=False)])
    assert operator(trigger_run_id="mine").execute({"ti": TI()}) == "mine"


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"status": 401}, "HTTP 401"),
        ({"status": 403}, "HTTP 403"),
        ({"status": 404}, "HTTP 404"),
        ({"status": 500}, "HTTP 500"),
        ({"body": requests.ConnectTimeout("slow")}, "timed out"),
    ],
)
def test_trigger_errors_fail_the_task_with_a_clear_message(
    rsps: responses.RequestsMock, answer: dict, message: str
) -> None:
    rsps.post(RUNS, **answer)
    with pytest.raises(AirflowException, match=message) as err:
        operator().execute({"ti": TI()})
    assert "tok-secret-123" not in str(err.value)


def test_wait_for_completion_defers_on_the_triggered_run(rsps: responses.RequestsMock) -> None:
    from astro_xdeps.version_compat import TaskDeferred

    rsps.post(RUNS, json={})
    ti = TI()
    with pytest.raises(TaskDeferred) as deferred:
        operator(wait_for_completion=True, poke_interval=5).execute({"ti": ti})
    trigger = deferred.value.trigger
    assert isinstance(trigger, DeploymentDagRunTrigger)
    assert (
        trigger.run_id == ti.xcoms[XCOM_RUN_ID] and trigger.dag_id == "target" and trigger.poll_interval == 5
    )


def test_execute_complete_reports_the_remote_outcome() -> None:
    op = operator()
    assert op.execute_complete({}, {"status": "success", "run_id": "r", "message": "ok"}) == "r"
    with pytest.raises(AirflowException, match="is failed: https://up"):
        op.execute_complete(
            {}, {"status": "failed", "message": "DAG run target/r in up is failed: https://up"}
        )


def test_wait_without_deferring_polls_until_the_run_ends(rsps: responses.RequestsMock, monkeypatch) -> None:
    ti = TI()
    run_id = deterministic_run_id(ti.dag_id, ti.run_id, ti.task_id, -1)
    monkeypatch.setattr(op_module.time, "sleep", lambda s: None)
    rsps.post(RUNS, json={})
    states = iter(["queued", "running", "failed"])
    rsps.add_callback(
        responses.GET,
        f"{RUNS}/{run_id}",
        callback=lambda req: (200, {}, json.dumps({"dag_run_id": run_id, "state": next(states)})),
    )
    with pytest.raises(AirflowException, match=f"DAG run target/{run_id} in xdeps_up is failed"):
        operator(wait_for_completion=True, deferrable=False).execute({"ti": ti})


def test_extra_link_is_the_remote_run_url_from_xcom(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def get_value(*, ti_key: Any, key: str) -> str:
        seen["key"] = key
        return "https://up.example/dags/target/runs/r"

    monkeypatch.setattr(op_module.XCom, "get_value", staticmethod(get_value))
    link = DeploymentDagRunLink()
    assert link.get_link(operator(), ti_key=object()) == "https://up.example/dags/target/runs/r"
    assert seen["key"] == XCOM_RUN_URL and link.name == "Remote DAG run"
    assert any(
        isinstance(x, DeploymentDagRunLink) for x in TriggerDeploymentDagRunOperator.operator_extra_links
    )

"""DeploymentDagRunSensor: arguments checked at parse time; poke and defer paths against mocked HTTP."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
import requests
import responses

from astro_xdeps.exceptions import ConfigError
from astro_xdeps.sensors.deployment import DeploymentDagRunSensor
from astro_xdeps.triggers.deployment import DeploymentDagRunTrigger
from astro_xdeps.version_compat import AirflowException
from tests.unit.deployments import UP

pytestmark = pytest.mark.usefixtures("sleeps", "up_conn")
UTC = datetime.timezone.utc
WHEN = datetime.datetime(2026, 3, 1, 6, 0, tzinfo=UTC)


def sensor(**kw: Any) -> DeploymentDagRunSensor:
    kw.setdefault("external_dag_id", "d")
    return DeploymentDagRunSensor(task_id="wait", xdeps_conn_id="xdeps_up", **kw)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"external_dag_id": ""}, "external_dag_id must be"),
        ({"external_run_id": "r", "latest_after": WHEN}, "pass only one of external_run_id, latest_after"),
        ({"execution_delta": 5}, "execution_delta must be a datetime.timedelta"),
        ({"execution_date_fn": "yesterday"}, "execution_date_fn must be callable"),
        ({"latest_after": "not a date"}, "is not an ISO date-time"),
        ({"latest_after": datetime.datetime(2026, 1, 1)}, "has no time zone"),
        ({"map_index": 2}, "map_index needs external_task_id"),
        ({"external_task_id": "t", "map_index": -3}, "map_index must be an integer >= 0"),
        ({"allowed_states": "success"}, r"not a string \(write \['success'\]\)"),
        ({"allowed_states": ["sucess"]}, r"unknown DAG run state\(s\) \['sucess'\]"),
        ({"external_task_id": "t", "failed_states": ["boom"]}, r"unknown task state\(s\) \['boom'\]"),
        ({"allowed_states": ["success"], "failed_states": ["success"]}, "both allowed and failed"),
        ({"allowed_states": []}, "at least one"),
        ({"missing_dag_timeout": -1}, "missing_dag_timeout must be"),
    ],
)
def test_bad_arguments_fail_when_the_dag_is_parsed(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        sensor(**kwargs)


def test_templated_latest_after_is_checked_only_once_rendered() -> None:
    assert sensor(latest_after="{{ data_interval_start }}").latest_after == "{{ data_interval_start }}"


def test_default_failed_states_for_a_task_include_upstream_failed() -> None:
    assert sensor(external_task_id="t").failed_states == ["failed", "upstream_failed"]


@pytest.mark.parametrize(
    ("kwargs", "selector"),
    [
        ({}, {"logical_date": WHEN.isoformat()}),
        ({"execution_delta": datetime.timedelta(hours=1)}, {"logical_date": "2026-03-01T05:00:00+00:00"}),
        (
            {"execution_date_fn": lambda dt, ctx: dt - datetime.timedelta(days=1)},
            {"logical_date": "2026-02-28T06:00:00+00:00"},
        ),
        ({"external_run_id": "r1"}, {"run_id": "r1"}),
        ({"latest_after": "2026-03-01T00:00:00Z"}, {"run_after_gte": "2026-03-01T00:00:00+00:00"}),
    ],
)
def test_which_remote_run(kwargs: dict, selector: dict) -> None:
    assert sensor(**kwargs).selector({"logical_date": WHEN}) == selector


def test_a_run_without_logical_date_needs_run_id_or_latest_after() -> None:
    with pytest.raises(AirflowException, match="no logical date"):
        sensor().selector({"logical_date": None})


def test_deferrable_execute_defers_to_the_trigger_with_the_resolved_run() -> None:
    from astro_xdeps.version_compat import TaskDeferred

    s = sensor(external_task_id="t", map_index=1, poke_interval=7, timeout=60)
    with pytest.raises(TaskDeferred) as deferred:
        s.execute({"logical_date": WHEN})
    trigger = deferred.value.trigger
    assert isinstance(trigger, DeploymentDagRunTrigger)
    assert trigger.serialize()[1] == {
        "dag_id": "d",
        "xdeps_conn_id": "xdeps_up",
        "run_id": None,
        "logical_date": WHEN.isoformat(),
        "run_after_gte": None,
        "external_task_id": "t",
        "map_index": 1,
        "allowed_states": ["success"],
        "failed_states": ["failed", "upstream_failed"],
        "poll_interval": 7.0,
        "missing_dag_timeout": 600.0,
    }
    assert deferred.value.method_name == "execute_complete"
    assert deferred.value.timeout == datetime.timedelta(seconds=60)


def test_execute_complete_reports_the_remote_outcome() -> None:
    s = sensor()
    assert s.execute_complete({}, {"status": "success", "run_id": "r", "message": "ok"}) == "r"
    with pytest.raises(AirflowException, match=r"is failed: https://up\.example/dags/d/runs/r"):
        s.execute_complete(
            {},
            {"status": "failed", "message": "DAG run d/r in up is failed: https://up.example/dags/d/runs/r"},
        )


RUN = f"{UP}/api/v2/dags/d/dagRuns/r"


def test_poke_success(rsps: responses.RequestsMock) -> None:
    rsps.get(RUN, json={"dag_run_id": "r", "state": "success"})
    assert sensor(external_run_id="r", deferrable=False).poke({}) is True
    assert rsps.calls[0].request.headers["Authorization"] == "Bearer tok-secret-123"


def test_poke_running_keeps_waiting(rsps: responses.RequestsMock) -> None:
    rsps.get(RUN, json={"dag_run_id": "r", "state": "running"})
    assert sensor(external_run_id="r", deferrable=False).poke({}) is False


def test_poke_failed_run_fails_fast_with_the_url(rsps: responses.RequestsMock) -> None:
    rsps.get(RUN, json={"dag_run_id": "r", "state": "failed"})
    with pytest.raises(
        AirflowException, match=r"DAG run d/r in xdeps_up is failed: https://up.example/dags/d/runs/r"
    ):
        sensor(external_run_id="r", deferrable=False).poke({})


@pytest.mark.parametrize("status", [401, 403])
def test_poke_auth_errors_fail_with_a_clear_message(rsps: responses.RequestsMock, status: int) -> None:
    rsps.get(RUN, status=status, json={"detail": "tok-secret-123"})
    with pytest.raises(AirflowException) as err:
        sensor(external_run_id="r", deferrable=False).poke({})
    assert f"HTTP {status}" in str(err.value) and "tok-secret-123" not in str(err.value)


def test_poke_missing_dag_waits_then_fails_after_missing_dag_timeout(rsps: responses.RequestsMock) -> None:
    rsps.get(RUN, status=404)
    rsps.get(f"{UP}/api/v2/dags/d", status=404)
    assert sensor(external_run_id="r", deferrable=False, missing_dag_timeout=600).poke({}) is False
    with pytest.raises(AirflowException, match="DAG d is missing in xdeps_up"):
        sensor(external_run_id="r", deferrable=False, missing_dag_timeout=0).poke({})


def test_poke_missing_run_of_an_existing_dag_waits(rsps: responses.RequestsMock) -> None:
    rsps.get(RUN, status=404)
    rsps.get(f"{UP}/api/v2/dags/d", json={"dag_id": "d"})
    assert sensor(external_run_id="r", deferrable=False, missing_dag_timeout=0).poke({}) is False


@pytest.mark.parametrize(
    "answer",
    [{"status": 503}, {"body": requests.ConnectTimeout("slow")}, {"body": requests.ReadTimeout("slow")}],
)
def test_poke_5xx_and_timeouts_keep_waiting_after_retries(rsps: responses.RequestsMock, answer: dict) -> None:
    rsps.get(RUN, **answer)
    assert sensor(external_run_id="r", deferrable=False).poke({}) is False
    assert len(rsps.calls) == 2  # retries=1 on the connection


def test_poke_task_level_by_logical_date(rsps: responses.RequestsMock) -> None:
    rsps.get(
        f"{UP}/api/v2/dags/d/dagRuns",
        json={"dag_runs": [{"dag_run_id": "r", "state": "running"}]},
        match=[
            responses.matchers.query_param_matcher(
                {
                    "limit": "1",
                    "order_by": "-run_after",
                    "logical_date_gte": WHEN.isoformat(),
                    "logical_date_lte": WHEN.isoformat(),
                }
            )
        ],
    )
    rsps.get(f"{RUN}/taskInstances/t", json={"state": "success"})
    assert sensor(external_task_id="t", deferrable=False).poke({"logical_date": WHEN}) is True

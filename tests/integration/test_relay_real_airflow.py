"""The relay against real Airflow: webhooks and the scheduler's own DAG states become DAG runs downstream."""

from __future__ import annotations

import json
import time
import uuid

import requests

from astro_xdeps.relay.signing import webhook_headers
from tests.integration.conftest import RELAY_SECRET


def _runs_with(downstream, dag_id: str, key: str, value: str) -> list[dict]:
    return [r for r in downstream.dag_runs(dag_id) if (r.get("conf") or {}).get(key) == value]


def _wait_runs(
    downstream, dag_id: str, key: str, value: str, *, at_least: int = 1, timeout: float = 90
) -> list[dict]:
    deadline = time.monotonic() + timeout
    runs: list[dict] = []
    while time.monotonic() < deadline:
        runs = _runs_with(downstream, dag_id, key, value)
        if len(runs) >= at_least:
            time.sleep(4)  # a duplicate would show up now
            return _runs_with(downstream, dag_id, key, value)
        time.sleep(1)
    return runs


def _post(upstream, body: bytes, headers: dict[str, str]) -> requests.Response:
    return requests.post(
        f"{upstream.url}/xdeps/relay/events/alerts",
        data=body,
        headers={"content-type": "application/json", **headers},
        timeout=30,
    )


def test_signed_webhook_delivered_three_times_triggers_recovery_once(upstream, downstream):
    run_id = f"manual__{uuid.uuid4().hex[:8]}"
    body = json.dumps({"type": "dag_run.failed", "dag_id": "webhook_producer", "run_id": run_id}).encode()
    headers = webhook_headers(body, [RELAY_SECRET], msg_id=f"msg_{uuid.uuid4().hex}")
    answers = [_post(upstream, body, headers) for _ in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 202], [a.text for a in answers]
    assert [a.json()["new_actions"] for a in answers] == [1, 0, 0]

    runs = _wait_runs(downstream, "recovery_dag", "failed_run", run_id)
    assert len(runs) == 1
    assert runs[0]["conf"]["via"] == "webhook"
    finished = downstream.wait_for_run("recovery_dag", runs[0]["dag_run_id"])
    assert finished["state"] == "success"


def test_bad_signature_is_refused_and_triggers_nothing(upstream, downstream):
    run_id = f"manual__{uuid.uuid4().hex[:8]}"
    body = json.dumps({"type": "dag_run.failed", "dag_id": "webhook_producer", "run_id": run_id}).encode()
    wrong = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="
    answer = _post(upstream, body, webhook_headers(body, [wrong], msg_id=f"msg_{uuid.uuid4().hex}"))
    assert answer.status_code == 401
    assert "signature" in answer.json()["detail"]
    unsigned = _post(upstream, body, {})
    assert unsigned.status_code == 401
    time.sleep(5)
    assert _runs_with(downstream, "recovery_dag", "failed_run", run_id) == []


def test_a_real_upstream_failure_triggers_the_recovery_dag_without_an_alerting_tool(upstream, downstream):
    run_id = upstream.trigger(
        "flaky_producer_dag", run_id=f"fail_{uuid.uuid4().hex[:8]}", conf={"fail": True}
    )
    assert upstream.wait_for_run("flaky_producer_dag", run_id)["state"] == "failed"

    runs = _wait_runs(downstream, "recovery_dag", "failed_run", run_id)
    assert len(runs) == 1
    assert runs[0]["conf"]["via"] == "listener"
    assert runs[0]["conf"]["xdeps"]["rule"] == "recover-flaky-producer"
    assert downstream.wait_for_run("recovery_dag", runs[0]["dag_run_id"])["state"] == "success"


def test_many_to_one_fires_once_for_both_and_not_for_one(upstream, downstream):
    before = {r["dag_run_id"] for r in downstream.dag_runs("report_dag")}

    a = upstream.trigger("extract_a", run_id=f"a_{uuid.uuid4().hex[:8]}")
    assert upstream.wait_for_run("extract_a", a)["state"] == "success"
    time.sleep(8)
    assert {r["dag_run_id"] for r in downstream.dag_runs("report_dag")} == before, "one success alone fired"

    b = upstream.trigger("extract_b", run_id=f"b_{uuid.uuid4().hex[:8]}")
    assert upstream.wait_for_run("extract_b", b)["state"] == "success"
    deadline = time.monotonic() + 60
    new: set[str] = set()
    while time.monotonic() < deadline and not new:
        new = {r["dag_run_id"] for r in downstream.dag_runs("report_dag")} - before
        time.sleep(1)
    time.sleep(4)
    new = {r["dag_run_id"] for r in downstream.dag_runs("report_dag")} - before
    assert len(new) == 1
    assert next(iter(new)).startswith("xdeps__both-extracts__")

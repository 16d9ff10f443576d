"""The pull side against two real Airflow 3 deployments: the downstream reaches into the upstream.

Nothing of the pull side runs upstream: the sensor, the operator and the watcher run in the
downstream's worker and triggerer and talk to the upstream's REST API (``xdeps_upstream``).
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path

import pytest

from astro_xdeps.testing.local_deployment import LocalDeployment
from tests.integration.conftest import run_cli

DAGS = Path(__file__).with_name("dags")
PULLED_UP = "s3://upstream-only/pulled_bears"
PULLED_HERE = "s3://downstream/pulled_bears"


@pytest.fixture(scope="module")
def pulled(pair):
    """Deploy the pull-side DAGs into the shared pair (upstream targets, downstream users)."""
    up, down = pair.upstream, pair.downstream
    for name in ("pull_target.py", "pull_producer.py"):
        up.add_dag(DAGS / name)
    for name in ("pull_sensor_dag.py", "pull_trigger_dag.py", "pull_consumer.py"):
        down.add_dag(DAGS / name)
    for dag_id in ("pull_target", "pull_producer"):
        up.wait_for_dag(dag_id, timeout=180)
    for dag_id in ("pull_sensor_dag", "pull_trigger_dag", "pull_consumer"):
        down.wait_for_dag(dag_id, timeout=180)
    return pair


def ti(dep: LocalDeployment, dag_id: str, run_id: str, task_id: str) -> dict:
    r = dep.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
    return r.json() if r.status_code == 200 else {}


def wait_ti_state(
    dep: LocalDeployment, dag_id: str, run_id: str, task_id: str, states: set[str], timeout: float = 180
) -> tuple[dict, list[str]]:
    """Poll the task instance until its state is in ``states``; return it and every state seen."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = ti(dep, dag_id, run_id, task_id)
        state = current.get("state")
        if state and (not seen or seen[-1] != state):
            seen.append(state)
        if state in states:
            return current, seen
        time.sleep(0.5)
    raise TimeoutError(f"{dag_id}/{run_id}/{task_id} never reached {states}; saw {seen}")


def task_log(dep: LocalDeployment, dag_id: str, run_id: str, task_id: str) -> str:
    """Every log file of the task instance, read from the deployment's log folder."""
    folder = dep.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
    return "\n".join(p.read_text(errors="replace") for p in sorted(folder.rglob("*.log")))


def test_sensor_defers_and_succeeds_when_the_remote_run_succeeds(pulled):
    up, down = pulled.upstream, pulled.downstream
    up_run = f"pull_ok_{uuid.uuid4().hex[:8]}"
    down_run = down.trigger("pull_sensor_dag", conf={"upstream_run_id": up_run})
    # The upstream run does not exist yet: the sensor must wait in the triggerer.
    _, seen = wait_ti_state(down, "pull_sensor_dag", down_run, "wait_upstream", {"deferred"})
    up.trigger("pull_target", run_id=up_run, conf={"seconds": 1})
    assert up.wait_for_run("pull_target", up_run, timeout=180)["state"] == "success"
    result, seen_after = wait_ti_state(
        down, "pull_sensor_dag", down_run, "wait_upstream", {"success", "failed"}, timeout=120
    )
    assert result["state"] == "success", (seen, seen_after)
    assert "deferred" in seen
    assert down.wait_for_run("pull_sensor_dag", down_run)["state"] == "success"


def test_sensor_fails_fast_with_the_remote_runs_url(pulled):
    up, down = pulled.upstream, pulled.downstream
    up_run = f"pull_fail_{uuid.uuid4().hex[:8]}"
    down_run = down.trigger("pull_sensor_dag", conf={"upstream_run_id": up_run})
    wait_ti_state(down, "pull_sensor_dag", down_run, "wait_upstream", {"deferred"})
    up.trigger("pull_target", run_id=up_run, conf={"fail": True})
    assert up.wait_for_run("pull_target", up_run, timeout=180)["state"] == "failed"
    failed_at = time.monotonic()
    result, _ = wait_ti_state(
        down, "pull_sensor_dag", down_run, "wait_upstream", {"success", "up_for_retry", "failed"}
    )
    # Fast: within a few polls (2 s), far from the sensor's 600 s timeout.
    assert result["state"] in ("up_for_retry", "failed")
    assert time.monotonic() - failed_at < 90
    url = f"{up.url}/dags/pull_target/runs/{up_run}"
    assert url in task_log(down, "pull_sensor_dag", down_run, "wait_upstream")


def test_sensor_rides_out_a_remote_api_server_restart_while_deferred(pulled):
    up, down = pulled.upstream, pulled.downstream
    up_run = f"pull_restart_{uuid.uuid4().hex[:8]}"
    down_run = down.trigger("pull_sensor_dag", conf={"upstream_run_id": up_run})
    wait_ti_state(down, "pull_sensor_dag", down_run, "wait_upstream", {"deferred"})
    triggerer_log = down.home / "logs" / "triggerer.out"
    before = triggerer_log.read_text(errors="replace").count("is not answering")
    up.stop_component("api-server")
    try:
        time.sleep(10)  # several polls hit a closed port
        assert ti(down, "pull_sensor_dag", down_run, "wait_upstream")["state"] == "deferred"
    finally:
        up.start_component("api-server")
        up.wait_ready(timeout=180)
    assert triggerer_log.read_text(errors="replace").count("is not answering") > before
    up.trigger("pull_target", run_id=up_run, conf={"seconds": 1})
    result, seen = wait_ti_state(down, "pull_sensor_dag", down_run, "wait_upstream", {"success", "failed"})
    assert result["state"] == "success", seen


def test_operator_triggers_once_across_a_retry_waits_deferred_and_links_the_remote_run(pulled):
    up, down = pulled.upstream, pulled.downstream
    down_run = down.trigger("pull_trigger_dag", conf={"seconds": 8})
    seen: list[str] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # follow both tries until the task ends
        state = ti(down, "pull_trigger_dag", down_run, "run_upstream").get("state")
        if state and (not seen or seen[-1] != state):
            seen.append(state)
        if state in ("success", "failed"):
            break
        time.sleep(0.5)
    final = ti(down, "pull_trigger_dag", down_run, "run_upstream")
    assert final["state"] == "success", seen
    assert final["try_number"] >= 2, "the first try must have failed and been retried"
    assert "deferred" in seen

    xcom = down.api(
        "GET",
        f"/dags/pull_trigger_dag/dagRuns/{down_run}/taskInstances/run_upstream/xcomEntries/trigger_run_id",
    ).json()
    remote_run_id = xcom["value"]
    # Exactly one upstream run came from this task instance, although two tries triggered.
    note = f"from pull_trigger_dag {down_run}"
    mine = [r for r in up.dag_runs("pull_target") if (r.get("note") or "") == note]
    assert [r["dag_run_id"] for r in mine] == [remote_run_id]
    assert mine[0]["state"] == "success"
    assert mine[0]["conf"]["seconds"] == "8"
    log = task_log(down, "pull_trigger_dag", down_run, "run_upstream")
    assert "already exists" in log and "not starting another" in log

    links = down.api(
        "GET", f"/dags/pull_trigger_dag/dagRuns/{down_run}/taskInstances/run_upstream/links"
    ).json()
    assert links["extra_links"]["Remote DAG run"] == f"{up.url}/dags/pull_target/runs/{remote_run_id}"


def _pulled_events(down: LocalDeployment) -> list[dict]:
    return [e for e in down.asset_events(PULLED_HERE) if e.get("extra", {}).get("from_trigger")]


def _wait_count(what, count: int, timeout: float = 180) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = what()
        if len(items) >= count:
            return items
        time.sleep(1)
    raise TimeoutError(f"expected {count}, have {len(what())}")


def _watermark(down: LocalDeployment) -> dict | None:
    assets = down.api("GET", "/assets", params={"uri_pattern": PULLED_HERE}).json()["assets"]
    asset_id = next(a["id"] for a in assets if a["uri"] == PULLED_HERE)
    entries = down.api("GET", f"/assets/{asset_id}/state-store").json()["asset_state_store"]
    return next((e["value"] for e in entries if e["key"].startswith("astro_xdeps.pull:")), None)


def test_watcher_pulls_each_upstream_event_once_across_triggerer_sigkills(pulled):
    up, down = pulled.upstream, pulled.downstream
    # The watcher records its starting point once it first runs; start producing after that.
    _wait_count(lambda: [m] if (m := _watermark(down)) else [], 1, timeout=180)
    assert _pulled_events(down) == []

    up_runs = []
    for n in range(1, 6):
        run_id = up.trigger("pull_producer", conf={"n": n})
        assert up.wait_for_run("pull_producer", run_id, timeout=180)["state"] == "success"
        up_runs.append(run_id)
        if n == 2:
            # Killed while the event is (probably) in flight: it must arrive exactly once.
            down.stop_component("triggerer", sig=signal.SIGKILL)
            down.start_component("triggerer")
        _wait_count(lambda: _pulled_events(down), n)
        _wait_count(lambda: [r for r in down.dag_runs("pull_consumer") if r["state"] == "success"], n, 240)
        if n in (1, 3, 4):
            # Killed right after the event was stored, between runs.
            down.stop_component("triggerer", sig=signal.SIGKILL)
            down.start_component("triggerer")

    time.sleep(12)  # a few more polls after the last restart: nothing more may arrive
    events = _pulled_events(down)
    assert len(events) == 5, json.dumps([e["extra"] for e in events], indent=1)
    upstream_events = {e["id"]: e for e in up.asset_events(PULLED_UP)}
    by_n = {}
    for event in events:
        payload = event["extra"]["payload"]
        source = payload["xdeps"]["source"]
        assert payload["xdeps_event_id"] == f"pull:{up.url}:{source['event_id']}"
        assert source["deployment"] == up.url
        assert source["uri"] == PULLED_UP
        assert source["dag_id"] == "pull_producer" and source["task_id"] == "produce"
        assert source["event_id"] in upstream_events
        assert upstream_events[source["event_id"]]["source_run_id"] == source["run_id"]
        assert "partition_key" in source
        by_n[source["extra"]["n"]] = source["run_id"]
    assert by_n == {n: run_id for n, run_id in zip(range(1, 6), up_runs, strict=True)}
    consumer_runs = [r for r in down.dag_runs("pull_consumer") if r["state"] == "success"]
    assert len(consumer_runs) == 5
    assert len(upstream_events) == 5
    # Pulled events carry provenance, so the downstream's route back upstream skips them.
    status = run_cli("outbox", "status", env={"AIRFLOW_HOME": str(down.home)})
    assert "empty: nothing pending" in status.stdout, status.stdout + status.stderr

"""Links between a real Airflow 2.11 and a real Airflow 3.3 deployment, both ways.

2.11 -> 3.3: a Dataset outlet's event is written to the outbox in the task's process and sent by
the 2.11 scheduler's worker (v2 API, JWT). 3.3 -> 2.11: the api-server's worker sends to the v1
API with basic auth. A failed 2.11 DAG run triggers a 3.3 DAG through the 2.11 scheduler's relay
rule. Each direction goes through a restart of the receiving deployment: no loss, no duplicates.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from astro_xdeps.outbox import Outbox
from astro_xdeps.relay.signing import webhook_headers
from astro_xdeps.testing.airflow2_deployment import COMPONENTS_V2
from astro_xdeps.testing.local_deployment import COMPONENTS, _stop_group, free_port
from tests.integration.mixed.conftest import cli_of

FROM_AF2 = "file://mixed/from_af2"
FROM_AF3 = "file://mixed/from_af3"


def _trigger(deployment, dag_id: str, n: int) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [deployment.trigger(dag_id, run_id=f"m{tag}_{i}") for i in range(n)]


def _wait(deployment, dag_id: str, run_ids: list[str], *, state: str = "success") -> list[str]:
    for run_id in run_ids:
        assert deployment.wait_for_run(dag_id, run_id, timeout=240)["state"] == state
    return run_ids


def _run(deployment, dag_id: str, n: int, *, state: str = "success") -> list[str]:
    return _wait(deployment, dag_id, _trigger(deployment, dag_id, n), state=state)


def _forwarded(deployment, uri: str, run_ids: list[str]) -> Counter:
    """How many events of ``uri`` on ``deployment`` carry each upstream run id in their provenance."""
    counts: Counter = Counter()
    for event in deployment.asset_events(uri, limit=100):
        source = ((event.get("extra") or {}).get("xdeps") or {}).get("source") or {}
        if source.get("run_id") in run_ids:
            counts[source["run_id"]] += 1
    return counts


def _wait_forwarded(deployment, uri: str, run_ids: list[str], timeout: float = 150) -> Counter:
    deadline = time.monotonic() + timeout
    counts: Counter = Counter()
    while time.monotonic() < deadline:
        counts = _forwarded(deployment, uri, run_ids)
        if len(counts) == len(run_ids):
            time.sleep(5)  # give a would-be duplicate the chance to show up
            return _forwarded(deployment, uri, run_ids)
        time.sleep(2)
    return counts


def _outbox_status(deployment) -> str:
    """`astro-xdeps outbox status` from the deployment's own environment (2.11 or 3.3)."""
    result = cli_of(deployment, "outbox", "status")
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_airflow2_to_3_forwarding_and_relay_survive_a_downstream_restart(mixed):
    """2.11 -> 3.3: events and a relay trigger made while 3.3 is down arrive once after it is back."""
    af2, af3 = mixed.af2, mixed.af3
    recovery_before = {r["dag_run_id"] for r in af3.dag_runs("af3_recovery")}

    af3.stop()
    try:
        # All three runs queued at once: the scheduler works through them together.
        produced = _trigger(af2, "af2_producer", 2)
        failed = _trigger(af2, "af2_fails", 1)
        _wait(af2, "af2_producer", produced)
        _wait(af2, "af2_fails", failed, state="failed")
        time.sleep(3)
        status = _outbox_status(af2)
        assert "pending" in status and "asset_event" in status and "dag_run" in status, status
    finally:
        af3.start(COMPONENTS, timeout=180)

    assert _wait_forwarded(af3, FROM_AF2, produced) == Counter({r: 1 for r in produced})
    deadline = time.monotonic() + 150
    new_runs: list[dict] = []
    while time.monotonic() < deadline and not new_runs:
        new_runs = [r for r in af3.dag_runs("af3_recovery") if r["dag_run_id"] not in recovery_before]
        time.sleep(2)
    time.sleep(5)
    new_runs = [r for r in af3.dag_runs("af3_recovery") if r["dag_run_id"] not in recovery_before]
    assert len(new_runs) == 1, new_runs
    assert new_runs[0]["dag_run_id"].startswith("xdeps__af2-failure__")
    assert new_runs[0]["conf"]["failed_run"] == failed[0]
    assert new_runs[0]["conf"]["failed_dag"] == "af2_fails"

    # Healthy again: one more event arrives once, with the 2.11 task as its source, and the
    # 3.3 consumer of the forwarded asset runs.
    consumer_before = len(af3.dag_runs("af3_consumer"))
    produced_healthy = _run(af2, "af2_producer", 1)
    assert _wait_forwarded(af3, FROM_AF2, produced_healthy) == Counter({produced_healthy[0]: 1})
    event = next(
        e
        for e in af3.asset_events(FROM_AF2)
        if e["extra"]["xdeps"]["source"]["run_id"] == produced_healthy[0]
    )
    source = event["extra"]["xdeps"]["source"]
    assert (source["deployment"], source["dag_id"], source["task_id"]) == ("af2", "af2_producer", "write")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and len(af3.dag_runs("af3_consumer")) <= consumer_before:
        time.sleep(2)
    assert len(af3.dag_runs("af3_consumer")) > consumer_before


def test_airflow3_to_2_forwarding_survives_a_downstream_restart(mixed):
    """3.3 -> 2.11 (v1 API, basic auth): events made while 2.11 is down arrive once after it is back."""
    af2, af3 = mixed.af2, mixed.af3
    consumer_before = len(af2.dag_runs("af2_consumer"))
    af2.stop()
    try:
        produced = _run(af3, "af3_producer", 2)
        time.sleep(3)
        status = _outbox_status(af3)
        assert "pending" in status and "could not be reached" in status, status
    finally:
        af2.start(COMPONENTS_V2, timeout=240)
    assert _wait_forwarded(af2, FROM_AF3, produced) == Counter({r: 1 for r in produced})
    # The 2.11 consumer of the forwarded dataset runs.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(af2.dag_runs("af2_consumer")) <= consumer_before:
        time.sleep(2)
    assert len(af2.dag_runs("af2_consumer")) > consumer_before
    # Nothing bounced back: the 2.11 webserver saw the received events but did not forward them,
    # so 3.3 holds only its own (local) events of FROM_AF3.
    time.sleep(5)
    assert all("xdeps" not in (e.get("extra") or {}) for e in af3.asset_events(FROM_AF3))
    with Outbox.sqlite(af2.home / "xdeps_outbox.db") as outbox:
        assert [i for i in outbox.list_items(limit=1000) if i.payload.get("uri") == FROM_AF3] == []


def test_doctor_from_each_version_against_the_other(mixed):
    """The quickstart's check, run from the 2.11 environment against 3.3 (JWT) and back (basic auth)."""
    af2, af3 = mixed.af2, mixed.af3
    conn_af3 = {"AIRFLOW_CONN_XDEPS_DEFAULT": af3.connection_json()}
    conn_af2 = {"AIRFLOW_CONN_XDEPS_DEFAULT": af2.connection_json()}
    with ThreadPoolExecutor(max_workers=2) as pool:  # two independent CLI runs, each mostly imports
        doctor_to_af3 = pool.submit(
            cli_of, af2, "doctor", "--asset", FROM_AF2, "--dag", "af3_consumer", env=conn_af3
        )
        doctor_to_af2 = pool.submit(
            cli_of, af3, "doctor", "--asset", FROM_AF3, "--dag", "af2_consumer", env=conn_af2
        )
        to_af3, to_af2 = doctor_to_af3.result(), doctor_to_af2.result()
    assert to_af3.returncode == 0, to_af3.stdout + to_af3.stderr
    assert "jwt as admin accepted" in to_af3.stdout
    assert to_af2.returncode == 0, to_af2.stdout + to_af2.stderr
    assert "basic as admin accepted" in to_af2.stdout
    assert af2.password not in to_af2.stdout + to_af2.stderr


def test_standalone_relay_on_airflow2_triggers_a_3_dag_once(mixed, tmp_path):
    """`astro-xdeps relay serve` from the 2.11 environment (the `relay` extra: fastapi, uvicorn)."""
    af2, af3 = mixed.af2, mixed.af3
    port = free_port()
    secret = "whsec_" + base64.b64encode(b"mixed-relay-secret-of-32-bytes!!").decode()
    env = {
        "AIRFLOW_HOME": str(tmp_path),  # its own outbox; the deployment's scheduler is not involved
        "AIRFLOW_CONN_XDEPS_DEFAULT": af3.connection_json(),
        "AIRFLOW__ASTRO_XDEPS__RETRY_MAX_DELAY": "2",
        "XDEPS_RELAY_SECRET": secret,
    }
    skip = ("AIRFLOW", "DEPLOYMENT_URL", "API_TOKEN")
    exe = str(Path(af2._airflow_bin()).with_name("astro-xdeps"))
    log = open(tmp_path / "relay.out", "wb")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(
        [
            exe,
            "relay",
            "serve",
            "--config",
            str(Path(__file__).with_name("relay_af2.yaml")),
            "--port",
            str(port),
        ],
        env={**{k: v for k, v in os.environ.items() if not k.startswith(skip)}, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "relay.out").read_text()
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(1)
        run_id = f"manual__{uuid.uuid4().hex[:8]}"
        body = json.dumps(
            {"type": "dag_run.failed", "dag_id": "af2_webhook_producer", "run_id": run_id}
        ).encode()
        headers = webhook_headers(body, [secret], msg_id=f"msg_{uuid.uuid4().hex}")
        url = f"http://127.0.0.1:{port}/events/alerts"
        answers = [
            requests.post(url, data=body, headers={"content-type": "application/json", **headers}, timeout=30)
            for _ in range(2)
        ]
        assert [a.status_code for a in answers] == [202, 202], [a.text for a in answers]
        assert [a.json()["new_actions"] for a in answers] == [1, 0]

        def runs() -> list[dict]:
            return [
                r for r in af3.dag_runs("af3_recovery") if (r.get("conf") or {}).get("failed_run") == run_id
            ]

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not runs():
            time.sleep(2)
        time.sleep(5)
        assert len(runs()) == 1, (tmp_path / "relay.out").read_text()[-2000:]
    finally:
        _stop_group(proc, signal.SIGTERM, 20)

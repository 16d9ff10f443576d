"""`astro-xdeps doctor` and `emit` against a real Airflow 3 api-server (JWT login)."""

from __future__ import annotations

import json
import uuid

from tests.integration.conftest import run_cli

BEARS = "file://include/bears"


def _conn_env(deployment, **overrides) -> dict[str, str]:
    conn = json.loads(deployment.connection_json())
    conn.update(overrides)
    return {"AIRFLOW_CONN_XDEPS_DEFAULT": json.dumps(conn)}


def test_doctor_passes_against_a_healthy_deployment(downstream):
    result = run_cli("doctor", "--asset", BEARS, "--dag", "consumer_dag", env=_conn_env(downstream))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "jwt as admin accepted" in result.stdout
    assert "FAIL" not in result.stdout


def test_doctor_fails_on_wrong_password_without_leaking_it(downstream):
    result = run_cli("doctor", env=_conn_env(downstream, password="not-the-password-123"))
    assert result.returncode == 1
    assert "FAIL  authentication" in result.stdout
    assert "not-the-password-123" not in result.stdout + result.stderr


def test_doctor_reports_missing_asset_and_dag(downstream):
    result = run_cli(
        "doctor", "--asset", "file://include/nothing-here", "--dag", "no_such_dag", env=_conn_env(downstream)
    )
    assert result.returncode == 1
    assert "FAIL  asset file://include/nothing-here" in result.stdout
    assert "FAIL  DAG no_such_dag" in result.stdout


def test_doctor_reads_deployment_url_when_the_default_connection_is_missing(downstream):
    # DEPLOYMENT_URL alone (no token): reachable, but the API refuses us -> auth check fails.
    result = run_cli("doctor", env={"DEPLOYMENT_URL": downstream.url + "/api/v2/"})
    assert "OK    reachable" in result.stdout, result.stdout + result.stderr
    assert "FAIL  authentication" in result.stdout


def test_emit_creates_the_event_with_its_extra(downstream):
    marker = str(uuid.uuid4())
    result = run_cli("emit", BEARS, "--extra", json.dumps({"marker": marker}), env=_conn_env(downstream))
    assert result.returncode == 0, result.stdout + result.stderr
    event_id = int(result.stdout.strip())

    created = next(e for e in downstream.asset_events(BEARS) if e["id"] == event_id)
    assert created["uri"] == BEARS
    assert created["extra"]["marker"] == marker
    assert created["extra"]["xdeps_event_id"]


def test_emit_to_a_missing_asset_fails_clearly(downstream):
    result = run_cli("emit", "file://include/nothing-here", env=_conn_env(downstream))
    assert result.returncode == 1
    assert "No asset with uri 'file://include/nothing-here'" in result.stderr

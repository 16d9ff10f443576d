"""``astro-xdeps doctor``: exit 0 when the target is usable, 1 when a check fails, 2 on bad config."""

from __future__ import annotations

import pytest
import requests
import responses
from responses import matchers

from astro_xdeps.cli.main import main

pytestmark = pytest.mark.usefixtures("sleeps")  # retries back off instantly

BASE = "https://target.example.com"
TOKEN = "tok-SECRET-9f8e7d6c5b4a"
URI = "s3://bucket/orders"
HEALTHY = {"metadatabase": {"status": "healthy"}, "scheduler": {"status": "healthy"}}


@pytest.fixture(autouse=True)
def target_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The target comes from DEPLOYMENT_URL/API_TOKEN, as when no connection is configured."""
    monkeypatch.delenv("AIRFLOW_CONN_XDEPS_DEFAULT", raising=False)
    monkeypatch.setenv("DEPLOYMENT_URL", BASE)
    monkeypatch.setenv("API_TOKEN", TOKEN)


def register_v2_basics(mock: responses.RequestsMock, health: dict | None = None) -> None:
    """Version detection, version, health and the auth check of an Airflow 3 target."""
    mock.get(f"{BASE}/api/v2/version", json={"version": "3.3.2"})
    mock.get(f"{BASE}/api/v2/monitor/health", json=health or HEALTHY)
    mock.get(
        f"{BASE}/api/v2/dags",
        json={"dags": []},
        match=[
            matchers.query_param_matcher({"limit": 1}),
            matchers.header_matcher({"Authorization": f"Bearer {TOKEN}"}),
        ],
    )


def register_asset(mock: responses.RequestsMock, *assets: tuple[int, str]) -> None:
    items = [{"id": i, "uri": u} for i, u in assets]
    mock.get(f"{BASE}/api/v2/assets", json={"assets": items, "total_entries": len(items)})


def test_all_checks_pass_exits_0(rsps: responses.RequestsMock, capsys: pytest.CaptureFixture) -> None:
    register_v2_basics(rsps)
    register_asset(rsps, (7, URI))
    rsps.get(f"{BASE}/api/v2/dags/etl", json={"dag_id": "etl", "is_paused": False})
    assert main(["doctor", "--asset", URI, "--dag", "etl"]) == 0
    out = capsys.readouterr().out
    assert "all 7 checks passed" in out
    assert "FAIL" not in out
    assert "v2 (Airflow 3.3.2)" in out
    assert f"asset {URI}" in out
    assert "exists (id 7)" in out
    assert "token accepted" in out


def test_paused_dag_exits_1_and_says_paused(
    rsps: responses.RequestsMock, capsys: pytest.CaptureFixture
) -> None:
    register_v2_basics(rsps)
    rsps.get(f"{BASE}/api/v2/dags/etl", json={"dag_id": "etl", "is_paused": True})
    assert main(["doctor", "--dag", "etl"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  DAG etl" in out
    assert "paused" in out
    assert "5 passed, 1 failed" in out


def test_missing_dag_exits_1(rsps: responses.RequestsMock, capsys: pytest.CaptureFixture) -> None:
    register_v2_basics(rsps)
    rsps.get(f"{BASE}/api/v2/dags/etl", status=404)
    assert main(["doctor", "--dag", "etl"]) == 1
    assert "not found: deploy it" in capsys.readouterr().out


def test_missing_asset_exits_1(rsps: responses.RequestsMock, capsys: pytest.CaptureFixture) -> None:
    register_v2_basics(rsps)
    register_asset(rsps, (1, f"{URI}/2024"))  # a LIKE match, not the asset
    assert main(["doctor", "--asset", URI]) == 1
    out = capsys.readouterr().out
    assert f"FAIL  asset {URI}" in out
    assert "No asset with uri" in out


def test_unreachable_target_exits_1_after_one_retry(
    rsps: responses.RequestsMock, capsys: pytest.CaptureFixture
) -> None:
    rsps.get(f"{BASE}/api/v2/version", body=requests.ConnectionError("Connection refused"))
    assert main(["doctor", "--dag", "etl"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  reachable" in out
    assert "could not be reached" in out
    assert "0 passed, 1 failed" in out
    assert len(rsps.calls) == 2  # doctor answers fast: one retry only


def test_missing_config_exits_2(
    monkeypatch: pytest.MonkeyPatch, rsps: responses.RequestsMock, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.delenv("DEPLOYMENT_URL")
    assert main(["doctor"]) == 2
    assert "DEPLOYMENT_URL" in capsys.readouterr().err
    assert len(rsps.calls) == 0


def test_named_connection_that_does_not_exist_exits_2(capsys: pytest.CaptureFixture) -> None:
    assert main(["doctor", "--conn-id", "nope"]) == 2
    assert "Connection 'nope' does not exist" in capsys.readouterr().err


def test_refused_credentials_stop_before_asset_and_dag_checks(
    rsps: responses.RequestsMock, capsys: pytest.CaptureFixture
) -> None:
    rsps.get(f"{BASE}/api/v2/version", json={"version": "3.3.2"})
    rsps.get(f"{BASE}/api/v2/monitor/health", json=HEALTHY)
    rsps.get(f"{BASE}/api/v2/dags", status=401, body=f"invalid token {TOKEN}")
    assert main(["doctor", "--asset", URI, "--dag", "etl"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  authentication" in out
    assert "asset" not in out
    assert "DAG etl" not in out
    assert TOKEN not in out


def test_unhealthy_scheduler_fails_the_health_check(
    rsps: responses.RequestsMock, capsys: pytest.CaptureFixture
) -> None:
    register_v2_basics(
        rsps, health={"metadatabase": {"status": "healthy"}, "scheduler": {"status": "unhealthy"}}
    )
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  health" in out
    assert "scheduler unhealthy" in out


def test_component_without_a_status_does_not_fail_the_health_check(
    rsps: responses.RequestsMock, capsys: pytest.CaptureFixture
) -> None:
    register_v2_basics(rsps, health={**HEALTHY, "triggerer": {"status": None}})
    assert main(["doctor"]) == 0
    assert "all 5 checks passed" in capsys.readouterr().out


def test_doctor_against_airflow_2(rsps: responses.RequestsMock, capsys: pytest.CaptureFixture) -> None:
    rsps.get(f"{BASE}/api/v2/version", status=404)
    rsps.get(f"{BASE}/api/v1/version", json={"version": "2.11.2"})
    rsps.get(f"{BASE}/api/v1/health", json=HEALTHY)
    rsps.get(f"{BASE}/api/v1/dags", json={"dags": []})
    rsps.get(f"{BASE}/api/v1/datasets/s3%3A%2F%2Fbucket%2Forders", json={"id": 3, "uri": URI})
    rsps.get(f"{BASE}/api/v1/dags/etl", json={"dag_id": "etl", "is_paused": False})
    assert main(["doctor", "--asset", URI, "--dag", "etl"]) == 0
    assert "v1 (Airflow 2.11.2)" in capsys.readouterr().out

"""``astro-xdeps emit``: create one asset event, print its id; 1 when it fails, 2 on bad input."""

from __future__ import annotations

import json
import uuid

import pytest
import requests
import responses
from responses import matchers

from astro_xdeps.cli.main import main

pytestmark = pytest.mark.usefixtures("sleeps")  # retries back off instantly

BASE = "https://target.example.com"
TOKEN = "tok-SECRET-9f8e7d6c5b4a"
URI = "s3://bucket/orders"
EVENTS = f"{BASE}/api/v2/assets/events"


@pytest.fixture(autouse=True)
def target_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The target comes from DEPLOYMENT_URL/API_TOKEN, as when no connection is configured."""
    monkeypatch.delenv("AIRFLOW_CONN_XDEPS_DEFAULT", raising=False)
    monkeypatch.setenv("DEPLOYMENT_URL", BASE)
    monkeypatch.setenv("API_TOKEN", TOKEN)


def register_target(mock: responses.RequestsMock, *assets: tuple[int, str]) -> None:
    """An Airflow 3 target that knows ``assets``."""
    items = [{"id": i, "uri": u} for i, u in assets]
    mock.get(f"{BASE}/api/v2/version", json={"version": "3.3.2"})
    mock.get(f"{BASE}/api/v2/assets", json={"assets": items, "total_entries": len(items)})


def posted_bodies(mock: responses.RequestsMock) -> list[dict]:
    return [json.loads(c.request.body) for c in mock.calls if c.request.method == "POST"]


def test_emit_prints_the_created_event_id(
    rsps: responses.RequestsMock, capsys: pytest.CaptureFixture
) -> None:
    register_target(rsps, (7, URI))
    rsps.post(EVENTS, json={"id": 123, "asset_id": 7})
    assert main(["emit", URI]) == 0
    captured = capsys.readouterr()
    assert captured.out == "123\n"
    assert f"created asset event 123 for {URI}" in captured.err


def test_event_id_and_extra_land_in_the_events_extra(rsps: responses.RequestsMock) -> None:
    register_target(rsps, (7, URI))
    body = {"asset_id": 7, "extra": {"rows": 10, "xdeps_event_id": "evt-1"}}
    rsps.post(EVENTS, json={"id": 1}, match=[matchers.json_params_matcher(body)])
    assert main(["emit", URI, "--extra", '{"rows": 10}', "--event-id", "evt-1"]) == 0


def test_without_event_id_a_fresh_uuid_is_used(rsps: responses.RequestsMock) -> None:
    register_target(rsps, (7, URI))
    rsps.post(EVENTS, json={"id": 1})
    assert main(["emit", URI]) == 0
    assert main(["emit", URI]) == 0
    first, second = (b["extra"]["xdeps_event_id"] for b in posted_bodies(rsps))
    assert uuid.UUID(first) != uuid.UUID(second)


def test_partition_key_is_sent(rsps: responses.RequestsMock) -> None:
    register_target(rsps, (7, URI))
    rsps.post(EVENTS, json={"id": 1})
    assert main(["emit", URI, "--partition-key", "2024-06-01", "--event-id", "e"]) == 0
    assert posted_bodies(rsps) == [
        {"asset_id": 7, "extra": {"xdeps_event_id": "e"}, "partition_key": "2024-06-01"}
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [("{rows: 10}", "--extra is not valid JSON"), ("[1, 2]", "--extra must be a JSON object, got list")],
)
def test_bad_extra_exits_2_without_calling_the_target(
    rsps: responses.RequestsMock, capsys: pytest.CaptureFixture, extra: str, message: str
) -> None:
    assert main(["emit", URI, "--extra", extra]) == 2
    assert message in capsys.readouterr().err
    assert len(rsps.calls) == 0


def test_missing_asset_exits_1_with_a_clear_message(
    rsps: responses.RequestsMock, capsys: pytest.CaptureFixture
) -> None:
    register_target(rsps, (1, "s3://bucket/orders_v2"))
    assert main(["emit", URI]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"failed to create the event for {URI!r}" in captured.err
    assert f"No asset with uri {URI!r}" in captured.err
    assert "deploy the consuming DAG" in captured.err


def test_missing_config_exits_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.delenv("DEPLOYMENT_URL")
    assert main(["emit", URI]) == 2
    assert "DEPLOYMENT_URL" in capsys.readouterr().err


def test_ambiguous_failure_returns_the_event_that_did_arrive(
    rsps: responses.RequestsMock, capsys: pytest.CaptureFixture
) -> None:
    register_target(rsps, (7, URI))
    rsps.post(EVENTS, body=requests.ReadTimeout("read timed out"))
    rsps.get(EVENTS, json={"asset_events": [{"id": 55, "extra": {"xdeps_event_id": "evt-1"}}]})
    assert main(["emit", URI, "--event-id", "evt-1"]) == 0
    assert capsys.readouterr().out == "55\n"
    assert len(posted_bodies(rsps)) == 1


def test_rejected_event_exits_1_without_leaking_the_token(
    rsps: responses.RequestsMock, capsys: pytest.CaptureFixture
) -> None:
    register_target(rsps, (7, URI))
    rsps.post(EVENTS, status=403, body=f"token {TOKEN} may not create events")
    assert main(["emit", URI]) == 1
    captured = capsys.readouterr()
    assert "HTTP 403" in captured.err
    assert TOKEN not in captured.err + captured.out


def test_named_connection_is_used(
    monkeypatch: pytest.MonkeyPatch, rsps: responses.RequestsMock, capsys: pytest.CaptureFixture
) -> None:
    connection = {
        "conn_type": "xdeps_deployment",
        "host": "other.example.com",
        "password": "tok-other-123456",
        "extra": {"api_version": "v1"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_TARGET", json.dumps(connection))
    rsps.post(
        "https://other.example.com/api/v1/datasets/events",
        json={"id": 9},
        match=[matchers.header_matcher({"Authorization": "Bearer tok-other-123456"})],
    )
    assert main(["emit", "--conn-id", "target", URI]) == 0
    assert capsys.readouterr().out == "9\n"


def test_version_flag_prints_the_version(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("astro-xdeps ")


def test_missing_command_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2

"""The relay's HTTP door: status codes of the wire contract, idempotency, health and metrics."""

from __future__ import annotations

import base64
import json
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning

from astro_xdeps.exceptions import ConfigError
from astro_xdeps.outbox import Outbox, OutboxError
from astro_xdeps.relay.app import RelayRuntime, create_app
from astro_xdeps.relay.config import parse_config
from astro_xdeps.relay.engine import RelayEngine
from astro_xdeps.relay.problems import UNAVAILABLE
from astro_xdeps.relay.rules import RelayConfig, dag_run_id
from astro_xdeps.relay.signing import generate_secret, webhook_headers

with warnings.catch_warnings():
    # Starlette asks for httpx2 instead of httpx: about the test tool, not this package.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

SECRET = generate_secret()
OTHER_SECRET = generate_secret()
BEARER = "bearer-secret-Zx9y8w7v6u5t4s3r"
WEBHOOK_ENV = "XDEPS_TEST_RELAY_WEBHOOK_SECRET"
BEARER_ENV = "XDEPS_TEST_RELAY_BEARER_SECRET"
UNSET_ENV = "XDEPS_TEST_RELAY_UNSET_SECRET"
BROKEN_ENV = "XDEPS_TEST_RELAY_BROKEN_SECRET"
BROKEN_SECRET = "whsec_not*base64*at*all*but*long*enough"
SECRETS = (SECRET, SECRET.removeprefix("whsec_"), OTHER_SECRET, BEARER, BROKEN_SECRET)
MAX_BODY = 1024

CONFIG: RelayConfig = parse_config(
    {
        "sources": [
            {
                "name": "alerts",
                "secrets_env": [WEBHOOK_ENV],
                "deployment": "prod-up",
                "tolerance_seconds": 300,
            },
            {"name": "ci", "auth": "bearer", "secrets_env": [BEARER_ENV]},
            {"name": "unset", "secrets_env": [UNSET_ENV]},
            {"name": "broken", "secrets_env": [BROKEN_ENV]},
        ],
        "rules": [
            {
                "name": "recover-orders",
                "when": {"type": "dag_run.failed", "dag_id": "load_orders*"},
                "then": [{"trigger_dag": {"target": "downstream", "dag_id": "recover_orders"}}],
            },
            {
                "name": "all-extracts",
                "when_all": [
                    {"type": "dag_run.success", "dag_id": "extract_a"},
                    {"type": "dag_run.success", "dag_id": "extract_b"},
                ],
                "within": "1h",
                "then": [{"trigger_dag": {"target": "downstream", "dag_id": "build_report"}}],
            },
        ],
        "max_body_bytes": MAX_BODY,
    }
)

FAILED = {"type": "dag_run.failed", "dag_id": "load_orders", "run_id": "scheduled__1"}
UNAVAILABLE_PROBLEM = {
    "type": "urn:astro-xdeps:relay:problem:unavailable",
    "title": "The relay cannot take events now",
    "status": 503,
    "detail": UNAVAILABLE,
}


@dataclass
class Relay:
    client: TestClient
    outbox: Outbox
    enqueue_calls: list[None] = field(default_factory=list)
    loads: int = 0

    def items(self) -> list:
        return self.outbox.list_items(limit=1000)


@pytest.fixture(autouse=True)
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WEBHOOK_ENV, SECRET)
    monkeypatch.setenv(BEARER_ENV, BEARER)
    monkeypatch.setenv(BROKEN_ENV, BROKEN_SECRET)
    monkeypatch.delenv(UNSET_ENV, raising=False)


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox.sqlite(tmp_path / "outbox.db") as box:
        yield box


def make_relay(outbox: Outbox, config: RelayConfig = CONFIG, *, open_monitoring: bool = True) -> Relay:
    relay = Relay(client=None, outbox=outbox)  # type: ignore[arg-type]

    def load() -> RelayRuntime:
        relay.loads += 1
        return RelayRuntime(RelayEngine(config, outbox), on_enqueue=lambda: relay.enqueue_calls.append(None))

    relay.client = TestClient(create_app(load, open_monitoring=open_monitoring))
    return relay


@pytest.fixture
def relay(outbox: Outbox) -> Relay:
    return make_relay(outbox)


def body_of(payload: Any) -> bytes:
    return json.dumps(payload).encode() if not isinstance(payload, bytes) else payload


def signed(
    payload: Any,
    *,
    msg_id: str = "msg_1",
    secret: str = SECRET,
    timestamp: float | None = None,
    content_type: str = "application/json",
) -> dict[str, Any]:
    """Request kwargs for a Standard Webhooks request signed with ``secret``."""
    body = body_of(payload)
    headers = webhook_headers(body, [secret], msg_id=msg_id, timestamp=timestamp or time.time())
    return {"content": body, "headers": {**headers, "content-type": content_type}}


def post(relay: Relay, payload: Any, source: str = "alerts", **kw: Any):
    return relay.client.post(f"/events/{source}", **signed(payload, **kw))


# --- accepted ------------------------------------------------------------------------------------


def test_a_signed_generic_event_is_accepted_after_the_outbox_write(relay: Relay) -> None:
    response = post(relay, FAILED, msg_id="msg_abc")
    assert response.status_code == 202
    [item] = relay.items()
    assert response.json() == {
        "event_id": "msg_abc",
        "type": "dag_run.failed",
        "matched": ["recover-orders"],
        "waiting": [],
        "new_actions": 1,
        "actions": [item.id],
    }
    assert item.payload["dag_run_id"] == dag_run_id("recover-orders", ["alerts/msg_abc"])
    event = item.payload["conf"]["xdeps"]["events"][0]
    assert (event["deployment"], event["run_id"]) == ("prod-up", "scheduled__1")  # the source's deployment
    assert len(relay.enqueue_calls) == 1


def test_the_same_webhook_id_three_times_is_one_action(relay: Relay) -> None:
    responses = [post(relay, FAILED, msg_id="msg_same", timestamp=time.time() - i) for i in range(3)]
    assert [r.status_code for r in responses] == [202, 202, 202]
    assert [r.json()["new_actions"] for r in responses] == [1, 0, 0]
    assert len({tuple(r.json()["actions"]) for r in responses}) == 1
    assert len(relay.items()) == 1
    assert len(relay.enqueue_calls) == 1  # the worker is woken only for new actions


def test_the_payload_id_wins_over_the_webhook_id(relay: Relay) -> None:
    first = post(relay, {**FAILED, "id": "evt-9"}, msg_id="msg_1")
    second = post(relay, {**FAILED, "id": "evt-9"}, msg_id="msg_2")
    assert (first.json()["event_id"], second.json()["new_actions"]) == ("evt-9", 0)
    assert len(relay.items()) == 1


@pytest.mark.parametrize("wrap", [False, True], ids=["as-sent", "dag-run-body"])
def test_an_astro_alert_is_accepted(relay: Relay, wrap: bool) -> None:
    alert = {
        "dagName": "load_orders_eu",
        "alertType": "DAG_FAILURE",
        "alertId": "d75e7517",
        "message": "failed. \\nAlert notification time: 2026-01-31 12:00:00 UTC.",
    }
    response = post(relay, {"conf": alert} if wrap else alert, msg_id="msg_alert")
    assert response.status_code == 202
    assert (response.json()["type"], response.json()["matched"]) == ("dag_run.failed", ["recover-orders"])
    event = relay.items()[0].payload["conf"]["xdeps"]["events"][0]
    assert event["dag_id"] == "load_orders_eu"
    assert event["occurred_at"] == "2026-01-31T12:00:00+00:00"
    assert event["attributes"] == {
        "source": "astro_alert",
        "alert_type": "DAG_FAILURE",
        "alert_id": "d75e7517",
    }


def test_an_event_no_rule_concerns_is_accepted_without_actions(relay: Relay) -> None:
    response = post(relay, {"type": "dag_run.success", "dag_id": "other"})
    assert response.status_code == 202
    assert (response.json()["matched"], response.json()["new_actions"]) == ([], 0)
    assert relay.items() == []
    assert relay.enqueue_calls == []


def test_many_to_one_through_the_door(relay: Relay) -> None:
    first = post(relay, {"type": "dag_run.success", "dag_id": "extract_a"}, msg_id="msg_a")
    assert (first.status_code, first.json()["waiting"], first.json()["new_actions"]) == (
        202,
        ["all-extracts"],
        0,
    )
    assert relay.enqueue_calls == []
    second = post(relay, {"type": "dag_run.success", "dag_id": "extract_b"}, msg_id="msg_b")
    assert (second.json()["waiting"], second.json()["new_actions"]) == ([], 1)
    assert relay.items()[0].payload["dag_run_id"] == dag_run_id(
        "all-extracts", ["alerts/msg_a", "alerts/msg_b"]
    )
    assert len(relay.enqueue_calls) == 1


def test_secret_rotation_accepts_the_old_and_the_new_secret(outbox: Outbox, monkeypatch) -> None:
    config = parse_config(
        {"sources": [{"name": "alerts", "secrets_env": ["XDEPS_TEST_NEW", "XDEPS_TEST_OLD"]}], "rules": []}
    )
    monkeypatch.setenv("XDEPS_TEST_NEW", OTHER_SECRET)
    monkeypatch.setenv("XDEPS_TEST_OLD", SECRET)
    relay = make_relay(outbox, config)
    assert post(relay, FAILED, secret=SECRET).status_code == 202
    assert post(relay, FAILED, secret=OTHER_SECRET).status_code == 202
    assert post(relay, FAILED, secret=generate_secret()).status_code == 401


def test_content_type_parameters_are_fine(relay: Relay) -> None:
    assert post(relay, FAILED, content_type="Application/JSON; charset=utf-8").status_code == 202


# --- bearer --------------------------------------------------------------------------------------


def bearer(payload: Any, token: str = BEARER, **headers: str) -> dict[str, Any]:
    return {
        "content": body_of(payload),
        "headers": {"authorization": f"Bearer {token}", "content-type": "application/json", **headers},
    }


def test_a_bearer_source(relay: Relay) -> None:
    responses = [
        relay.client.post("/events/ci", **bearer(FAILED, **{"webhook-id": "ci-1"})) for _ in range(2)
    ]
    assert [r.status_code for r in responses] == [202, 202]
    assert [r.json()["new_actions"] for r in responses] == [1, 0]
    assert responses[0].json()["event_id"] == "ci-1"
    event = relay.items()[0].payload["conf"]["xdeps"]["events"][0]
    assert event["deployment"] is None  # the ci source names no deployment


def test_a_bearer_event_needs_an_id_to_be_told_from_a_retry(relay: Relay) -> None:
    response = relay.client.post("/events/ci", **bearer(FAILED))
    assert response.status_code == 422
    assert "id: missing" in response.json()["detail"]
    assert relay.items() == []


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"authorization": "Bearer wrong-secret-0123456789"}, "does not match any configured secret"),
        ({"authorization": BEARER}, "must be 'Bearer <secret>'"),
        ({"authorization": "Basic dXNlcjpwYXNz"}, "must be 'Bearer <secret>'"),
        ({}, "missing header authorization"),
    ],
)
def test_a_wrong_bearer_is_refused(relay: Relay, headers: dict[str, str], reason: str) -> None:
    response = relay.client.post(
        "/events/ci", content=body_of(FAILED), headers={"content-type": "application/json", **headers}
    )
    assert response.status_code == 401
    assert reason in response.json()["detail"]
    assert relay.items() == []


def test_a_standard_webhooks_signature_does_not_open_a_bearer_source(relay: Relay) -> None:
    response = relay.client.post("/events/ci", **signed(FAILED))
    assert response.status_code == 401
    assert relay.items() == []


# --- refused -------------------------------------------------------------------------------------


def _drop(name: str) -> Callable[[dict[str, Any]], None]:
    return lambda kw: kw["headers"].pop(name)


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (
            lambda kw: kw.update(signed(FAILED, secret=OTHER_SECRET)),
            "no v1 signature matched any of the 1 configured",
        ),
        (lambda kw: kw.update(content=kw["content"] + b" "), "no v1 signature matched"),
        (lambda kw: kw["headers"].update({"webhook-id": "msg_other"}), "no v1 signature matched"),
        (_drop("webhook-signature"), "missing header webhook-signature"),
        (_drop("webhook-id"), "missing header webhook-id"),
        (_drop("webhook-timestamp"), "missing header webhook-timestamp"),
        (lambda kw: kw.update(signed(FAILED, timestamp=time.time() - 3600)), "webhook-timestamp is too old"),
        (lambda kw: kw.update(signed(FAILED, timestamp=time.time() + 3600)), "in the future"),
        (
            lambda kw: kw["headers"].update({"webhook-signature": "v1,bm90IGEgc2lnbmF0dXJl"}),
            "no usable v1 signature",
        ),
    ],
    ids=[
        "other-secret",
        "body-changed",
        "id-changed",
        "no-signature",
        "no-id",
        "no-timestamp",
        "expired",
        "future",
        "garbage",
    ],
)
def test_an_unauthentic_request_is_401_with_a_reason(relay: Relay, tamper, reason: str) -> None:
    kw = signed(FAILED)
    tamper(kw)
    response = relay.client.post("/events/alerts", **kw)
    assert response.status_code == 401
    assert reason in response.json()["detail"]
    assert relay.items() == []
    assert relay.enqueue_calls == []


@pytest.mark.parametrize(
    ("request_kw", "status", "name"),
    [
        ({"payload": b"{", "source": "alerts"}, 400, "malformed-body"),
        ({"payload": FAILED, "secret": OTHER_SECRET}, 401, "not-authenticated"),
        ({"payload": FAILED, "source": "nope"}, 404, "unknown-source"),
        ({"payload": {**FAILED, "message": "x" * MAX_BODY}}, 413, "body-too-large"),
        ({"payload": FAILED, "content_type": "text/plain"}, 415, "unsupported-media-type"),
        ({"payload": {"type": "dag_run.failed"}}, 422, "invalid-event"),
        ({"payload": FAILED, "source": "unset"}, 503, "unavailable"),
    ],
)
def test_every_refusal_is_an_rfc_9457_problem(relay: Relay, request_kw: dict, status: int, name: str) -> None:
    response = post(relay, **request_kw)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert set(problem) == {"type", "title", "status", "detail"}
    assert (problem["type"], problem["status"]) == (f"urn:astro-xdeps:relay:problem:{name}", status)
    assert problem["title"] and problem["detail"]


def test_an_unknown_source_is_404(relay: Relay) -> None:
    response = relay.client.post("/events/nope", **signed(FAILED))
    assert response.status_code == 404
    assert response.json()["detail"] == "unknown source: POST to /events/<source> of a configured source"
    assert relay.items() == []


def test_a_body_over_the_limit_is_413_from_its_content_length(relay: Relay) -> None:
    payload = {**FAILED, "message": "x" * MAX_BODY}
    response = post(relay, payload)
    assert response.status_code == 413
    assert f"the limit is {MAX_BODY}" in response.json()["detail"]
    assert relay.items() == []


def test_a_chunked_body_over_the_limit_is_413(relay: Relay) -> None:
    kw = signed({**FAILED, "message": "x" * MAX_BODY})
    body = kw.pop("content")
    chunks = (body[i : i + 100] for i in range(0, len(body), 100))
    response = relay.client.post("/events/alerts", content=chunks, **kw)
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert f"exceeds the limit of {MAX_BODY} bytes" in response.json()["detail"]
    assert relay.items() == []


def test_a_chunked_body_within_the_limit_is_accepted(relay: Relay) -> None:
    kw = signed(FAILED)
    body = kw.pop("content")
    response = relay.client.post("/events/alerts", content=iter([body[:10], body[10:]]), **kw)
    assert response.status_code == 202


def test_a_body_of_exactly_the_limit_is_not_413(relay: Relay) -> None:
    payload = {**FAILED, "message": ""}
    payload["message"] = "x" * (MAX_BODY - len(body_of(payload)))
    assert len(body_of(payload)) == MAX_BODY
    assert post(relay, payload).status_code == 202


def test_text_plain_is_415(relay: Relay) -> None:
    response = post(relay, FAILED, content_type="text/plain")
    assert response.status_code == 415
    assert "content-type must be application/json, got 'text/plain'" in response.json()["detail"]
    assert relay.items() == []


@pytest.mark.parametrize(
    "body", [b'{"type": "dag_run.failed",', b"{'a': 1}", b"NaN", b'{"a": 1, "a": 2}', b"  "]
)
def test_malformed_json_is_400(relay: Relay, body: bytes) -> None:
    response = post(relay, body)
    assert response.status_code == 400
    assert response.json()["detail"].startswith("the body ")
    assert relay.items() == []


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"type": "dag_run.failed"}, "dag_id: missing"),
        ({"type": "dag_run.exploded", "dag_id": "d"}, "type: 'dag_run.exploded' is not an event type"),
        ({"type": "task_instance.failed", "dag_id": "d"}, "task_id: missing"),
        ({"type": "dag_run.failed", "dag_id": "a b"}, "dag_id: 'a b' is not a valid Airflow DAG id"),
        ([FAILED], "expected a JSON object"),
        ({"alertType": "NOPE", "dagName": "d"}, "alertType"),
    ],
)
def test_an_invalid_event_is_422(relay: Relay, payload: Any, reason: str) -> None:
    response = post(relay, payload)
    assert response.status_code == 422
    assert reason in response.json()["detail"]
    assert relay.items() == []


def test_an_unset_secret_is_a_generic_503_and_the_details_go_to_the_log(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    response = post(relay, FAILED, source="unset")
    assert response.status_code == 503
    assert response.json() == UNAVAILABLE_PROBLEM  # no env var names before any auth
    assert response.headers["retry-after"] == "60"
    assert UNSET_ENV not in response.text
    assert f"source 'unset' has no secret: set {UNSET_ENV}." in caplog.text
    assert relay.items() == []


def test_an_unusable_secret_is_a_generic_503(relay: Relay, caplog: pytest.LogCaptureFixture) -> None:
    response = post(relay, FAILED, source="broken")
    assert response.status_code == 503
    assert response.json() == UNAVAILABLE_PROBLEM
    assert "webhook secret is not valid base64" in caplog.text
    assert BROKEN_SECRET.removeprefix("whsec_") not in response.text + caplog.text


def test_a_relay_that_cannot_load_is_503_and_loads_again_on_the_next_request(outbox: Outbox) -> None:
    attempts: list[int] = []

    def load() -> RelayRuntime:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConfigError("relay.yaml: rule 'r'.then: list at least one action.")
        return RelayRuntime(RelayEngine(CONFIG, outbox))

    client = TestClient(create_app(load))
    first = client.post("/events/alerts", **signed(FAILED))
    assert (first.status_code, first.json()["detail"]) == (503, UNAVAILABLE)
    assert "relay.yaml" not in first.text
    assert client.post("/events/alerts", **signed(FAILED)).status_code == 202
    assert client.post("/events/alerts", **signed(FAILED, msg_id="msg_2")).status_code == 202
    assert len(attempts) == 2  # built once it worked, then kept


def test_the_runtime_is_built_on_first_use_only(relay: Relay) -> None:
    assert relay.loads == 0
    post(relay, FAILED)
    post(relay, FAILED, msg_id="msg_2")
    relay.client.get("/health")
    assert relay.loads == 1


# --- the outbox is unavailable -------------------------------------------------------------------


def test_an_outbox_error_is_503_with_retry_after(relay: Relay, monkeypatch: pytest.MonkeyPatch) -> None:
    def down(items: Any) -> Any:
        raise OutboxError("The outbox sqlite:///x.db could not enqueue: disk I/O error.")

    monkeypatch.setattr(relay.outbox, "enqueue", down)
    response = post(relay, FAILED)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json() == UNAVAILABLE_PROBLEM  # the outbox's URL stays in the log
    assert relay.enqueue_calls == []


def test_a_closed_outbox_is_503_and_the_retry_succeeds_once_it_is_back(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    boxes = [Outbox.sqlite(path)]
    config = CONFIG

    def load() -> RelayRuntime:
        return RelayRuntime(RelayEngine(config, boxes[-1]))

    client = TestClient(create_app(load))
    boxes[0].close()
    response = client.post("/events/alerts", **signed(FAILED))
    assert response.status_code == 503
    assert response.json() == UNAVAILABLE_PROBLEM
    assert response.headers["retry-after"] == "5"
    with Outbox.sqlite(path) as reopened:
        assert reopened.list_items() == []


def test_a_failing_relay_state_is_503_not_500(relay: Relay, caplog: pytest.LogCaptureFixture) -> None:
    post(relay, FAILED)  # builds the runtime and its state table
    with relay.outbox.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE xdeps_relay_state")
    response = post(relay, {"type": "dag_run.success", "dag_id": "extract_a"}, msg_id="msg_a")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert "relay state could not record an event" in caplog.text


# --- health and metrics --------------------------------------------------------------------------


def test_health_is_200_when_the_outbox_answers(relay: Relay) -> None:
    response = relay.client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "sources": ["alerts", "ci", "unset", "broken"], "rules": 2}


def test_health_is_503_when_the_outbox_does_not(relay: Relay) -> None:
    relay.client.get("/health")
    relay.outbox.close()
    response = relay.client.get("/health")
    assert response.status_code == 503
    assert response.json()["status"] == "unhealthy"
    assert "closed" in response.json()["error"]  # details: monitoring is open to this caller


def test_health_is_503_when_the_relay_cannot_load() -> None:
    def load() -> RelayRuntime:
        raise ConfigError("no relay config: set [astro_xdeps] relay_config.")

    response = TestClient(create_app(load, open_monitoring=True)).get("/health")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unhealthy",
        "error": "relay misconfigured: no relay config: set [astro_xdeps] relay_config.",
    }


def metric_lines(relay: Relay) -> list[str]:
    response = relay.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text.splitlines()


def test_metrics_count_requests_by_source_and_status_and_show_the_outbox(relay: Relay) -> None:
    post(relay, FAILED)
    post(relay, FAILED)
    post(relay, FAILED, secret=OTHER_SECRET)
    post(relay, FAILED, source="nope")
    post(relay, FAILED, content_type="text/plain")
    relay.client.post("/events/ci", **bearer(FAILED, **{"webhook-id": "ci-1"}))
    lines = metric_lines(relay)
    assert "# TYPE xdeps_relay_requests_total counter" in lines
    for expected in (
        'xdeps_relay_requests_total{source="alerts",status="202"} 2',
        'xdeps_relay_requests_total{source="alerts",status="401"} 1',
        'xdeps_relay_requests_total{source="alerts",status="415"} 1',
        'xdeps_relay_requests_total{source="-",status="404"} 1',
        'xdeps_relay_requests_total{source="ci",status="202"} 1',
        'xdeps_relay_actions_total{rule="recover-orders"} 2',
        "# TYPE xdeps_outbox_items gauge",
        'xdeps_outbox_items{target="downstream",kind="dag_run",state="pending"} 2',
    ):
        assert expected in lines


def test_metrics_count_503s_and_report_an_unavailable_outbox(relay: Relay) -> None:
    post(relay, {"type": "dag_run.success", "dag_id": "other"})
    relay.outbox.close()
    post(relay, FAILED)
    lines = metric_lines(relay)
    assert 'xdeps_relay_requests_total{source="alerts",status="503"} 1' in lines
    assert "# outbox unavailable" in lines


def test_metrics_before_the_first_request_do_not_build_the_runtime(relay: Relay) -> None:
    lines = metric_lines(relay)
    assert "# TYPE xdeps_relay_requests_total counter" in lines
    assert not any(line.startswith("xdeps_outbox_items") for line in lines)
    assert relay.loads == 0


# --- secrets stay secret -------------------------------------------------------------------------


def test_no_secret_ever_appears_in_a_response_or_a_log(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    responses = [
        post(relay, FAILED),
        post(relay, FAILED, secret=OTHER_SECRET),
        post(relay, FAILED, timestamp=time.time() - 3600),
        post(relay, FAILED, source="unset"),
        post(relay, FAILED, source="broken"),
        post(relay, b"{not json"),
        post(relay, {"type": "dag_run.failed"}),
        relay.client.post("/events/ci", **bearer(FAILED, **{"webhook-id": "ci-1"})),
        relay.client.post("/events/ci", **bearer(FAILED, token=SECRET)),
        relay.client.post(
            "/events/ci",
            content=body_of(FAILED),
            headers={"authorization": BEARER, "content-type": "application/json"},
        ),
        relay.client.post(
            "/events/ci",
            content=body_of(FAILED),
            headers={"authorization": f"Token {BEARER}", "content-type": "application/json"},
        ),
        relay.client.get("/health"),
        relay.client.get("/metrics"),
    ]
    assert {r.status_code for r in responses} >= {202, 401, 400, 422, 503}
    relay.outbox.close()
    responses.append(post(relay, FAILED, msg_id="msg_late"))
    assert responses[-1].status_code == 503
    keys = [
        base64.b64decode(SECRET.removeprefix("whsec_")),
        base64.b64decode(OTHER_SECRET.removeprefix("whsec_")),
    ]
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert any(r.levelno >= logging.ERROR for r in caplog.records)  # the 503s were logged
    for text in [r.text for r in responses] + [logged]:
        for secret in SECRETS:
            assert secret not in text
        for key in keys:
            assert key.hex() not in text
            assert base64.b64encode(key).decode() not in text

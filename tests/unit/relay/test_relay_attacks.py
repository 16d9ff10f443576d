"""Regressions of issue 9 on the relay: what an attacker, a locked outbox or a bad config did.

Each test here failed before its fix (checked against the unfixed code): one source swallowing
another's events (3), the outbox opened on the event loop and a locked outbox answered 500 (4),
``relay check`` passing configs that fail on every event (6), repeated webhook headers unseen
(7), and details disclosed to unauthenticated callers (11). The tests use only what the unfixed
code already had (no new names imported), so that they fail for the behaviour, not an import.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning

from astro_xdeps.cli.main import main
from astro_xdeps.exceptions import ConfigError
from astro_xdeps.listeners.states import state_event
from astro_xdeps.outbox import Outbox, OutboxError
from astro_xdeps.relay.app import RelayRuntime, create_app
from astro_xdeps.relay.config import parse_config
from astro_xdeps.relay.engine import RelayEngine
from astro_xdeps.relay.rules import RelayConfig, plan_actions
from astro_xdeps.relay.signing import generate_secret, webhook_headers
from astro_xdeps.state_events import StateEvent

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

SECRET = generate_secret()
BEARER = "bearer-secret-Zx9y8w7v6u5t4s3r"
WEBHOOK_ENV = "XDEPS_TEST_ATTACK_WEBHOOK_SECRET"
BEARER_ENV = "XDEPS_TEST_ATTACK_BEARER_SECRET"
UNSET_ENV = "XDEPS_TEST_ATTACK_UNSET_SECRET"
METRICS_ENV = "AIRFLOW__ASTRO_XDEPS__RELAY_METRICS_TOKEN"
METRICS_TOKEN = "metrics-token-0123456789abcdef"

CONFIG: RelayConfig = parse_config(
    {
        "sources": [
            {"name": "alerts", "secrets_env": [WEBHOOK_ENV]},
            {"name": "ci", "auth": "bearer", "secrets_env": [BEARER_ENV]},
            {"name": "unset", "secrets_env": [UNSET_ENV]},
        ],
        "rules": [
            {
                "name": "recover-orders",
                "when": {"type": "dag_run.failed", "dag_id": "load_orders*"},
                "then": [{"trigger_dag": {"target": "downstream-secret-target", "dag_id": "recover_orders"}}],
            }
        ],
    }
)
FAILED = {"type": "dag_run.failed", "dag_id": "load_orders", "run_id": "scheduled__1"}


@pytest.fixture(autouse=True)
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WEBHOOK_ENV, SECRET)
    monkeypatch.setenv(BEARER_ENV, BEARER)
    monkeypatch.delenv(UNSET_ENV, raising=False)
    monkeypatch.delenv(METRICS_ENV, raising=False)


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox.sqlite(tmp_path / "outbox.db") as box:
        yield box


def mounted(outbox: Outbox) -> TestClient:
    """The relay as the api-server mounts it: ``create_app(load)`` with its defaults."""
    return TestClient(create_app(lambda: RelayRuntime(RelayEngine(CONFIG, outbox))))


def signed(payload: Any, msg_id: str = "msg_1", **extra_headers: str) -> dict[str, Any]:
    body = json.dumps(payload).encode()
    headers = webhook_headers(body, [SECRET], msg_id=msg_id, timestamp=time.time())
    return {"content": body, "headers": {**headers, "content-type": "application/json", **extra_headers}}


def bearer(payload: Any, **extra_headers: str) -> dict[str, Any]:
    return {
        "content": json.dumps(payload).encode(),
        "headers": {"authorization": f"Bearer {BEARER}", "content-type": "application/json", **extra_headers},
    }


# --- 3: one source cannot swallow another source's events ----------------------------------------


def test_a_bearer_source_cannot_preempt_a_signed_event_of_another_source(outbox: Outbox) -> None:
    client = mounted(outbox)
    squatter = client.post("/events/ci", **bearer(FAILED, **{"webhook-id": "msg_X"}))
    assert (squatter.status_code, squatter.json()["new_actions"]) == (202, 1)
    genuine = client.post("/events/alerts", **signed(FAILED, msg_id="msg_X"))
    assert genuine.status_code == 202
    assert genuine.json()["new_actions"] == 1  # before: 0, the signed event was a no-op
    assert len({i.payload["dag_run_id"] for i in outbox.list_items()}) == 2
    # A retry of the genuine event is still one event.
    assert client.post("/events/alerts", **signed(FAILED, msg_id="msg_X")).json()["new_actions"] == 0


def test_a_payload_id_cannot_preempt_the_scheduler_listeners_event(outbox: Outbox) -> None:
    change = state_event(
        "dag_run.failed",
        dag_id="load_orders",
        run_id="scheduled__1",
        deployment="upstream",
        occurred_at=datetime(2026, 1, 31, tzinfo=timezone.utc),
    )
    client = mounted(outbox)
    squatter = client.post("/events/ci", **bearer({**FAILED, "id": change.id}))  # the id is predictable
    assert (squatter.status_code, squatter.json()["new_actions"]) == (202, 1)
    result = RelayEngine(CONFIG, outbox).ingest(change)
    assert result.new_actions == 1  # before: 0, the scheduler's own event was swallowed


def test_the_same_id_from_two_sources_fires_a_many_to_one_rule_separately(outbox: Outbox) -> None:
    rule = parse_config(
        {
            "rules": [
                {
                    "name": "both",
                    "when_all": [{"dag_id": "a"}, {"dag_id": "b"}],
                    "within": "1h",
                    "then": [{"trigger_dag": {"target": "t", "dag_id": "d"}}],
                }
            ]
        }
    )
    now = datetime.now(timezone.utc)

    def ev(dag: str, source: str) -> StateEvent:
        return StateEvent(id="same", type="dag_run.success", dag_id=dag, occurred_at=now, source=source)

    engine = RelayEngine(rule, outbox)
    assert engine.ingest(ev("a", "one")).new_actions == 0
    assert engine.ingest(ev("b", "one")).new_actions == 1
    # Another source's "same" is not a repeat of the first firing.
    assert engine.ingest(ev("a", "two")).new_actions == 0
    assert engine.ingest(ev("b", "two")).new_actions == 1


# --- 4: the outbox is opened off the event loop; unavailable is 503 + Retry-After ----------------


def test_a_slow_outbox_open_blocks_neither_metrics_nor_health(outbox: Outbox) -> None:
    opening, release = threading.Event(), threading.Event()

    def slow_load() -> RelayRuntime:
        opening.set()
        release.wait(timeout=6)  # an outbox waiting on a lock
        return RelayRuntime(RelayEngine(CONFIG, outbox))

    with TestClient(create_app(slow_load)) as client:  # one event loop for every request
        answers: list[int] = []
        poster = threading.Thread(
            target=lambda: answers.append(client.post("/events/alerts", **signed(FAILED)).status_code)
        )
        poster.start()
        try:
            assert opening.wait(timeout=10)
            started = time.monotonic()
            metrics = client.get("/metrics")
            health = client.get("/health")
            elapsed = time.monotonic() - started
        finally:
            release.set()
            poster.join(timeout=30)
    assert elapsed < 3.0, f"/metrics and /health waited {elapsed:.1f} s for the outbox to open"
    assert metrics.status_code in (200, 401)
    assert health.status_code == 503  # not ready yet, and says so at once
    assert answers == [202]  # the event waited for the open, then was recorded


def test_many_events_waiting_for_a_slow_open_do_not_starve_metrics(outbox: Outbox) -> None:
    """More waiting event requests than the thread pool has threads (40): /metrics still answers."""
    opening, release = threading.Event(), threading.Event()

    def slow_load() -> RelayRuntime:
        opening.set()
        release.wait(timeout=8)
        return RelayRuntime(RelayEngine(CONFIG, outbox))

    with TestClient(create_app(slow_load)) as client:
        answers: list[int] = []
        posters = [
            threading.Thread(
                target=lambda i=i: answers.append(
                    client.post("/events/alerts", **signed(FAILED, msg_id=f"msg_{i}")).status_code
                )
            )
            for i in range(45)
        ]
        for poster in posters:
            poster.start()
        try:
            assert opening.wait(timeout=10)
            time.sleep(0.5)  # let every poster reach the relay
            started = time.monotonic()
            metrics = client.get("/metrics")
            elapsed = time.monotonic() - started
        finally:
            release.set()
            for poster in posters:
                poster.join(timeout=60)
    assert elapsed < 3.0, f"/metrics waited {elapsed:.1f} s behind event requests"
    assert metrics.status_code == 401  # answered (closed to anonymous callers when mounted)
    assert sorted(set(answers)) == [202] and len(answers) == 45
    assert len(outbox.list_items()) == 45


@pytest.mark.parametrize(
    "failure",
    [
        OutboxError("The outbox sqlite:////secret/path/xdeps_outbox.db could not open: database is locked"),
        sqlite3.OperationalError("database is locked"),
        sqlite3.DatabaseError("file is not a database"),
    ],
    ids=["outbox-error", "raw-locked", "raw-corrupt"],
)
def test_an_outbox_that_cannot_open_is_503_with_retry_after(outbox: Outbox, failure: Exception) -> None:
    calls: list[int] = []

    def load() -> RelayRuntime:
        calls.append(1)
        if len(calls) == 1:
            raise failure
        return RelayRuntime(RelayEngine(CONFIG, outbox))

    client = TestClient(create_app(load), raise_server_exceptions=False)
    first = client.post("/events/alerts", **signed(FAILED))
    assert first.status_code == 503  # before: 500 "relay misconfigured", or a bare 500
    assert first.headers["retry-after"].isdigit()
    assert "secret/path" not in first.text
    assert client.post("/events/alerts", **signed(FAILED)).status_code == 202  # once it opens


def test_a_raw_database_error_while_recording_is_503_not_500(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def corrupt(items: Any) -> Any:
        raise sqlite3.DatabaseError("database disk image is malformed")

    client = TestClient(
        create_app(lambda: RelayRuntime(RelayEngine(CONFIG, outbox))), raise_server_exceptions=False
    )
    assert client.get("/health").status_code == 200  # built and working
    monkeypatch.setattr(outbox, "enqueue", corrupt)
    response = client.post("/events/alerts", **signed(FAILED))
    assert response.status_code == 503  # before: a bare 500
    assert response.headers["retry-after"].isdigit()
    assert "malformed" not in response.text
    assert "malformed" in caplog.text


def test_a_really_locked_sqlite_outbox_is_503_then_202_once_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from astro_xdeps.outbox import db

    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_SECONDS", 0.5)
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process mid-write on a fresh file
    client = TestClient(
        create_app(lambda: RelayRuntime(RelayEngine(CONFIG, Outbox.sqlite(path)))),
        raise_server_exceptions=False,
    )
    try:
        locked = client.post("/events/alerts", **signed(FAILED))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert locked.status_code == 503
    assert locked.headers["retry-after"].isdigit()
    assert str(tmp_path) not in locked.text
    assert client.post("/events/alerts", **signed(FAILED)).status_code == 202


# --- 6: relay check refuses configs that would fail on every matching event ----------------------

RULES = """\
sources:
  - name: alerts
    secrets_env: [XDEPS_RELAY_SECRET]
rules:
  - name: r
    when: {type: dag_run.failed}
    then:
      - ACTION
"""


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ('trigger_dag: {target: t, dag_id: d, note: "{message:{run_id}}"}', "format spec"),
        ('trigger_dag: {target: t, dag_id: d, conf: {x: "{dag_id!r}"}}', "format spec or conversion"),
        ("trigger_dag: {target: t, dag_id: d, conf: {day: 2026-01-31}}", "quote it"),
        ("trigger_dag: {target: t, dag_id: d, conf: {at: 2026-01-31 12:00:00}}", "quote it"),
        ('trigger_dag: {target: t, dag_id: d, note: "' + "{message}" * 6 + '"}', "can render up to"),
        ('asset_event: {target: t, uri: "s3://b/' + "x" * 1600 + '"}', "at most 1500 characters"),
        ('trigger_dag: {target: "' + "t" * 300 + '", dag_id: d}', "at most 250 characters"),
    ],
    ids=["nested-spec", "conversion", "yaml-date", "yaml-datetime", "huge-template", "uri", "target"],
)
def test_check_refuses_a_config_that_would_fail_on_every_event(
    tmp_path: Path, capsys: pytest.CaptureFixture, action: str, expected: str
) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text(RULES.replace("ACTION", action))
    assert main(["relay", "check", str(path)]) == 1  # before: 0 ("OK")
    assert expected in capsys.readouterr().err


def test_a_nested_format_spec_cannot_reach_the_renderer() -> None:
    with pytest.raises(ConfigError, match="format spec"):
        parse_config(
            {
                "rules": [
                    {
                        "name": "r",
                        "when": {"type": "dag_run.failed"},
                        "then": [
                            {"trigger_dag": {"target": "t", "dag_id": "d", "note": "{message:{run_id}}"}}
                        ],
                    }
                ]
            }
        )


def test_a_long_asset_uri_that_airflow_allows_is_enqueued(outbox: Outbox) -> None:
    uri = "s3://bucket/" + "p" * 1400  # Airflow takes 1500; the key "<event>:<uri>" once passed 500
    config = parse_config(
        {
            "rules": [
                {
                    "name": "r",
                    "when": {"type": "dag_run.failed"},
                    "then": [{"asset_event": {"target": "t", "uri": uri}}],
                }
            ]
        }
    )
    event = StateEvent(id="e1", type="dag_run.failed", dag_id="d", occurred_at=datetime.now(timezone.utc))
    engine = RelayEngine(config, outbox)
    assert engine.ingest(event).new_actions == 1  # before: ValueError at enqueue (a 500)
    assert engine.ingest(event).new_actions == 0  # and idempotent
    [item] = outbox.list_items()
    assert item.payload["uri"] == uri


def test_a_rendered_note_fits_airflows_note_column() -> None:
    config = parse_config(
        {
            "rules": [
                {
                    "name": "r",
                    "when": {"type": "dag_run.failed"},
                    "then": [{"trigger_dag": {"target": "t", "dag_id": "d", "note": "{message}"}}],
                }
            ]
        }
    )
    event = StateEvent(
        id="e", type="dag_run.failed", dag_id="d", occurred_at=datetime.now(timezone.utc), message="m" * 2000
    )
    [planned] = plan_actions(config.rules[0], [event])
    assert len(planned.payload["note"]) <= 1000


# --- 7: a repeated webhook-id / webhook-timestamp is seen ----------------------------------------


@pytest.mark.parametrize("name", ["webhook-id", "webhook-timestamp"])
def test_a_repeated_signed_header_with_another_value_is_refused(outbox: Outbox, name: str) -> None:
    kw = signed(FAILED, msg_id="msg_signed")
    headers = list(kw.pop("headers").items())
    headers.append((name, "msg_other" if name == "webhook-id" else str(int(time.time()) - 10)))
    response = mounted(outbox).post("/events/alerts", headers=headers, **kw)
    assert response.status_code == 401  # before: 202, the second value never reached signing.py
    assert "more than once" in response.json()["detail"]
    assert outbox.list_items() == []


def test_a_repeated_webhook_id_on_a_bearer_source_is_refused(outbox: Outbox) -> None:
    kw = bearer(FAILED)
    headers = [*kw.pop("headers").items(), ("webhook-id", "ci-1"), ("webhook-id", "ci-2")]
    response = mounted(outbox).post("/events/ci", headers=headers, **kw)
    assert response.status_code == 401
    assert "more than once" in response.json()["detail"]
    assert outbox.list_items() == []


def test_the_same_header_value_twice_is_fine(outbox: Outbox) -> None:
    kw = signed(FAILED, msg_id="msg_same")
    headers = [*kw.pop("headers").items(), ("webhook-id", "msg_same")]
    assert mounted(outbox).post("/events/alerts", headers=headers, **kw).status_code == 202


# --- 11: unauthenticated callers learn nothing about the configuration ---------------------------


def test_a_404_does_not_list_the_configured_sources(outbox: Outbox) -> None:
    response = mounted(outbox).post("/events/nope", **signed(FAILED))
    assert response.status_code == 404
    for name in ("alerts", "ci", "unset"):
        assert name not in response.text


def test_a_source_without_its_secret_names_no_env_var_before_auth(
    outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    response = mounted(outbox).post(
        "/events/unset", content=b"{}", headers={"content-type": "application/json"}
    )
    assert response.status_code == 503  # before: 500 naming the env var
    assert response.headers["retry-after"].isdigit()
    assert UNSET_ENV not in response.text
    assert UNSET_ENV in caplog.text  # the operator still learns what to fix


def test_mounted_health_says_only_ok_to_anyone(outbox: Outbox) -> None:
    client = mounted(outbox)
    response = client.get("/health")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    outbox.close()
    down = client.get("/health")
    assert (down.status_code, down.json()) == (503, {"status": "unhealthy"})  # no path, no reason


def test_mounted_metrics_need_the_token(outbox: Outbox, monkeypatch: pytest.MonkeyPatch) -> None:
    client = mounted(outbox)
    client.post("/events/alerts", **signed(FAILED))
    anonymous = client.get("/metrics")
    assert anonymous.status_code == 401  # before: 200 with targets and rule names
    assert "downstream-secret-target" not in anonymous.text
    assert "recover-orders" not in anonymous.text
    monkeypatch.setenv(METRICS_ENV, METRICS_TOKEN)
    assert (
        client.get("/metrics", headers={"authorization": "Bearer wrong-token-0123456789"}).status_code == 401
    )
    scraped = client.get("/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"})
    assert scraped.status_code == 200
    assert 'xdeps_relay_actions_total{rule="recover-orders"} 1' in scraped.text
    detailed = client.get("/health", headers={"authorization": f"Bearer {METRICS_TOKEN}"})
    assert detailed.json() == {"status": "ok", "sources": ["alerts", "ci", "unset"], "rules": 1}


def _serve(open_monitoring: bool) -> Callable[[Outbox], TestClient]:
    return lambda box: TestClient(
        create_app(lambda: RelayRuntime(RelayEngine(CONFIG, box)), open_monitoring=open_monitoring)
    )


def test_a_standalone_relay_on_loopback_keeps_metrics_open_until_a_token_is_set(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _serve(open_monitoring=True)(outbox)
    assert client.get("/metrics").status_code == 200
    assert "sources" in client.get("/health").json()
    monkeypatch.setenv(METRICS_ENV, METRICS_TOKEN)
    assert client.get("/metrics").status_code == 401  # a configured token always applies


def test_relay_serve_opens_monitoring_only_on_loopback() -> None:
    from astro_xdeps.cli.relay import _is_loopback

    assert [
        _is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "10.0.0.5", "relay.example")
    ] == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]

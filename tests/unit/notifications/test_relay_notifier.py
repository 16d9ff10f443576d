"""RelayNotifier: builds the generic event from a callback context and posts it signed."""

from __future__ import annotations

import base64
import json

import pytest
import responses

from astro_xdeps.notifications.relay import RelayNotifier, event_from_context
from astro_xdeps.relay.payloads import parse_event
from astro_xdeps.relay.signing import verify_standard_webhook, webhook_headers
from astro_xdeps.version_compat import AIRFLOW_V_3_1_PLUS

SECRET = "whsec_" + base64.b64encode(b"notifier-test-secret-of-32-bytes").decode()
URL = "http://relay.test/xdeps/relay/events/callbacks"


class _Run:
    dag_id = "load_orders"
    run_id = "manual__1"
    state = "failed"


class _TI:
    dag_id = "load_orders"
    task_id = "extract"
    try_number = 2
    state = "failed"


def test_dag_failure_context_becomes_a_valid_generic_event():
    event = event_from_context({"dag_run": _Run()}, deployment="prod")
    parsed = parse_event(event)
    assert (parsed.type, parsed.dag_id, parsed.run_id, parsed.deployment) == (
        "dag_run.failed",
        "load_orders",
        "manual__1",
        "prod",
    )


def test_task_failure_context_carries_task_and_try():
    event = event_from_context(
        {"dag_run": _Run(), "ti": _TI(), "task": object(), "exception": ValueError("boom")}
    )
    parsed = parse_event(event)
    assert parsed.type == "task_instance.failed"
    assert parsed.task_id == "extract"
    assert parsed.attributes["try_number"] == 2
    assert parsed.message == "boom"


def test_event_id_is_stable_for_the_same_state_change():
    a = event_from_context({"dag_run": _Run()})
    b = event_from_context({"dag_run": _Run()})
    assert a["id"] == b["id"]
    assert a["id"] != event_from_context({"dag_run": _Run()}, event_type="dag_run.success")["id"]


@responses.activate
def test_notify_posts_a_signature_the_relay_accepts(monkeypatch):
    monkeypatch.setenv("RELAY_SECRET", SECRET)
    seen = []

    def check(request):
        webhook_id = verify_standard_webhook(dict(request.headers), request.body, [SECRET])
        seen.append((webhook_id, json.loads(request.body)))
        return (202, {}, "{}")

    responses.add_callback(responses.POST, URL, callback=check)
    RelayNotifier(url=URL, secret_env="RELAY_SECRET").notify({"dag_run": _Run()})
    assert len(seen) == 1
    webhook_id, body = seen[0]
    assert webhook_id == body["id"]
    assert body["type"] == "dag_run.failed"


@responses.activate
def test_notify_retries_5xx_then_gives_up_without_raising(monkeypatch, caplog, sleeps):
    monkeypatch.setenv("RELAY_SECRET", SECRET)
    responses.add(responses.POST, URL, status=503)
    RelayNotifier(url=URL, secret_env="RELAY_SECRET", retries=2).notify({"dag_run": _Run()})
    assert len(responses.calls) == 3
    assert "gave up" in caplog.text
    assert SECRET not in caplog.text


@responses.activate
def test_notify_does_not_retry_a_refusal(monkeypatch):
    monkeypatch.setenv("RELAY_SECRET", SECRET)
    responses.add(responses.POST, URL, status=401, json={"error": "no signature matched"})
    RelayNotifier(url=URL, secret_env="RELAY_SECRET").notify({"dag_run": _Run()})
    assert len(responses.calls) == 1


@pytest.mark.parametrize("env", [None, ""])
def test_missing_secret_is_logged_not_raised(monkeypatch, caplog, env):
    monkeypatch.delenv("RELAY_SECRET", raising=False)
    if env is not None:
        monkeypatch.setenv("RELAY_SECRET", env)
    RelayNotifier(url=URL, secret_env="RELAY_SECRET").notify({"dag_run": _Run()})
    assert "secret_env" in caplog.text


def test_deadline_context_with_a_json_dag_run_becomes_a_late_event():
    context = {
        "dag_run": {"dag_id": "load_orders", "dag_run_id": "scheduled__1", "state": "running"},
        "deadline": {"id": "d1", "deadline_time": "2026-11-22T06:00:00+00:00"},
    }
    parsed = parse_event(event_from_context(context, deployment="prod"))
    assert (parsed.type, parsed.dag_id, parsed.run_id) == ("dag_run.late", "load_orders", "scheduled__1")


@pytest.mark.skipif(
    not AIRFLOW_V_3_1_PLUS, reason="deadline alerts (and awaitable notifiers) are Airflow 3.1+"
)
@responses.activate
def test_awaiting_the_notifier_as_a_deadline_callback_posts_the_event(monkeypatch):
    import asyncio

    monkeypatch.setenv("RELAY_SECRET", SECRET)
    responses.add(responses.POST, URL, status=202)
    context = {"dag_run": {"dag_id": "load_orders", "dag_run_id": "scheduled__1"}, "deadline": {"id": "d1"}}

    async def run():
        await RelayNotifier(url=URL, secret_env="RELAY_SECRET", context=context)

    asyncio.run(run())
    assert len(responses.calls) == 1
    assert json.loads(responses.calls[0].request.body)["type"] == "dag_run.late"


# -- issue 9, defect 10: a notifier never fails a task, and sends through the package's client ----


@pytest.mark.parametrize("secret", ["whsec_not*base64!", "whsec_", "not-a-whsec-secret"])
@responses.activate
def test_a_secret_that_cannot_sign_is_logged_not_raised(monkeypatch, caplog, secret):
    """Regression: the signing headers were built outside notify's try, so the task failed."""
    monkeypatch.setenv("RELAY_SECRET", secret)
    RelayNotifier(url=URL, secret_env="RELAY_SECRET").notify({"dag_run": _Run()})
    assert len(responses.calls) == 0
    assert "RelayNotifier: not sent" in caplog.text


@responses.activate
def test_notify_waits_what_retry_after_asks_for(monkeypatch, sleeps):
    """Regression: the notifier's own loop slept 1, 2, 4 s whatever the relay asked."""
    monkeypatch.setenv("RELAY_SECRET", SECRET)
    responses.add(responses.POST, URL, status=429, headers={"Retry-After": "7"})
    responses.add(responses.POST, URL, status=202)
    RelayNotifier(url=URL, secret_env="RELAY_SECRET").notify({"dag_run": _Run()})
    assert len(responses.calls) == 2
    assert sleeps == [7.0]


@responses.activate
def test_each_retry_is_signed_again_with_the_same_webhook_id(monkeypatch, sleeps):
    monkeypatch.setenv("RELAY_SECRET", SECRET)
    times = iter([1_799_999_999.0, 1_800_000_000.0, 1_800_000_030.0])  # check, attempt 1, attempt 2

    def signed_at_the_next_time(body, secrets, *, msg_id):
        return webhook_headers(body, secrets, msg_id=msg_id, timestamp=next(times))

    monkeypatch.setattr("astro_xdeps.notifications.relay.webhook_headers", signed_at_the_next_time)
    responses.add(responses.POST, URL, status=503)
    responses.add(responses.POST, URL, status=202)
    RelayNotifier(url=URL, secret_env="RELAY_SECRET").notify({"dag_run": _Run()})
    first, second = (c.request.headers for c in responses.calls)
    assert first["webhook-id"] == second["webhook-id"]
    assert (first["webhook-timestamp"], second["webhook-timestamp"]) == ("1800000000", "1800000030")


@responses.activate
def test_a_bearer_secret_echoed_by_the_relay_is_scrubbed_from_the_log(monkeypatch, caplog):
    bearer = "bearer-SECRET-0123456789"
    monkeypatch.setattr(
        "astro_xdeps.notifications.relay.BaseHook.get_connection",
        lambda conn_id: _Conn(host=URL, password=bearer, extra_dejson={"auth": "bearer"}),
    )
    responses.add(responses.POST, URL, status=400, json={"detail": f"bad Authorization: Bearer {bearer}"})
    RelayNotifier().notify({"dag_run": _Run()})
    assert responses.calls[0].request.headers["Authorization"] == f"Bearer {bearer}"
    assert "refused" in caplog.text
    assert bearer not in caplog.text


def test_a_relay_url_with_credentials_is_refused_without_echoing_them(monkeypatch, caplog):
    monkeypatch.setenv("RELAY_SECRET", SECRET)
    RelayNotifier(url="https://admin:hunter2-secret@relay.test/events/x", secret_env="RELAY_SECRET").notify(
        {"dag_run": _Run()}
    )
    assert "contains credentials" in caplog.text
    assert "hunter2-secret" not in caplog.text


class _Conn:
    def __init__(self, host, password, extra_dejson):
        self.host, self.password, self.extra_dejson = host, password, extra_dejson

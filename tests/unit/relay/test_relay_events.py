"""Parsing relay payloads (generic events, Astro alerts) into StateEvent, and strict JSON bodies."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from astro_xdeps.exceptions import PayloadError, XdepsError
from astro_xdeps.relay.astro_alerts import ASTRO_ALERT_TYPES
from astro_xdeps.relay.body import parse_json_body
from astro_xdeps.relay.payloads import parse_event
from astro_xdeps.state_events import EVENT_TYPES, MAX_MESSAGE_CHARS, StateEvent

NOW = datetime(2026, 1, 31, 12, 0, 0, tzinfo=timezone.utc)

GENERIC = {
    "type": "task_instance.failed",
    "dag_id": "load_orders",
    "run_id": "scheduled__2026-01-31T00:00:00+00:00",
    "task_id": "extract.orders",
    "deployment": "prod-eu",
    "occurred_at": "2026-01-31T13:30:00.250+01:30",
    "id": "evt-123",
    "message": "Task failed:\nconnection reset",
    "attributes": {"try_number": 2, "map_index": -1, "hostname": "worker-1", "retry": True, "x": None},
}

# Astronomer's documented example of the conf an Astro alert's "DAG Trigger" channel sends
# (github.com/astronomer/docs, astro/alerts.md, "DAG Trigger" tab).
ASTRO_EXAMPLE = {
    "dagName": "fail_dag",
    "alertType": "PIPELINE_FAILURE",
    "alertId": "d75e7517-88cc-4bab-b40f-660dd79df216",
    "message": (
        "[Astro Alerts] Pipeline failure detected on DAG fail_dag. \\nStart time: 2023-11-17 17:32:54 UTC. "
        "\\nFailed at: 2023-11-17 17:40:10 UTC. \\nAlert notification time: 2023-11-17 17:40:10 UTC. "
        "\\nClick link to investigate in Astro UI: https://cloud.astronomer.io/clkya6zgv000401k8zafabcde/dags/"
        'clncyz42l6957401bvfuxn8zyxw/fail_dag/c6fbe201-a3f1-39ad-9c5c-817cbf99d123?utm_source=alert"\\n'
    ),
}


def ok(**fields: Any) -> dict[str, Any]:
    """A valid generic payload with some fields changed."""
    return {"type": "dag_run.success", "dag_id": "d", **fields}


def parse(payload: Any, **kw: Any) -> StateEvent:
    kw.setdefault("now", NOW)
    return parse_event(payload, **kw)


def refuse(payload: Any, **kw: Any) -> str:
    kw.setdefault("now", NOW)
    with pytest.raises(PayloadError) as info:
        parse_event(payload, **kw)
    assert info.value.reason == str(info.value)
    return str(info.value)


# --- the generic event ---------------------------------------------------------------------------


def test_generic_event_with_every_field() -> None:
    event = parse(GENERIC, webhook_id="msg_ignored", default_deployment="ignored")
    assert event == StateEvent(
        id="evt-123",
        type="task_instance.failed",
        dag_id="load_orders",
        run_id="scheduled__2026-01-31T00:00:00+00:00",
        task_id="extract.orders",
        deployment="prod-eu",
        occurred_at=datetime(2026, 1, 31, 12, 0, 0, 250000, tzinfo=timezone.utc),
        message="Task failed:\nconnection reset",
        attributes={"try_number": 2, "map_index": -1, "hostname": "worker-1", "retry": True, "x": None},
    )
    assert event.occurred_at.tzinfo is timezone.utc


def test_minimal_generic_event_uses_the_fallbacks() -> None:
    event = parse({"type": "dag_run.success", "dag_id": "d"}, webhook_id="msg_1", default_deployment="up")
    assert (event.id, event.deployment, event.occurred_at) == ("msg_1", "up", NOW)
    assert (event.run_id, event.task_id, event.message, event.attributes) == (None, None, None, {})


def test_payload_id_wins_over_the_webhook_id() -> None:
    assert parse({"type": "dag_run.success", "dag_id": "d", "id": "mine"}, webhook_id="msg_1").id == "mine"


def test_now_defaults_to_the_clock() -> None:
    before = datetime.now(timezone.utc)
    event = parse_event({"type": "dag_run.running", "dag_id": "d"}, webhook_id="m")
    assert before <= event.occurred_at <= datetime.now(timezone.utc)


def test_now_is_normalised_to_utc_and_must_be_aware() -> None:
    plus_two = timezone(timedelta(hours=2))
    event = parse({"type": "dag_run.running", "dag_id": "d"}, webhook_id="m", now=NOW.astimezone(plus_two))
    assert event.occurred_at == NOW and event.occurred_at.tzinfo is timezone.utc
    with pytest.raises(ValueError, match="timezone-aware"):
        parse({"type": "dag_run.running", "dag_id": "d"}, webhook_id="m", now=NOW.replace(tzinfo=None))


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_event_type_is_accepted(event_type: str) -> None:
    payload = {"type": event_type, "dag_id": "d", "task_id": "t"}
    assert parse(payload, webhook_id="m").type == event_type


@pytest.mark.parametrize(
    "occurred_at", ["2026-01-31T12:00:00Z", "2026-01-31T12:00:00z", "2026-01-31T07:00:00-05:00"]
)
def test_occurred_at_accepts_z_and_offsets(occurred_at: str) -> None:
    event = parse({"type": "dag_run.success", "dag_id": "d", "occurred_at": occurred_at}, webhook_id="m")
    assert event.occurred_at == NOW


def test_unknown_fields_are_ignored_and_not_stored() -> None:
    payload = {"type": "dag_run.success", "dag_id": "d", "future_field": {"big": ["x"] * 1000}, "note": 1}
    event = parse(payload, webhook_id="m")
    assert event.attributes == {}
    assert "future_field" not in json.dumps(event.to_dict())


def test_null_optional_fields_mean_absent() -> None:
    payload = dict.fromkeys(("run_id", "task_id", "deployment", "occurred_at", "id", "message", "attributes"))
    event = parse(ok(**payload), webhook_id="m", default_deployment="up")
    assert (event.id, event.deployment, event.occurred_at, event.attributes) == ("m", "up", NOW, {})


def test_an_id_is_derived_from_the_content_when_occurred_at_is_sent() -> None:
    payload = {"type": "dag_run.failed", "dag_id": "d", "run_id": "r", "occurred_at": "2026-01-31T12:00:00Z"}
    first = parse(payload)
    assert first.id.startswith("gen-") and first.id == parse(dict(payload), now=NOW + timedelta(hours=1)).id
    # The same instant written another way is the same event.
    assert parse({**payload, "occurred_at": "2026-01-31T13:00:00+01:00"}).id == first.id
    # A later occurrence, another run, another deployment or try: another event.
    others = [
        {**payload, "occurred_at": "2026-01-31T12:00:01Z"},
        {**payload, "run_id": "r2"},
        {**payload, "deployment": "other"},
        {**payload, "attributes": {"try_number": 2}},
    ]
    assert len({first.id, *(parse(p).id for p in others)}) == 1 + len(others)
    # The message is prose: a sender that rewords it on a retry still sends the same event.
    assert parse({**payload, "message": "retry #2"}).id == first.id


def test_the_default_deployment_is_part_of_a_derived_id() -> None:
    payload = {"type": "dag_run.failed", "dag_id": "d", "occurred_at": "2026-01-31T12:00:00Z"}
    assert parse(payload, default_deployment="a").id != parse(payload, default_deployment="b").id


def test_without_id_webhook_id_or_occurred_at_the_event_is_refused() -> None:
    message = refuse({"type": "dag_run.failed", "dag_id": "d", "run_id": "r"})
    assert message.startswith("id: missing; send an 'id'")
    assert "webhook-id" in message and "occurred_at" in message


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ([], "expected a JSON object, got an array"),
        ("dag_run.success", "expected a JSON object, got 'dag_run.success'"),
        (3, "expected a JSON object, got a number"),
        (None, "expected a JSON object, got null"),
        (True, "expected a JSON object, got a boolean"),
        ({}, "type: missing; expected a generic event with 'type'"),
        ({"dag_id": "d"}, "type: missing"),
        ({"type": None, "dag_id": "d"}, "type: missing; expected a string"),
        ({"type": 1, "dag_id": "d"}, "type: expected a string, got a number"),
        ({"type": "dag_run.succeeded", "dag_id": "d"}, "type: 'dag_run.succeeded' is not an event type"),
        ({"type": "DAG_RUN.SUCCESS", "dag_id": "d"}, "expected one of dag_run.success, dag_run.failed"),
        ({"type": "dag_run.success"}, "dag_id: missing; expected a string"),
        ({"type": "dag_run.success", "dag_id": ["d"]}, "dag_id: expected a string, got an array"),
        ({"type": "dag_run.success", "dag_id": ""}, "dag_id: must not be empty"),
        ({"type": "dag_run.success", "dag_id": "my dag"}, "dag_id: 'my dag' is not a valid Airflow DAG id"),
        ({"type": "dag_run.success", "dag_id": "d\n"}, "dag_id: contains control characters"),
        ({"type": "dag_run.success", "dag_id": "d" * 251}, "dag_id: 251 characters; at most 250"),
        ({"type": "dag_run.success", "dag_id": "\ud800"}, "dag_id: not valid Unicode text"),
        ({"type": "task_instance.failed", "dag_id": "d"}, "task_id: missing; task_instance.failed events"),
        (ok(task_id="a/b"), "task_id: 'a/b' is not a valid Airflow"),
        (ok(task_id=5), "task_id: expected a string, got a number"),
        (ok(run_id=""), "run_id: must not be empty"),
        (ok(run_id="r" * 251), "run_id: 251 characters"),
        (ok(run_id="a\tb"), "run_id: contains control characters"),
        (ok(run_id={}), "run_id: expected a string, got an object"),
        (ok(deployment=1.5), "deployment: expected a string"),
        (ok(deployment="x" * 251), "deployment: 251 characters"),
        (ok(id="x" * 251), "id: 251 characters; at most 250"),
        (ok(id=7), "id: expected a string, got a number"),
        (ok(message="m" * 2001), "message: 2001 characters; at most 2000"),
        (ok(message=False), "message: expected a string, got a boolean"),
        (ok(occurred_at="yesterday"), "occurred_at: 'yesterday' is not an ISO"),
        (ok(occurred_at="2026-01-31T12:00:00"), "has no UTC offset"),
        (ok(occurred_at="2026-01-31"), "has no UTC offset"),
        (ok(occurred_at=1769860800), "occurred_at: expected an ISO-8601"),
        (ok(occurred_at=""), "occurred_at: expected an ISO-8601"),
        (ok(occurred_at="2" * 65), "occurred_at: expected an ISO-8601"),
        (ok(occurred_at="0001-01-01T00:00:00+01:00"), "out of range"),
        (ok(attributes=[]), "attributes: expected an object"),
        (ok(attributes={"a": {"b": 1}}), "attributes.a: expected a"),
        (ok(attributes={"a": [1]}), "attributes.a: expected a string"),
        (ok(attributes={"a": "v" * 501}), "attributes.a: 501 char"),
        (ok(attributes={"a": 2**63}), "attributes.a: integer out of"),
        (ok(attributes={"a": float("nan")}), "must be finite"),
        (ok(attributes={"k" * 65: 1}), "attributes key: 65 char"),
        (ok(attributes={"": 1}), "attributes key: must not be empty"),
        (ok(attributes={str(i): i for i in range(33)}), "attributes: 33 keys; at most 32"),
    ],
)
def test_invalid_generic_payloads_name_the_field(payload: Any, expected: str) -> None:
    assert expected in refuse(payload, webhook_id="m")


def test_error_messages_shorten_long_values() -> None:
    message = refuse({"type": "x" * 5000, "dag_id": "d"}, webhook_id="m")
    assert len(message) < 400


def test_payload_error_is_an_xdeps_error() -> None:
    assert issubclass(PayloadError, XdepsError)


# --- Astro alerts --------------------------------------------------------------------------------


def test_astronomers_documented_dag_trigger_example() -> None:
    event = parse(ASTRO_EXAMPLE, default_deployment="upstream")
    assert event.type == "dag_run.failed"
    assert event.dag_id == "fail_dag"
    assert (event.run_id, event.task_id, event.deployment) == (None, None, "upstream")
    assert event.occurred_at == datetime(2023, 11, 17, 17, 40, 10, tzinfo=timezone.utc)
    assert event.message == ASTRO_EXAMPLE["message"]
    assert event.attributes == {
        "source": "astro_alert",
        "alert_type": "PIPELINE_FAILURE",
        "alert_id": "d75e7517-88cc-4bab-b40f-660dd79df216",
    }
    assert event.id.startswith("astro-")


@pytest.mark.parametrize(
    ("alert_type", "event_type"),
    [
        ("DAG_FAILURE", "dag_run.failed"),
        ("DAG_SUCCESS", "dag_run.success"),
        ("TASK_FAILURE", "task_instance.failed"),
        ("DAG_DURATION", "dag_run.too_long"),
        ("DAG_TIMELINESS", "dag_run.late"),
        ("TASK_DURATION", "task_instance.too_long"),
        ("PIPELINE_FAILURE", "dag_run.failed"),
        ("dag_failure", "dag_run.failed"),
        (" Task_Duration ", "task_instance.too_long"),
    ],
)
def test_each_astro_alert_type_maps_to_an_event_type(alert_type: str, event_type: str) -> None:
    event = parse({"dagName": "d", "alertType": alert_type, "alertId": "a1"}, webhook_id="msg_9")
    assert (event.type, event.id, event.occurred_at) == (event_type, "msg_9", NOW)
    assert event.attributes["alert_type"] == alert_type


def test_every_documented_astro_alert_type_is_mapped() -> None:
    documented = {"DAG_SUCCESS", "DAG_FAILURE", "DAG_DURATION", "DAG_TIMELINESS", "TASK_DURATION"}
    documented.add("TASK_FAILURE")
    assert documented <= set(ASTRO_ALERT_TYPES)
    assert set(ASTRO_ALERT_TYPES.values()) <= set(EVENT_TYPES)


def test_astro_alert_wrapped_as_a_dag_runs_request_body() -> None:
    wrapped = {"dag_run_id": "manual__x", "logical_date": None, "conf": ASTRO_EXAMPLE}
    assert parse(wrapped) == parse(ASTRO_EXAMPLE)


def test_astro_alert_ids_are_stable_across_retries_and_differ_between_alerts() -> None:
    first = parse(ASTRO_EXAMPLE)
    assert parse(dict(ASTRO_EXAMPLE), now=NOW + timedelta(minutes=5)).id == first.id
    later = {**ASTRO_EXAMPLE, "message": ASTRO_EXAMPLE["message"].replace("17:40:10", "18:40:10")}
    assert parse(later).id != first.id
    assert parse({**ASTRO_EXAMPLE, "alertId": "other"}).id != first.id


def test_the_webhook_id_wins_for_astro_alerts() -> None:
    assert parse(ASTRO_EXAMPLE, webhook_id="msg_astro").id == "msg_astro"


def test_astro_alert_without_message_needs_a_webhook_id() -> None:
    message = refuse({"dagName": "d", "alertType": "DAG_SUCCESS", "alertId": "a"})
    assert "without a message and without a webhook-id" in message


def test_astro_message_without_a_notification_time_uses_the_time_of_receipt() -> None:
    for text in ("DAG d succeeded.", "Alert notification time: 2023-13-45 99:99:99 UTC"):
        assert parse({"dagName": "d", "alertType": "DAG_SUCCESS", "message": text}).occurred_at == NOW


def test_a_long_astro_message_is_cut_not_refused() -> None:
    long_message = "x" * 5000
    event = parse({"dagName": "d", "alertType": "DAG_SUCCESS", "message": long_message})
    assert len(event.message or "") == MAX_MESSAGE_CHARS and (event.message or "").endswith("...")
    other = parse({"dagName": "d", "alertType": "DAG_SUCCESS", "message": long_message + "y"})
    assert other.id != event.id  # the id is made from the whole message


def test_optional_astro_fields_from_forwarding_dags() -> None:
    alert = {
        "dagName": "d",
        "alertType": "TASK_FAILURE",
        "taskName": "extract",
        "dagRunId": "scheduled__x",
        "deploymentName": "prod",
        "severity": "CRITICAL",
        "unknownField": [1, 2, 3],
    }
    event = parse(alert, webhook_id="m", default_deployment="ignored")
    assert (event.task_id, event.run_id, event.deployment) == ("extract", "scheduled__x", "prod")
    assert event.attributes == {"source": "astro_alert", "alert_type": "TASK_FAILURE", "severity": "CRITICAL"}
    assert parse({**alert, "taskId": "t2", "runId": "r2"}, webhook_id="m").task_id == "t2"


def test_a_generic_type_wins_over_an_alert_type() -> None:
    event = parse(ok(alertType="DAG_FAILURE"), webhook_id="m")
    assert event.type == "dag_run.success"


@pytest.mark.parametrize(
    ("alert", "expected"),
    [
        ({"alertType": "DAG_FAILURE"}, "dagName: missing; expected a string"),
        ({"alertType": "DAG_FAILURE", "dagName": 3}, "dagName: expected a string, got a number"),
        ({"alertType": "DAG_FAILURE", "dagName": "a b"}, "dagName: 'a b' is not a valid Airflow DAG id"),
        ({"alertType": None, "dagName": "d"}, "alertType: missing"),
        ({"alertType": ["DAG_FAILURE"], "dagName": "d"}, "alertType: expected a string, got an array"),
        ({"alertType": "TASK_RETRY", "dagName": "d"}, "alertType: 'TASK_RETRY' is not an Astro alert type"),
        ({"alertType": "DAG_FAILURE", "dagName": "d", "alertId": 12}, "alertId: expected a string"),
        ({"alertType": "DAG_FAILURE", "dagName": "d", "message": {}}, "message: expected a string"),
        ({"alertType": "DAG_FAILURE", "dagName": "d", "taskName": "a/b"}, "taskName: 'a/b' is not a valid"),
        ({"alertType": "DAG_FAILURE", "dagName": "d", "taskId": "a b"}, "taskId: 'a b' is not a valid"),
        ({"alertType": "DAG_FAILURE", "dagName": "d", "deploymentName": 1}, "deploymentName: expected"),
        ({"conf": {"alertType": "DAG_FAILURE"}}, "dagName: missing"),
        ({"conf": "not an object"}, "type: missing"),
    ],
)
def test_invalid_astro_alerts_name_the_field(alert: dict[str, Any], expected: str) -> None:
    assert expected in refuse(alert, webhook_id="m")


def test_unknown_astro_alert_type_lists_the_known_ones() -> None:
    message = refuse({"alertType": "NOPE", "dagName": "d"}, webhook_id="m")
    assert all(name in message for name in ASTRO_ALERT_TYPES)


# --- StateEvent ----------------------------------------------------------------------------------


def test_state_event_round_trips_through_json() -> None:
    event = parse(GENERIC)
    stored = json.loads(json.dumps(event.to_dict()))
    assert stored["occurred_at"] == "2026-01-31T12:00:00.250000+00:00"
    assert StateEvent.from_dict(stored) == event
    astro = parse(ASTRO_EXAMPLE)
    assert StateEvent.from_dict(json.loads(json.dumps(astro.to_dict()))) == astro


def test_minimal_state_event_round_trips() -> None:
    event = StateEvent(id="e", type="dag_run.late", dag_id="d", occurred_at=NOW)
    assert event.to_dict() == {
        "id": "e",
        "type": "dag_run.late",
        "dag_id": "d",
        "run_id": None,
        "task_id": None,
        "deployment": None,
        "occurred_at": "2026-01-31T12:00:00+00:00",
        "message": None,
        "attributes": {},
        "source": None,
    }
    assert StateEvent.from_dict(event.to_dict()) == event


def test_state_event_is_frozen_and_hashable() -> None:
    event = parse(GENERIC)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.dag_id = "other"  # type: ignore[misc]
    assert len({event, parse(GENERIC)}) == 1


def test_state_event_copies_its_attributes() -> None:
    attributes = {"try_number": 1}
    event = StateEvent(id="e", type="dag_run.late", dag_id="d", occurred_at=NOW, attributes=attributes)
    attributes["try_number"] = 2
    assert event.attributes == {"try_number": 1}


def test_state_event_stores_utc() -> None:
    tokyo = timezone(timedelta(hours=9))
    event = StateEvent(id="e", type="dag_run.late", dag_id="d", occurred_at=NOW.astimezone(tokyo))
    assert event.occurred_at == NOW and event.occurred_at.tzinfo is timezone.utc


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"occurred_at": NOW.replace(tzinfo=None)}, "occurred_at: 2026-01-31T12:00:00 has no UTC offset"),
        ({"occurred_at": "2026-01-31T12:00:00Z"}, "occurred_at: expected a datetime"),
        ({"type": "dag_run.exploded"}, "type: 'dag_run.exploded' is not an event type"),
        ({"dag_id": "no spaces please"}, "dag_id: 'no spaces please' is not a valid Airflow DAG id"),
        ({"id": ""}, "id: must not be empty"),
        ({"task_id": "t\n"}, "task_id: contains control characters"),
        ({"attributes": {"a": object()}}, "attributes.a: expected a string, number, boolean or null"),
        ({"message": "m" * 2001}, "message: 2001 characters"),
    ],
)
def test_state_event_validates_on_construction(changes: dict[str, Any], expected: str) -> None:
    fields: dict[str, Any] = {"id": "e", "type": "dag_run.late", "dag_id": "d", "occurred_at": NOW, **changes}
    with pytest.raises(PayloadError, match=expected):
        StateEvent(**fields)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([], "a stored event must be an object, got an array"),
        ({"id": "e", "type": "dag_run.late", "dag_id": "d"}, "stored event is missing occurred_at"),
        ({"occurred_at": "2026-01-31T12:00:00+00:00"}, "stored event is missing id, type, dag_id"),
        ({"id": "e", "type": "dag_run.late", "dag_id": "d", "occurred_at": "noon"}, "occurred_at: 'noon'"),
    ],
)
def test_from_dict_refuses_broken_records(data: Any, expected: str) -> None:
    with pytest.raises(PayloadError, match=expected):
        StateEvent.from_dict(data)


def test_from_dict_ignores_fields_it_does_not_know() -> None:
    event = StateEvent(id="e", type="dag_run.late", dag_id="d", occurred_at=NOW)
    assert StateEvent.from_dict({**event.to_dict(), "added_later": 1}) == event


# --- parse_json_body -----------------------------------------------------------------------------


def test_json_body_is_decoded() -> None:
    body = json.dumps(GENERIC).encode()
    assert parse_json_body(body, max_bytes=len(body)) == GENERIC
    assert parse_json_body(bytearray(b' {"a": [1, 2.5, "\\u00e9"]} '), max_bytes=100) == {"a": [1, 2.5, "é"]}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"x" * 101, "the body is 101 bytes; at most 100 are accepted"),
        (b"", "the body is empty; expected a JSON object"),
        (b" \n\t ", "the body is empty"),
        (b'{"a": "\xff"}', "the body is not valid UTF-8 (at byte 7)"),
        ('\ufeff{"a": 1}'.encode(), "starts with a byte order mark"),
        (b'{"a": NaN}', "NaN is not a number JSON allows"),
        (b'{"a": Infinity}', "Infinity is not a number JSON allows"),
        (b"[-Infinity]", "-Infinity is not a number JSON allows"),
        (b'{"a": 1e400}', "the number '1e400' is out of range"),
        (b'{"a": 1, "a": 2}', "key 'a' appears twice in one object"),
        (b'{"x": {"b": 1, "b": 1}}', "key 'b' appears twice"),
        (b'{"a": 1,}', "not valid JSON: Expecting property name enclosed in double quotes at line 1 col"),
        (b'{"a":\n 1} x', "not valid JSON: Extra data at line 2 column 5"),
        (b"{'a': 1}", "not valid JSON"),
        (b"[" * 40 + b"]" * 40 + b"]", "not valid JSON: Extra data at line 1 column 81"),
    ],
)
def test_bad_bodies_say_what_is_wrong(body: bytes, expected: str) -> None:
    with pytest.raises(PayloadError, match=re.escape(expected)):
        parse_json_body(body, max_bytes=100)


def test_deeply_nested_json_is_refused() -> None:
    body = b"[" * 200_000 + b"]" * 200_000
    with pytest.raises(PayloadError, match="nested too deeply"):
        parse_json_body(body, max_bytes=len(body))


def test_a_huge_integer_is_refused() -> None:
    body = b'{"a": ' + b"9" * 5000 + b"}"
    with pytest.raises(PayloadError, match="too large"):
        parse_json_body(body, max_bytes=len(body))


def test_parse_json_body_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match="raw request bytes"):
        parse_json_body("{}", max_bytes=10)  # type: ignore[arg-type]
    for limit in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="max_bytes"):
            parse_json_body(b"{}", max_bytes=limit)  # type: ignore[arg-type]


def test_body_then_event_end_to_end() -> None:
    body = json.dumps({"type": "dag_run.success", "dag_id": "producer", "run_id": "r1"}).encode()
    event = parse_event(parse_json_body(body, max_bytes=65536), webhook_id="msg_e2e", now=NOW)
    assert (event.id, event.type, event.dag_id) == ("msg_e2e", "dag_run.success", "producer")
    assert event.run_id == "r1"

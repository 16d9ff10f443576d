"""Properties of the relay's inbound core, for inputs nobody thought of.

1. Any body, any JSON: ``parse_json_body`` + ``parse_event`` raise nothing but ``PayloadError``,
   and whatever they accept survives the durable store's round trip.
2. Nothing verifies unless it was signed with a configured secret; what was signed always does.
"""

from __future__ import annotations

import json
import string
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from astro_xdeps.exceptions import PayloadError, SignatureError
from astro_xdeps.relay.body import parse_json_body
from astro_xdeps.relay.payloads import parse_event
from astro_xdeps.relay.signing import (
    generate_secret,
    sign,
    verify_bearer,
    verify_standard_webhook,
    webhook_headers,
)
from astro_xdeps.state_events import EVENT_TYPES, StateEvent

NOW = datetime(2026, 1, 31, 12, 0, 0, tzinfo=timezone.utc)
NOW_TS = NOW.timestamp()
SECRET = generate_secret()
OTHER_SECRET = generate_secret()
BEARER = "a-long-bearer-secret-for-tests"

common = settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

# --- strategies ----------------------------------------------------------------------------------

FIELDS = [
    "type", "dag_id", "run_id", "task_id", "deployment", "occurred_at", "id", "message", "attributes",
    "alertType", "dagName", "alertId", "severity", "taskId", "taskName", "dagRunId", "runId",
    "deploymentName", "conf",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
plausible = st.one_of(
    st.sampled_from(EVENT_TYPES),
    st.sampled_from(["DAG_FAILURE", "task_duration", "PIPELINE_FAILURE", "NOPE"]),
    st.sampled_from(["d", "load_orders", "a b", "x" * 251, ""]),
    st.sampled_from(["2026-01-31T12:00:00Z", "2026-01-31T12:00:00"]),
    st.sampled_from(["Alert notification time: 2023-11-17 17:40:10 UTC", "\ud800", "line\nbreak"]),
)
json_values = st.recursive(
    st.one_of(scalars, plausible),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=10)), children, max_size=6),
    ),
    max_leaves=12,
)
airflow_ids = st.from_regex(r"[A-Za-z0-9_.-]{1,30}", fullmatch=True)
timestamps = st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat())
good_attributes = st.dictionaries(
    st.text(min_size=1, max_size=10),
    st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=9)),
)
notification_times = st.datetimes().map(
    lambda d: d.strftime("Alert notification time: %Y-%m-%d %H:%M:%S UTC")
)


def sometimes_wrong(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a valid value, sometimes anything at all: reaches both the accept and refuse paths."""
    return st.integers(min_value=0, max_value=9).flatmap(lambda n: json_values if n == 0 else good)


generic_payloads = st.fixed_dictionaries(
    {"type": sometimes_wrong(st.sampled_from(EVENT_TYPES)), "dag_id": sometimes_wrong(airflow_ids)},
    optional={
        "task_id": sometimes_wrong(airflow_ids),
        "run_id": sometimes_wrong(st.text(min_size=1, max_size=20)),
        "deployment": sometimes_wrong(st.text(min_size=1, max_size=20)),
        "occurred_at": sometimes_wrong(timestamps),
        "id": sometimes_wrong(st.text(min_size=1, max_size=20)),
        "message": sometimes_wrong(st.text(max_size=50)),
        "attributes": sometimes_wrong(good_attributes),
        "extra": json_values,
    },
)
astro_alerts = st.fixed_dictionaries(
    {
        "alertType": sometimes_wrong(st.sampled_from(["DAG_FAILURE", "task_duration", "PIPELINE_FAILURE"])),
        "dagName": sometimes_wrong(airflow_ids),
    },
    optional={
        "alertId": sometimes_wrong(st.text(min_size=1, max_size=20)),
        "message": sometimes_wrong(notification_times),
        "taskName": sometimes_wrong(airflow_ids),
        "severity": sometimes_wrong(st.sampled_from(["INFO", "CRITICAL"])),
        "deploymentName": sometimes_wrong(st.text(min_size=1, max_size=20)),
    },
)
payloads = st.one_of(
    generic_payloads,
    astro_alerts,
    astro_alerts.map(lambda alert: {"conf": alert}),
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=len(FIELDS)),
)


def check_event(payload: Any, webhook_id: str | None) -> None:
    """parse_event either refuses with PayloadError or returns an event that survives storage."""
    try:
        event = parse_event(payload, webhook_id=webhook_id, now=NOW, default_deployment="up")
    except PayloadError:
        return
    assert event.type in EVENT_TYPES
    assert event.occurred_at.tzinfo is timezone.utc
    stored = json.loads(json.dumps(event.to_dict(), allow_nan=False))
    assert StateEvent.from_dict(stored) == event


# --- 1. parsing never fails any other way --------------------------------------------------------


@common
@given(body=st.binary(max_size=400))
def test_random_bytes_only_ever_raise_payload_error(body: bytes) -> None:
    try:
        payload = parse_json_body(body, max_bytes=300)
    except PayloadError:
        return
    check_event(payload, webhook_id=None)


@common
@given(value=json_values, webhook_id=st.one_of(st.none(), st.just("msg_1")))
def test_random_json_documents_only_ever_raise_payload_error(value: Any, webhook_id: str | None) -> None:
    try:
        text = json.dumps(value)
    except ValueError:  # circular structures cannot come from hypothesis; NaN dumps fine
        return
    try:
        payload = parse_json_body(text.encode("utf-8", "surrogatepass"), max_bytes=10_000)
    except PayloadError:
        return
    check_event(payload, webhook_id)


@common
@given(payload=payloads, webhook_id=st.one_of(st.none(), st.just("msg_1"), st.text(max_size=5)))
def test_event_shaped_objects_only_ever_raise_payload_error(
    payload: dict[str, Any], webhook_id: str | None
) -> None:
    check_event(payload, webhook_id)


stored_records = st.fixed_dictionaries(
    {
        "id": sometimes_wrong(st.text(min_size=1, max_size=20)),
        "type": sometimes_wrong(st.sampled_from(EVENT_TYPES)),
        "dag_id": sometimes_wrong(airflow_ids),
        "occurred_at": sometimes_wrong(timestamps),
    },
    optional={
        "run_id": sometimes_wrong(st.text(min_size=1, max_size=20)),
        "task_id": sometimes_wrong(airflow_ids),
        "deployment": sometimes_wrong(st.text(min_size=1, max_size=20)),
        "message": sometimes_wrong(st.text(max_size=50)),
        "attributes": sometimes_wrong(good_attributes),
        "added_later": json_values,
    },
)


@common
@given(data=st.one_of(stored_records, json_values))
def test_stored_records_only_ever_raise_payload_error(data: Any) -> None:
    try:
        event = StateEvent.from_dict(data)
    except PayloadError:
        return
    assert StateEvent.from_dict(event.to_dict()) == event


@common
@given(
    event_type=st.sampled_from(EVENT_TYPES),
    dag_id=st.from_regex(r"[A-Za-z0-9_.-]{1,40}", fullmatch=True),
    task_id=st.from_regex(r"[A-Za-z0-9_.-]{1,40}", fullmatch=True),
    run_id=st.text(alphabet=string.printable.strip(), min_size=1, max_size=60),
    seconds=st.integers(min_value=0, max_value=4_000_000_000),
)
def test_valid_generic_events_are_accepted_and_round_trip(
    event_type: str, dag_id: str, task_id: str, run_id: str, seconds: int
) -> None:
    occurred_at = datetime.fromtimestamp(seconds, tz=timezone.utc)
    payload = {
        "type": event_type,
        "dag_id": dag_id,
        "task_id": task_id,
        "run_id": run_id,
        "occurred_at": occurred_at.isoformat().replace("+00:00", "Z"),
    }
    body = json.dumps(payload).encode()
    event = parse_event(parse_json_body(body, max_bytes=len(body)), now=NOW)
    assert (event.type, event.dag_id, event.task_id, event.run_id) == (event_type, dag_id, task_id, run_id)
    assert event.occurred_at == occurred_at
    assert parse_event(payload, now=NOW).id == event.id  # a retry is the same event
    assert StateEvent.from_dict(json.loads(json.dumps(event.to_dict()))) == event


# --- 2. signatures -------------------------------------------------------------------------------

header_names = st.sampled_from(
    ["webhook-id", "webhook-timestamp", "webhook-signature", "Webhook-Signature", "authorization", "x-other"]
)
header_values = st.one_of(
    st.text(max_size=80),
    st.integers(min_value=0, max_value=2 * int(NOW_TS)).map(str),
    st.text(alphabet=string.ascii_letters + string.digits + "+/=", max_size=50).map(lambda s: "v1," + s),
)
msg_ids = st.text(alphabet=string.ascii_letters + string.digits + "_-.:", min_size=1, max_size=60)


@common
@given(headers=st.dictionaries(header_names, header_values, max_size=6), body=st.binary(max_size=200))
def test_random_headers_never_verify(headers: dict[str, str], body: bytes) -> None:
    with pytest.raises(SignatureError):
        verify_standard_webhook(headers, body, [SECRET], now=NOW_TS)


@common
@given(
    msg_id=msg_ids,
    body=st.binary(max_size=200),
    signature=st.text(max_size=200),
    skew=st.integers(min_value=-300, max_value=300),
)
def test_random_signatures_never_verify(msg_id: str, body: bytes, signature: str, skew: int) -> None:
    timestamp = str(int(NOW_TS) + skew)
    headers = {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": signature}
    with pytest.raises(SignatureError):
        verify_standard_webhook(headers, body, [SECRET], now=NOW_TS)


@common
@given(msg_id=msg_ids, body=st.binary(max_size=300), skew=st.integers(min_value=-300, max_value=300))
def test_signed_requests_verify_and_only_with_their_secret(msg_id: str, body: bytes, skew: int) -> None:
    timestamp = int(NOW_TS) + skew
    headers = webhook_headers(body, [SECRET], msg_id=msg_id, timestamp=timestamp)
    assert headers["webhook-signature"] == sign(msg_id, timestamp, body, SECRET)
    assert verify_standard_webhook(headers, body, [SECRET], now=NOW_TS) == msg_id
    assert verify_standard_webhook(headers, body, [OTHER_SECRET, SECRET], now=NOW_TS) == msg_id
    with pytest.raises(SignatureError):
        verify_standard_webhook(headers, body, [OTHER_SECRET], now=NOW_TS)
    with pytest.raises(SignatureError):
        verify_standard_webhook(headers, body + b" ", [SECRET], now=NOW_TS)
    with pytest.raises(SignatureError):
        verify_standard_webhook({**headers, "webhook-id": msg_id + "x"}, body, [SECRET], now=NOW_TS)
    with pytest.raises(SignatureError):
        later = {**headers, "webhook-timestamp": str(timestamp + 1)}
        verify_standard_webhook(later, body, [SECRET], now=NOW_TS)


@common
@given(token=st.text(max_size=60), scheme=st.sampled_from(["Bearer ", "bearer ", "Basic ", "", "Token "]))
def test_random_bearer_tokens_never_pass(token: str, scheme: str) -> None:
    if token.strip() == BEARER:
        return
    with pytest.raises(SignatureError):
        verify_bearer({"Authorization": scheme + token}, [BEARER])

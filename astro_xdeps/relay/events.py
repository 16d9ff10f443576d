"""What happened upstream: one event model for the relay's three doors.

The doors are the HTTP webhook (whose JSON this module parses), the upstream scheduler's
listener and an Airflow notifier in callbacks (both build ``StateEvent`` directly). Rules only
ever see a ``StateEvent``; ``to_dict()``/``from_dict()`` turn it into JSON-safe data for the
durable store and back.

Event types (``EVENT_TYPES``)::

    dag_run.success   dag_run.failed   dag_run.running   dag_run.late   dag_run.too_long
    task_instance.success   task_instance.failed   task_instance.too_long
    dag_run.missed_deadline   (made by the relay's deadline clock, see relay/deadlines.py)

Accepted HTTP payloads (``parse_event``)
========================================

1. The generic event, this package's documented contract::

    {
      "type": "dag_run.failed",             required, one of EVENT_TYPES
      "dag_id": "load_orders",              required, an Airflow DAG id
      "run_id": "scheduled__2026-01-31...", optional
      "task_id": "extract",                 required for task_instance.* types, else optional
      "deployment": "prod-eu",              optional; default: the endpoint's configured deployment
      "occurred_at": "2026-01-31T12:00:00Z", optional ISO-8601 with an offset; default: time of receipt
      "id": "evt-123",                      optional; default: the webhook-id header (see below)
      "message": "...",                     optional
      "attributes": {"try_number": 2}       optional; at most 32 keys, values string/number/bool/null
    }

   Any other top-level field is ignored and not stored, so senders can add fields before the
   relay knows them. Limits: ids, dag/task/run ids and deployment 250 characters (Airflow's
   ``ID_LEN``), message 2000, attribute keys 64 and string values 500. ``dag_id`` and
   ``task_id`` follow Airflow's key pattern (letters, digits, ``_``, ``.``, ``-``); ids hold no
   control characters.

2. Astro alerts. What was found (Astronomer's docs, their GitHub history and the Platform API
   reference; nothing else about the payload is published):

   - The "DAG Trigger" notification channel of Astro alerts triggers a DAG run through the
     Airflow REST API and puts the alert in that run's ``conf``. Astronomer documents this conf
     by example only (github.com/astronomer/docs ``astro/alerts.md``, "DAG Trigger" tab, added by
     astronomer/docs#3104 "Document DAG trigger payload + example code")::

        {"dagName": "fail_dag",
         "alertType": "PIPELINE_FAILURE",
         "alertId": "d75e7517-88cc-4bab-b40f-660dd79df216",
         "message": "[Astro Alerts] Pipeline failure detected on DAG fail_dag. \\nStart time: 2023-11-17
                     17:32:54 UTC. \\nFailed at: 2023-11-17 17:40:10 UTC. \\nAlert notification time:
                     2023-11-17 17:40:10 UTC. \\nClick link to investigate in Astro UI: https://..."}

     No task, run or deployment field is documented.
   - The alert types are those of the Astro Platform API (v1beta1 "Create an alert", field
     ``type``; astronomer.io/docs/astro/api/v-1-beta-1/platform/alerts/create-an-alert):
     DAG_SUCCESS, DAG_FAILURE, DAG_DURATION, DAG_TIMELINESS, TASK_DURATION, TASK_FAILURE.
     The conf example above is older and says PIPELINE_FAILURE, the name DAG failure alerts
     had then. ASSUMPTION: current alerts put the API name in ``alertType``; both are
     accepted (see ``ASTRO_ALERT_TYPES``).
   - No generic "custom webhook" channel for Astro alerts was found. An alert reaches the
     relay through a DAG Trigger to a small forwarding DAG that posts its conf. The conf is
     accepted as sent, or wrapped as the dagRuns request body ``{"conf": {...}}``.

   Fields read, and nothing else:

   ============== ========== ================================================================
   field          required   becomes
   ============== ========== ================================================================
   alertType      yes        ``type`` via ASTRO_ALERT_TYPES (case-insensitive); raw value in
                             ``attributes["alert_type"]``
   dagName        yes        ``dag_id``
   alertId        no         ``attributes["alert_id"]``. Whether it names the alert rule or
                             this notification is not documented, so it is never the event id
                             on its own.
   message        no         ``message`` (cut to 2000 characters; Astro writes it, not the
                             user). Its "Alert notification time: YYYY-MM-DD HH:MM:SS UTC" line,
                             if present, becomes ``occurred_at`` (ASSUMPTION from the example);
                             otherwise the time of receipt.
   severity       no         ``attributes["severity"]`` (ASSUMPTION: not documented in the conf)
   taskId,        no         ``task_id`` (ASSUMPTION: not documented; for forwarding DAGs that
   taskName                  add it)
   dagRunId,      no         ``run_id`` (ASSUMPTION, as above)
   runId
   deploymentName no         ``deployment``, else the endpoint's configured deployment
                             (ASSUMPTION, as above)
   ============== ========== ================================================================

   ``attributes["source"]`` is ``"astro_alert"``.

Event ids (idempotency)
=======================
In order: the payload's ``id`` (generic only), then the ``webhook-id`` header, then an id
derived from the content. A generic event is derived from type, dag_id, run_id, task_id,
deployment, occurred_at and attributes, and only when ``occurred_at`` was sent: without it a
second failure of the same run would look like a retry of the first. An Astro alert is derived
from alertId, alertType, dagName and message; the message holds the run's times, so it differs
between alerts and stays the same across retries. If no id can be found or derived, the event is
refused. An id is unique within its source only: idempotency is built on ``StateEvent.key``
(source and id), so one source cannot pre-empt another's events by sending their ids.

Errors: ``PayloadError`` (answer 400/422). The message names the field, what was expected and
what came instead, shortened. ``parse_json_body`` checks the raw body: size, UTF-8, strict JSON.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Final

from astro_xdeps.exceptions import XdepsError

DAG_RUN_SUCCESS: Final = "dag_run.success"
DAG_RUN_FAILED: Final = "dag_run.failed"
DAG_RUN_RUNNING: Final = "dag_run.running"
DAG_RUN_LATE: Final = "dag_run.late"
DAG_RUN_TOO_LONG: Final = "dag_run.too_long"
TASK_INSTANCE_SUCCESS: Final = "task_instance.success"
TASK_INSTANCE_FAILED: Final = "task_instance.failed"
TASK_INSTANCE_TOO_LONG: Final = "task_instance.too_long"
# Made by the relay's deadline clock (relay/deadlines.py), never by an upstream.
DAG_RUN_MISSED_DEADLINE: Final = "dag_run.missed_deadline"

EVENT_TYPES: Final = (
    DAG_RUN_SUCCESS,
    DAG_RUN_FAILED,
    DAG_RUN_RUNNING,
    DAG_RUN_LATE,
    DAG_RUN_TOO_LONG,
    TASK_INSTANCE_SUCCESS,
    TASK_INSTANCE_FAILED,
    TASK_INSTANCE_TOO_LONG,
    DAG_RUN_MISSED_DEADLINE,
)
TASK_EVENT_TYPES: Final = frozenset(t for t in EVENT_TYPES if t.startswith("task_instance."))

ASTRO_ALERT_TYPES: Final[Mapping[str, str]] = {
    "DAG_SUCCESS": DAG_RUN_SUCCESS,
    "DAG_FAILURE": DAG_RUN_FAILED,
    "PIPELINE_FAILURE": DAG_RUN_FAILED,  # the name in Astronomer's 2023 DAG Trigger example
    "DAG_DURATION": DAG_RUN_TOO_LONG,
    "DAG_TIMELINESS": DAG_RUN_LATE,
    "TASK_FAILURE": TASK_INSTANCE_FAILED,
    "TASK_DURATION": TASK_INSTANCE_TOO_LONG,
}

MAX_ID_CHARS: Final = 250  # Airflow's ID_LEN for dag, task and run ids
MAX_MESSAGE_CHARS: Final = 2000
MAX_ATTRIBUTES: Final = 32
MAX_ATTRIBUTE_KEY_CHARS: Final = 64
MAX_ATTRIBUTE_VALUE_CHARS: Final = 500
MAX_TIMESTAMP_CHARS: Final = 64
MAX_SOURCE_CHARS: Final = 100  # a source name (rules.py) or SCHEDULER_SOURCE

# The namespace of events from the upstream scheduler's listener: '@' is not allowed in a
# configured source name, so no HTTP source can post into it.
SCHEDULER_SOURCE: Final = "@scheduler"
# The namespace of the events the deadline clock makes (``dag_run.missed_deadline``).
DEADLINE_SOURCE: Final = "@deadline"

AttributeValue = str | int | float | bool | None

_AIRFLOW_KEY = re.compile(r"[\w.-]+")  # airflow.utils.helpers.KEY_REGEX, for dag_id and task_id
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NOTIFICATION_TIME = re.compile(r"Alert notification time:\s*(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) UTC")
_INT64 = 2**63


class PayloadError(XdepsError):
    """The payload is not an event this relay accepts. ``reason`` is safe to send back."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, kw_only=True)
class StateEvent:
    """A state an upstream DAG or task reached, as rules see it. Validated on construction.

    ``occurred_at`` is stored in UTC. ``attributes`` holds small extras (try_number, map_index,
    raw alert fields) and is a private copy: treat it as read-only.

    ``source`` is the namespace the ``id`` was chosen in: the configured source an HTTP event came
    through, or ``SCHEDULER_SOURCE`` for the in-process listener. Senders choose ids, so an id is
    unique only within its source; ``key`` (source and id) is what idempotency is built on, so
    one source cannot pre-empt another source's events by reusing their ids.
    """

    id: str
    type: str
    dag_id: str
    run_id: str | None = None
    task_id: str | None = None
    deployment: str | None = None
    occurred_at: datetime
    message: str | None = None
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict, hash=False)
    source: str | None = None

    def __post_init__(self) -> None:
        _check_text(self.id, "id")
        if self.source is not None:
            _check_text(self.source, "source", max_chars=MAX_SOURCE_CHARS)
            if "/" in self.source:
                raise PayloadError(f"source: {_describe(self.source)} must not contain '/'")
        if self.type not in EVENT_TYPES:
            raise _unknown_type(self.type)
        _check_airflow_key(self.dag_id, "dag_id", "DAG id")
        if self.run_id is not None:
            _check_text(self.run_id, "run_id")
        if self.task_id is not None:
            _check_airflow_key(self.task_id, "task_id", "task id")
        if self.deployment is not None:
            _check_text(self.deployment, "deployment")
        if self.message is not None:
            _check_text(self.message, "message", max_chars=MAX_MESSAGE_CHARS, allow_control=True)
        if not isinstance(self.occurred_at, datetime):
            raise PayloadError(f"occurred_at: expected a datetime, got {_describe(self.occurred_at)}")
        object.__setattr__(self, "occurred_at", _as_utc(self.occurred_at, "occurred_at"))
        object.__setattr__(self, "attributes", _check_attributes(self.attributes, "attributes"))

    @property
    def key(self) -> str:
        """The idempotency key of this event: unique across sources, at most 250 characters.

        ``<source>/<id>``; source names hold no ``/``, so keys of two sources never collide. An
        id too long to fit is replaced by its SHA-256. Events without a source (built directly
        in Python, or stored before sources were recorded) keep their bare id.
        """
        if self.source is None:
            return self.id
        key = f"{self.source}/{self.id}"
        if len(key) <= MAX_ID_CHARS:
            return key
        return f"{self.source}/#sha256:{hashlib.sha256(self.id.encode('utf-8')).hexdigest()}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe data for the durable store; ``from_dict`` reverses it."""
        return {
            "id": self.id,
            "type": self.type,
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "task_id": self.task_id,
            "deployment": self.deployment,
            "occurred_at": self.occurred_at.isoformat(),
            "message": self.message,
            "attributes": dict(self.attributes),
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StateEvent:
        """Rebuild an event from ``to_dict()`` output. Unknown keys are ignored (newer writers)."""
        if not isinstance(data, Mapping):
            raise PayloadError(f"a stored event must be an object, got {_describe(data)}")
        missing = [key for key in ("id", "type", "dag_id", "occurred_at") if data.get(key) is None]
        if missing:
            raise PayloadError(f"stored event is missing {', '.join(missing)}")
        attributes = data.get("attributes")
        return cls(
            id=data["id"],
            type=data["type"],
            dag_id=data["dag_id"],
            run_id=data.get("run_id"),
            task_id=data.get("task_id"),
            deployment=data.get("deployment"),
            occurred_at=_parse_timestamp(data["occurred_at"], "occurred_at"),
            message=data.get("message"),
            attributes={} if attributes is None else attributes,
            source=data.get("source"),
        )


def parse_json_body(body: bytes, *, max_bytes: int) -> Any:
    """Decode a request body as strict JSON: at most ``max_bytes``, UTF-8, finite numbers, unique keys."""
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise TypeError(f"body must be the raw request bytes, not {type(body).__name__}")
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
        raise ValueError(f"max_bytes must be a positive integer, not {max_bytes!r}")
    data = bytes(body)
    if len(data) > max_bytes:
        raise PayloadError(f"the body is {len(data)} bytes; at most {max_bytes} are accepted")
    if not data.strip():
        raise PayloadError("the body is empty; expected a JSON object")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"the body is not valid UTF-8 (at byte {exc.start}); send UTF-8 JSON") from exc
    if text.startswith("\ufeff"):
        raise PayloadError("the body starts with a byte order mark; send UTF-8 JSON without one")
    try:
        return json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except json.JSONDecodeError as exc:
        raise PayloadError(
            f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except RecursionError as exc:
        raise PayloadError("the body is not accepted: JSON nested too deeply") from exc
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise PayloadError("the body is not accepted: a number in it is too large") from exc


def parse_event(
    payload: Any,
    *,
    webhook_id: str | None = None,
    now: datetime | None = None,
    default_deployment: str | None = None,
    source: str | None = None,
) -> StateEvent:
    """Turn a decoded JSON payload (generic event or Astro alert) into a validated ``StateEvent``.

    ``webhook_id`` is the verified ``webhook-id`` header, ``now`` the time of receipt
    (timezone-aware; default: now) and ``default_deployment`` the deployment the endpoint
    belongs to, used when the payload names none. ``source`` is the configured source the event
    came through (the namespace of its id). See the module docstring for the shapes.
    """
    received = datetime.now(timezone.utc) if now is None else now
    if received.tzinfo is None or received.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    received = received.astimezone(timezone.utc)
    if not isinstance(payload, dict):
        raise PayloadError(f"expected a JSON object, got {_describe(payload)}")
    if "type" in payload:
        event = _parse_generic(payload, webhook_id, received, default_deployment)
    elif (alert := _astro_alert(payload)) is not None:
        event = _parse_astro(alert, webhook_id, received, default_deployment)
    else:
        event = None
    if event is not None:
        return event if source is None else dataclasses.replace(event, source=source)
    raise PayloadError(
        f"type: missing; expected a generic event with 'type' (one of {_TYPES_TEXT}) and 'dag_id', "
        "or an Astro alert with 'alertType' and 'dagName'"
    )


# --- the two payload shapes ----------------------------------------------------------------------


def _parse_generic(
    payload: dict[str, Any], webhook_id: str | None, received: datetime, default_deployment: str | None
) -> StateEvent:
    event_type = _text(payload, "type", required=True)
    if event_type not in EVENT_TYPES:
        raise _unknown_type(event_type)
    dag_id = _text(payload, "dag_id", required=True)
    _check_airflow_key(dag_id, "dag_id", "DAG id")
    run_id = _text(payload, "run_id")
    task_id = _text(payload, "task_id")
    if task_id is not None:
        _check_airflow_key(task_id, "task_id", "task id")
    elif event_type in TASK_EVENT_TYPES:
        raise PayloadError(f"task_id: missing; {event_type} events name the task")
    deployment = _text(payload, "deployment")
    message = _text(payload, "message", max_chars=MAX_MESSAGE_CHARS, allow_control=True)
    raw_occurred = payload.get("occurred_at")
    occurred_at = None if raw_occurred is None else _parse_timestamp(raw_occurred, "occurred_at")
    raw_attributes = payload.get("attributes")
    attributes = {} if raw_attributes is None else _check_attributes(raw_attributes, "attributes")
    if deployment is None:
        deployment = default_deployment

    event_id = _text(payload, "id") or webhook_id
    if event_id is None:
        if occurred_at is None:
            raise PayloadError(
                "id: missing; send an 'id' that stays the same across retries, a webhook-id header, "
                "or at least 'occurred_at', so that a retry can be told from a new event"
            )
        event_id = "gen-" + _digest(
            [event_type, dag_id, run_id, task_id, deployment, occurred_at.isoformat(), attributes]
        )
    return StateEvent(
        id=event_id,
        type=event_type,
        dag_id=dag_id,
        run_id=run_id,
        task_id=task_id,
        deployment=deployment,
        occurred_at=received if occurred_at is None else occurred_at,
        message=message,
        attributes=attributes,
    )


def _astro_alert(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The alert fields, sent as they are or wrapped as a dagRuns request body ``{"conf": {...}}``."""
    if "alertType" in payload:
        return payload
    conf = payload.get("conf")
    if isinstance(conf, dict) and "alertType" in conf:
        return conf
    return None


def _parse_astro(
    alert: dict[str, Any], webhook_id: str | None, received: datetime, default_deployment: str | None
) -> StateEvent:
    raw_type = _text(alert, "alertType", required=True)
    event_type = ASTRO_ALERT_TYPES.get(raw_type.strip().upper())
    if event_type is None:
        raise PayloadError(
            f"alertType: {_describe(raw_type)} is not an Astro alert type this relay knows; "
            f"expected one of {', '.join(ASTRO_ALERT_TYPES)}"
        )
    dag_id = _text(alert, "dagName", required=True)
    _check_airflow_key(dag_id, "dagName", "DAG id")
    alert_id = _text(alert, "alertId")
    severity = _text(alert, "severity")
    task_id = _first_text(alert, "taskId", "taskName")
    if task_id is not None:
        _check_airflow_key(task_id, "taskId" if alert.get("taskId") is not None else "taskName", "task id")
    run_id = _first_text(alert, "dagRunId", "runId")
    deployment = _text(alert, "deploymentName") or default_deployment
    full_message = _text(alert, "message", max_chars=None, allow_control=True)
    message = None
    if full_message is not None:
        message = full_message
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[: MAX_MESSAGE_CHARS - 3] + "..."

    event_id = webhook_id
    if event_id is None:
        if full_message is None:
            raise PayloadError(
                "id: an Astro alert without a message and without a webhook-id header cannot be told "
                "apart from a retry; forward it with a webhook-id"
            )
        event_id = "astro-" + _digest([alert_id, raw_type, dag_id, full_message])
    attributes: dict[str, AttributeValue] = {"source": "astro_alert", "alert_type": raw_type}
    if alert_id is not None:
        attributes["alert_id"] = alert_id
    if severity is not None:
        attributes["severity"] = severity
    return StateEvent(
        id=event_id,
        type=event_type,
        dag_id=dag_id,
        run_id=run_id,
        task_id=task_id,
        deployment=deployment,
        occurred_at=_notification_time(full_message) or received,
        message=message,
        attributes=_check_attributes(attributes, "alert fields"),
    )


def _notification_time(message: str | None) -> datetime | None:
    """The "Alert notification time: 2023-11-17 17:40:10 UTC" of an Astro alert message, if any."""
    match = _NOTIFICATION_TIME.search(message or "")
    if match is None:
        return None
    try:
        return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    except ValueError:  # e.g. month 13: free text, not worth refusing the alert for
        return None


# --- field checks --------------------------------------------------------------------------------

_TYPES_TEXT = ", ".join(EVENT_TYPES)
_ISO_EXAMPLE = "2026-01-31T12:00:00Z"


def _unknown_type(value: Any) -> PayloadError:
    return PayloadError(f"type: {_describe(value)} is not an event type; expected one of {_TYPES_TEXT}")


def _text(
    payload: Mapping[str, Any],
    key: str,
    *,
    required: bool = False,
    max_chars: int | None = MAX_ID_CHARS,
    allow_control: bool = False,
) -> Any:
    """A string field (None when absent or null, unless required), checked by ``_check_text``."""
    value = payload.get(key)
    if value is None:
        if required:
            raise PayloadError(f"{key}: missing; expected a string")
        return None
    _check_text(value, key, max_chars=max_chars, allow_control=allow_control)
    return value


def _first_text(payload: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = _text(payload, key)
        if value is not None:
            return value
    return None


def _check_text(
    value: Any, name: str, *, max_chars: int | None = MAX_ID_CHARS, allow_control: bool = False
) -> None:
    if not isinstance(value, str):
        raise PayloadError(f"{name}: expected a string, got {_describe(value)}")
    if not value:
        raise PayloadError(f"{name}: must not be empty")
    if max_chars is not None and len(value) > max_chars:
        raise PayloadError(f"{name}: {len(value)} characters; at most {max_chars} are accepted")
    if not allow_control and _CONTROL.search(value):
        raise PayloadError(f"{name}: contains control characters (newline, tab, ...); got {_describe(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PayloadError(f"{name}: not valid Unicode text (a lone surrogate escape)") from exc


def _check_airflow_key(value: Any, name: str, what: str) -> None:
    _check_text(value, name)
    if not _AIRFLOW_KEY.fullmatch(value):
        raise PayloadError(
            f"{name}: {_describe(value)} is not a valid Airflow {what} "
            "(letters, digits, '_', '.' and '-' only)"
        )


def _check_attributes(value: Any, name: str) -> dict[str, AttributeValue]:
    if not isinstance(value, Mapping):
        raise PayloadError(f"{name}: expected an object, got {_describe(value)}")
    if len(value) > MAX_ATTRIBUTES:
        raise PayloadError(f"{name}: {len(value)} keys; at most {MAX_ATTRIBUTES} are accepted")
    checked: dict[str, AttributeValue] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise PayloadError(f"{name}: keys must be strings, got {_describe(key)}")
        _check_text(key, f"{name} key", max_chars=MAX_ATTRIBUTE_KEY_CHARS)
        where = f"{name}.{key}"
        if isinstance(item, bool) or item is None:
            pass
        elif isinstance(item, int):
            if not -_INT64 <= item < _INT64:
                raise PayloadError(f"{where}: integer out of the 64-bit range")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise PayloadError(f"{where}: numbers must be finite")
        elif isinstance(item, str):
            if item:  # an empty string is a value like any other here
                _check_text(item, where, max_chars=MAX_ATTRIBUTE_VALUE_CHARS, allow_control=True)
        else:
            raise PayloadError(f"{where}: expected a string, number, boolean or null, got {_describe(item)}")
        checked[key] = item
    return checked


def _parse_timestamp(value: Any, name: str) -> datetime:
    expected = f"{name}: expected an ISO-8601 timestamp such as {_ISO_EXAMPLE}, got {_describe(value)}"
    if not isinstance(value, str):
        raise PayloadError(expected)
    text = value.strip()
    if not text or len(text) > MAX_TIMESTAMP_CHARS:
        raise PayloadError(expected)
    if text[-1] in "Zz":
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise PayloadError(
            f"{name}: {_describe(value)} is not an ISO-8601 timestamp such as {_ISO_EXAMPLE}"
        ) from exc
    return _as_utc(parsed, name)


def _as_utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise PayloadError(f"{name}: {value.isoformat()} has no UTC offset; add 'Z' or '+00:00'")
    try:
        return value.astimezone(timezone.utc)
    except (OverflowError, ValueError) as exc:
        raise PayloadError(f"{name}: {value.isoformat()} is out of range") from exc


# --- JSON helpers --------------------------------------------------------------------------------


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise PayloadError(f"the body is not accepted: key {_describe(key)} appears twice in one object")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise PayloadError(f"the body is not valid JSON: {name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise PayloadError(f"the body is not accepted: the number {_describe(text)} is out of range")
    return number


def state_change_id(prefix: str, *parts: Any) -> str:
    """A stable event id for one state change: the same parts always give the same id.

    The listener and the notifier use it, so a hook or callback that runs twice for the same
    change is one event for the rules.
    """
    return f"{prefix}-{_digest(list(parts))}"


def _digest(parts: list[Any]) -> str:
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()[:32]


def _describe(value: Any) -> str:
    """A short description of a sender-supplied value for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, str):
        return repr(value[:60]) + ("..." if len(value) > 60 else "")
    return type(value).__name__

"""What happened upstream: the state event that every door of the relay produces and rules read.

The senders (the scheduler listener, ``RelayNotifier``) and the relay share this model: the
relay's HTTP payloads (``relay/payloads.py``, ``relay/astro_alerts.py``) become a ``StateEvent``,
the listener builds one directly, and rules only ever see a ``StateEvent``. It checks its fields
on construction, the one place they are checked; ``to_dict()``/``from_dict()`` turn it into
JSON-safe data for the durable store and back. The wire contract is in docs/relay.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Final

from astro_xdeps.exceptions import PayloadError

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

MAX_ID_CHARS: Final = 250  # Airflow's ID_LEN for dag, task and run ids
MAX_MESSAGE_CHARS: Final = 2000
MAX_ATTRIBUTES: Final = 32
MAX_ATTRIBUTE_KEY_CHARS: Final = 64
MAX_ATTRIBUTE_VALUE_CHARS: Final = 500
MAX_TIMESTAMP_CHARS: Final = 64
MAX_SOURCE_CHARS: Final = 100  # a source name (relay/config.py) or SCHEDULER_SOURCE

# The namespace of events from the upstream scheduler's listener: '@' is not allowed in a
# configured source name, so no HTTP source can post into it.
SCHEDULER_SOURCE: Final = "@scheduler"
# The namespace of the events the deadline clock makes (``dag_run.missed_deadline``).
DEADLINE_SOURCE: Final = "@deadline"

AttributeValue = str | int | float | bool | None

_AIRFLOW_KEY = re.compile(r"[\w.-]+")  # airflow.utils.helpers.KEY_REGEX, for dag_id and task_id
CONTROL_CHARS: Final = re.compile(r"[\x00-\x1f\x7f]")
_INT64 = 2**63
_TYPES_TEXT = ", ".join(EVENT_TYPES)
_ISO_EXAMPLE = "2026-01-31T12:00:00Z"


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
        check_text(self.id, "id")
        if self.source is not None:
            check_text(self.source, "source", max_chars=MAX_SOURCE_CHARS)
            if "/" in self.source:
                raise PayloadError(f"source: {describe(self.source)} must not contain '/'")
        check_text(self.type, "type")
        if self.type not in EVENT_TYPES:
            raise PayloadError(
                f"type: {describe(self.type)} is not an event type; expected one of {_TYPES_TEXT}"
            )
        check_airflow_key(self.dag_id, "dag_id", "DAG id")
        if self.run_id is not None:
            check_text(self.run_id, "run_id")
        if self.task_id is not None:
            check_airflow_key(self.task_id, "task_id", "task id")
        if self.deployment is not None:
            check_text(self.deployment, "deployment")
        if self.message is not None:
            check_text(self.message, "message", max_chars=MAX_MESSAGE_CHARS, allow_control=True)
        if not isinstance(self.occurred_at, datetime):
            raise PayloadError(f"occurred_at: expected a datetime, got {describe(self.occurred_at)}")
        object.__setattr__(self, "occurred_at", _as_utc(self.occurred_at, "occurred_at"))
        object.__setattr__(self, "attributes", check_attributes(self.attributes, "attributes"))

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
            raise PayloadError(f"a stored event must be an object, got {describe(data)}")
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
            occurred_at=parse_timestamp(data["occurred_at"], "occurred_at"),
            message=data.get("message"),
            attributes={} if attributes is None else attributes,
            source=data.get("source"),
        )


def state_change_id(prefix: str, *parts: Any) -> str:
    """A stable event id for one state change: the same parts always give the same id.

    The listener and the notifier use it, so a hook or callback that runs twice for the same
    change is one event for the rules; the relay derives ids of payloads without one from it.
    """
    canonical = json.dumps(list(parts), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return f"{prefix}-{hashlib.sha256(canonical.encode('ascii')).hexdigest()[:32]}"


# --- field checks (also used by the relay's payload adapters, with the sender's field names) -----


def check_text(
    value: Any, name: str, *, max_chars: int | None = MAX_ID_CHARS, allow_control: bool = False
) -> None:
    """A non-empty string of at most ``max_chars``, without control characters unless allowed."""
    if value is None:
        raise PayloadError(f"{name}: missing; expected a string")
    if not isinstance(value, str):
        raise PayloadError(f"{name}: expected a string, got {describe(value)}")
    if not value:
        raise PayloadError(f"{name}: must not be empty")
    if max_chars is not None and len(value) > max_chars:
        raise PayloadError(f"{name}: {len(value)} characters; at most {max_chars} are accepted")
    if not allow_control and CONTROL_CHARS.search(value):
        raise PayloadError(f"{name}: contains control characters (newline, tab, ...); got {describe(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PayloadError(f"{name}: not valid Unicode text (a lone surrogate escape)") from exc


def check_airflow_key(value: Any, name: str, what: str) -> None:
    """A DAG or task id as Airflow allows it (``what`` names it in the message)."""
    check_text(value, name)
    if not _AIRFLOW_KEY.fullmatch(value):
        raise PayloadError(
            f"{name}: {describe(value)} is not a valid Airflow {what} "
            "(letters, digits, '_', '.' and '-' only)"
        )


def check_attributes(value: Any, name: str) -> dict[str, AttributeValue]:
    """A copy of ``value`` if it is a small flat object of strings, numbers, booleans and nulls."""
    if not isinstance(value, Mapping):
        raise PayloadError(f"{name}: expected an object, got {describe(value)}")
    if len(value) > MAX_ATTRIBUTES:
        raise PayloadError(f"{name}: {len(value)} keys; at most {MAX_ATTRIBUTES} are accepted")
    checked: dict[str, AttributeValue] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise PayloadError(f"{name}: keys must be strings, got {describe(key)}")
        check_text(key, f"{name} key", max_chars=MAX_ATTRIBUTE_KEY_CHARS)
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
                check_text(item, where, max_chars=MAX_ATTRIBUTE_VALUE_CHARS, allow_control=True)
        else:
            raise PayloadError(f"{where}: expected a string, number, boolean or null, got {describe(item)}")
        checked[key] = item
    return checked


def parse_timestamp(value: Any, name: str) -> datetime:
    """An ISO-8601 timestamp with a UTC offset (``Z`` allowed), in UTC."""
    expected = f"{name}: expected an ISO-8601 timestamp such as {_ISO_EXAMPLE}, got {describe(value)}"
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
            f"{name}: {describe(value)} is not an ISO-8601 timestamp such as {_ISO_EXAMPLE}"
        ) from exc
    return _as_utc(parsed, name)


def _as_utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise PayloadError(f"{name}: {value.isoformat()} has no UTC offset; add 'Z' or '+00:00'")
    try:
        return value.astimezone(timezone.utc)
    except (OverflowError, ValueError) as exc:
        raise PayloadError(f"{name}: {value.isoformat()} is out of range") from exc


def describe(value: Any) -> str:
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

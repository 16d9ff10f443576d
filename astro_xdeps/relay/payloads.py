"""The relay's HTTP payloads: a decoded JSON body (generic event or Astro alert) to a ``StateEvent``.

The generic event is this package's documented contract (docs/relay.md); Astro alerts go
through their adapter (``astro_alerts.py``). Fields are checked once, by ``StateEvent`` itself;
this module only picks them out of the payload and chooses the event's id and time.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from typing import Any

from astro_xdeps.exceptions import PayloadError
from astro_xdeps.relay.astro_alerts import astro_alert, parse_astro_alert
from astro_xdeps.state_events import (
    EVENT_TYPES,
    TASK_EVENT_TYPES,
    StateEvent,
    describe,
    parse_timestamp,
    state_change_id,
)

_UNDECIDED = "gen-undecided"  # a placeholder id while the fields are checked; never returned


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
    came through (the namespace of its id).
    """
    received = datetime.now(timezone.utc) if now is None else now
    if received.tzinfo is None or received.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    received = received.astimezone(timezone.utc)
    if not isinstance(payload, dict):
        raise PayloadError(f"expected a JSON object, got {describe(payload)}")
    if "type" in payload:
        return _parse_generic(payload, webhook_id, received, default_deployment, source)
    if (alert := astro_alert(payload)) is not None:
        return parse_astro_alert(alert, webhook_id, received, default_deployment, source)
    raise PayloadError(
        f"type: missing; expected a generic event with 'type' (one of {', '.join(EVENT_TYPES)}) "
        "and 'dag_id', or an Astro alert with 'alertType' and 'dagName'"
    )


def _parse_generic(
    payload: dict[str, Any],
    webhook_id: str | None,
    received: datetime,
    default_deployment: str | None,
    source: str | None,
) -> StateEvent:
    """The generic event. Its id: the payload's ``id``, the webhook-id, else derived from the content."""
    event_type = payload.get("type")
    task_id = payload.get("task_id")
    if task_id is None and isinstance(event_type, str) and event_type in TASK_EVENT_TYPES:
        raise PayloadError(f"task_id: missing; {event_type} events name the task")
    raw_occurred = payload.get("occurred_at")
    occurred_at = None if raw_occurred is None else parse_timestamp(raw_occurred, "occurred_at")
    deployment = payload.get("deployment")
    attributes = payload.get("attributes")
    event_id = payload.get("id")
    if event_id is None:
        event_id = webhook_id
    event = StateEvent(  # checks every field
        id=_UNDECIDED if event_id is None else event_id,
        type=event_type,
        dag_id=payload.get("dag_id"),
        run_id=payload.get("run_id"),
        task_id=task_id,
        deployment=default_deployment if deployment is None else deployment,
        occurred_at=received if occurred_at is None else occurred_at,
        message=payload.get("message"),
        attributes={} if attributes is None else attributes,
        source=source,
    )
    if event_id is not None:
        return event
    if occurred_at is None:
        # Without a time, a second failure of the same run would look like a retry of the first.
        raise PayloadError(
            "id: missing; send an 'id' that stays the same across retries, a webhook-id header, "
            "or at least 'occurred_at', so that a retry can be told from a new event"
        )
    parts = (event.type, event.dag_id, event.run_id, event.task_id, event.deployment)
    derived = state_change_id("gen", *parts, event.occurred_at.isoformat(), dict(event.attributes))
    return dataclasses.replace(event, id=derived)

"""Astro alerts as relay events: the adapter from Astronomer's alert fields to a ``StateEvent``.

Astro alerts reach the relay through a "DAG Trigger" notification channel to a small forwarding
DAG that posts its conf. What is known of that conf, and which fields are read (and which are
ASSUMPTIONS), is in docs/relay.md ("Astro alerts"). Errors name the alert's own fields
(``dagName``, ``alertType``), not the event's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Final

from astro_xdeps.exceptions import PayloadError
from astro_xdeps.state_events import (
    DAG_RUN_FAILED,
    DAG_RUN_LATE,
    DAG_RUN_SUCCESS,
    DAG_RUN_TOO_LONG,
    MAX_ID_CHARS,
    MAX_MESSAGE_CHARS,
    TASK_INSTANCE_FAILED,
    TASK_INSTANCE_TOO_LONG,
    AttributeValue,
    StateEvent,
    check_airflow_key,
    check_text,
    describe,
    state_change_id,
)

# Astro Platform API alert types (and the 2023 name of DAG failure alerts), case-insensitive.
ASTRO_ALERT_TYPES: Final[Mapping[str, str]] = {
    "DAG_SUCCESS": DAG_RUN_SUCCESS,
    "DAG_FAILURE": DAG_RUN_FAILED,
    "PIPELINE_FAILURE": DAG_RUN_FAILED,  # the name in Astronomer's 2023 DAG Trigger example
    "DAG_DURATION": DAG_RUN_TOO_LONG,
    "DAG_TIMELINESS": DAG_RUN_LATE,
    "TASK_FAILURE": TASK_INSTANCE_FAILED,
    "TASK_DURATION": TASK_INSTANCE_TOO_LONG,
}

_NOTIFICATION_TIME = re.compile(r"Alert notification time:\s*(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) UTC")


def astro_alert(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The alert fields, sent as they are or wrapped as a dagRuns request body ``{"conf": {...}}``."""
    if "alertType" in payload:
        return payload
    conf = payload.get("conf")
    if isinstance(conf, dict) and "alertType" in conf:
        return conf
    return None


def parse_astro_alert(
    alert: dict[str, Any],
    webhook_id: str | None,
    received: datetime,
    default_deployment: str | None,
    source: str | None = None,
) -> StateEvent:
    """The event an Astro alert reports. Its id: the webhook-id, else derived from the alert."""
    raw_type = _text(alert, "alertType", required=True)
    event_type = ASTRO_ALERT_TYPES.get(raw_type.strip().upper())
    if event_type is None:
        raise PayloadError(
            f"alertType: {describe(raw_type)} is not an Astro alert type this relay knows; "
            f"expected one of {', '.join(ASTRO_ALERT_TYPES)}"
        )
    dag_id = _text(alert, "dagName", required=True)
    check_airflow_key(dag_id, "dagName", "DAG id")
    alert_id = _text(alert, "alertId")
    severity = _text(alert, "severity")
    task_id = _first_text(alert, "taskId", "taskName")
    if task_id is not None:
        check_airflow_key(task_id, "taskId" if alert.get("taskId") is not None else "taskName", "task id")
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
        # The message holds the run's times: it differs between alerts and not across retries.
        event_id = state_change_id("astro", alert_id, raw_type, dag_id, full_message)
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
        attributes=attributes,
        source=source,
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


def _text(
    alert: Mapping[str, Any],
    key: str,
    *,
    required: bool = False,
    max_chars: int | None = MAX_ID_CHARS,
    allow_control: bool = False,
) -> Any:
    """A string field of the alert (None when absent or null, unless required)."""
    value = alert.get(key)
    if value is None and not required:
        return None
    check_text(value, key, max_chars=max_chars, allow_control=allow_control)
    return value


def _first_text(alert: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = _text(alert, key)
        if value is not None:
            return value
    return None

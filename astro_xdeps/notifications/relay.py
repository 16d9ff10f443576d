"""``RelayNotifier``: send a DAG's or task's state to an astro-xdeps relay from a callback.

    from astro_xdeps.notifications.relay import RelayNotifier

    @dag(on_failure_callback=RelayNotifier(), on_success_callback=RelayNotifier(), ...)

    # Airflow 3.1+ deadline alert: runs in the triggerer, sends dag_run.late
    DeadlineAlert(reference=DeadlineReference.DAGRUN_QUEUED_AT, interval=timedelta(hours=1),
                  callback=AsyncCallback(RelayNotifier, kwargs={"conn_id": "xdeps_relay"}))

The relay is an Airflow connection (default ``xdeps_relay``): Host = the relay's events URL
including the source, e.g. ``https://upstream.example/xdeps/relay/events/callbacks``;
Password = the source's secret (``whsec_...`` for Standard Webhooks; Extra
``{"auth": "bearer"}`` for a bearer secret). Or pass ``url=`` and ``secret_env=`` directly.
The event id is derived from the DAG, run, task, try and type, so a callback that runs
twice is one event for the relay.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from astro_xdeps.client.config import DeploymentConfig, Timeouts, redact_url
from astro_xdeps.client.http import Transport, scrub
from astro_xdeps.exceptions import ConfigError, DeploymentError, TransientError
from astro_xdeps.relay.signing import webhook_headers
from astro_xdeps.state_events import state_change_id
from astro_xdeps.version_compat import BaseHook, BaseNotifier

log = logging.getLogger(__name__)


def _field(obj: Any, *names: str) -> Any:
    """An attribute of a model object, or a key of the JSON dict a deadline callback gets."""
    for name in names:
        value = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
        if value is not None:
            return value
    return None


def event_from_context(
    context: Any, event_type: str | None = None, deployment: str | None = None
) -> dict[str, Any]:
    """The relay's generic event for a callback context (pure).

    Task and DAG callbacks get model objects; Airflow 3.1+ deadline alerts get a small context
    whose ``dag_run`` is a JSON dict and which has a ``deadline`` key (then the type is
    ``dag_run.late`` unless given).
    """
    dag_run = context.get("dag_run")
    ti = context.get("ti") or context.get("task_instance")
    dag = context.get("dag")
    dag_id = _field(dag_run, "dag_id") or _field(dag, "dag_id")
    run_id = _field(dag_run, "run_id", "dag_run_id")
    if event_type is None and context.get("deadline") is not None:
        event_type = "dag_run.late"
    task_id = (
        getattr(ti, "task_id", None)
        if context.get("task") is not None or (event_type and event_type.startswith("task_instance"))
        else None
    )
    if event_type is None:
        failed = context.get("exception") is not None or str(_field(ti or dag_run, "state") or "").endswith(
            "failed"
        )
        scope = "task_instance" if task_id else "dag_run"
        event_type = f"{scope}.{'failed' if failed else 'success'}"
    try_number = getattr(ti, "try_number", None)
    event = {
        "id": state_change_id("cb", deployment, event_type, dag_id, run_id, task_id, try_number),
        "type": event_type,
        "dag_id": dag_id,
        "run_id": run_id,
        "occurred_at": datetime.now(timezone.utc).isoformat(),
    }
    if task_id and event_type.startswith("task_instance"):
        event["task_id"] = task_id
    if deployment:
        event["deployment"] = deployment
    if context.get("exception") is not None:
        event["message"] = str(context["exception"])[:2000]
    if try_number is not None:
        event["attributes"] = {"try_number": try_number}
    return event


class RelayNotifier(BaseNotifier):
    """Posts a signed state event to an astro-xdeps relay. Retries briefly; never fails the task."""

    template_fields = ("event_type",)

    def __init__(
        self,
        *,
        conn_id: str = "xdeps_relay",
        url: str | None = None,
        secret_env: str | None = None,
        event_type: str | None = None,
        deployment: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        context: Any = None,
    ) -> None:
        # Deadline alerts construct the notifier with the context (``await RelayNotifier(...)``).
        if context is not None:
            super().__init__(context=context)
        else:
            super().__init__()
        self.conn_id = conn_id
        self.url = url
        self.secret_env = secret_env
        self.event_type = event_type
        self.deployment = deployment
        self.timeout = timeout
        self.retries = retries

    def _target(self) -> tuple[str, str, str]:
        """(url, secret, auth) from the arguments or the connection."""
        if self.url:
            if not self.secret_env or not os.environ.get(self.secret_env):
                raise ConfigError(
                    f"RelayNotifier: set secret_env to an environment variable holding the secret ({self.secret_env!r} is unset)."
                )
            return self.url, os.environ[self.secret_env], "standard-webhooks"
        conn = BaseHook.get_connection(self.conn_id)
        if not conn.host or not conn.password:
            raise ConfigError(
                f"RelayNotifier: connection {self.conn_id!r} needs Host (the relay events URL) and Password (the secret)."
            )
        url = conn.host if "://" in conn.host else f"https://{conn.host}"
        auth = (conn.extra_dejson or {}).get("auth", "standard-webhooks")
        return url, conn.password, auth

    def _transport(self, url: str, secret: str) -> tuple[Transport, str]:
        """The package's HTTP client for the relay (retries, ``Retry-After``, scrubbing) and the path."""
        shown = redact_url(url)
        if shown != url:
            raise ConfigError(
                f"RelayNotifier: the relay URL {shown!r} contains credentials; put the secret in the "
                "connection's Password (or secret_env) instead."
            )
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"RelayNotifier: the relay URL {url!r} must be http(s)://host/...events/<source>."
            )
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        config = DeploymentConfig(
            name="relay",
            base_url=f"{parts.scheme}://{parts.netloc}",
            token=secret,  # never sent as a bearer (auth "none"): listed so every message is scrubbed of it
            auth_type="none",
            api_version="v2",  # no version detection: the relay is not an Airflow API
            timeouts=Timeouts(connect=min(5.0, self.timeout), read=self.timeout),
            retries=max(0, self.retries),
        )
        return Transport(config, backoff_initial=1.0, backoff_max=10.0), path

    async def async_notify(self, context: Any) -> None:
        """For deadline alerts, which run in the triggerer: the same post, off the event loop."""
        await asyncio.to_thread(self.notify, context)

    def notify(self, context: Any) -> None:
        """Post the event; every failure is logged, none raised: a notifier must never fail a task."""
        event: dict[str, Any] = {}
        try:
            url, secret, auth = self._target()
            event = event_from_context(context, self.event_type, self.deployment)
            body = json.dumps(event).encode()
            if auth == "bearer":
                static = {"Authorization": f"Bearer {secret}", "webhook-id": event["id"]}

                def headers() -> dict[str, str]:
                    return {**static, "content-type": "application/json"}
            else:
                webhook_headers(body, [secret], msg_id=event["id"])  # a bad secret fails here, before sending

                def headers() -> dict[str, str]:
                    # Signed again per attempt: a retry carries a fresh webhook-timestamp.
                    return {
                        **webhook_headers(body, [secret], msg_id=event["id"]),
                        "content-type": "application/json",
                    }

            transport, path = self._transport(url, secret)
            try:
                # Safe to repeat on any failure: the relay drops a repeated webhook-id.
                response = transport.request(
                    "POST", path, auth=False, retry="all", ok=(200, 201, 202, 204), data=body, headers=headers
                )
            finally:
                transport.close()
            log.info(
                "RelayNotifier: %s of %s accepted (%s)", event["type"], event["dag_id"], response.status_code
            )
        except TransientError as exc:
            log.error(
                "RelayNotifier: gave up sending %s of %s to the relay: %s",
                event.get("type"),
                event.get("dag_id"),
                exc,
            )
        except DeploymentError as exc:
            log.error("RelayNotifier: the relay refused %s: %s", event.get("type"), exc)
        except Exception as exc:
            log.error("RelayNotifier: not sent: %s: %s", type(exc).__name__, _scrubbed(exc, self))


def _scrubbed(exc: BaseException, notifier: RelayNotifier) -> str:
    """The error's text without the secret, when the secret can be known without raising."""
    text = str(exc)
    try:
        secret = os.environ.get(notifier.secret_env or "") if notifier.url else None
    except Exception:
        secret = None
    return scrub(text, [secret] if secret else [])

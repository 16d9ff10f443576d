"""Sending one outbox item: a client per target connection, and the action's calls on it.

The delivery worker (:mod:`astro_xdeps.outbox.worker`) decides when and records what came of it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from astro_xdeps.client import DeploymentClient
from astro_xdeps.exceptions import NotFoundError, RequestRejected
from astro_xdeps.outbox import pacing
from astro_xdeps.outbox.actions import ACTIONS, EVENT_ID_KEY, AssetEventAction
from astro_xdeps.outbox.models import Item


class ClientPool:
    """One client per target connection, created on first use, dropped when its config fails."""

    def __init__(self, factory: Callable[[str], DeploymentClient] | None = None) -> None:
        self._factory = factory or _client_from_connection
        self._clients: dict[str, DeploymentClient] = {}
        self._lock = threading.Lock()

    def get(self, target: str) -> DeploymentClient:
        with self._lock:
            client = self._clients.get(target)
            if client is None:
                client = self._clients[target] = self._factory(target)
            return client

    def invalidate(self, target: str) -> None:
        with self._lock:
            client = self._clients.pop(target, None)
        if client is not None:
            client.close()

    def close(self) -> None:
        for target in list(self._clients):
            self.invalidate(target)


def _client_from_connection(conn_id: str) -> DeploymentClient:
    from astro_xdeps.hooks.deployment import DeploymentHook

    # The worker owns retries (with the outbox), so each call is a single attempt.
    return DeploymentHook(conn_id, retries=0).get_conn()


def send_item(client: DeploymentClient, item: Item) -> dict[str, Any]:
    """Do what ``item`` asks on ``client``'s deployment; return the result to keep with it.

    An asset event tried before (or replayed by an operator) is looked for downstream first, by
    its event id, so a retry after an ambiguous failure never creates a second event. Errors are
    the client's :class:`~astro_xdeps.exceptions.DeploymentError` classes.
    """
    pacing.yield_to_foreground()  # a sender starts no request while a listener's hook is in flight
    kind = ACTIONS.get(item.kind)
    if kind is None:
        raise RequestRejected(f"Unknown outbox item kind {item.kind!r}", deployment=item.target)
    action = kind.from_item(item)
    if isinstance(action, AssetEventAction):
        # Any earlier try may have arrived, even one before an operator's replay (attempts 0).
        if item.attempts > 1 or item.last_error is not None:
            try:
                found = client.find_event(action.uri, EVENT_ID_KEY, action.event_id, since=item.created_at)
            except NotFoundError:
                found = None  # the asset is missing, so the event cannot be there either
            if found is not None:
                return {"event_id": found.get("id"), "found_existing": True}
        event = client.create_asset_event(
            action.uri,
            action.extra,
            partition_key=action.partition_key,
            dedupe=(EVENT_ID_KEY, action.event_id),
        )
        return {"event_id": event.get("id")}
    trigger = client.trigger_dag_run(action.dag_id, action.dag_run_id, conf=action.conf, note=action.note)
    return {"dag_run_id": trigger.dag_run_id, "created": trigger.created}

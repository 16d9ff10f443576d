"""Sending one outbox item: a client per target connection, and the action's calls on it.

The delivery worker (:mod:`astro_xdeps.outbox.worker`) decides when and records what came of it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import requests
import urllib3
from urllib3.util.wait import wait_for_read

from astro_xdeps.client import DeploymentClient
from astro_xdeps.exceptions import NotFoundError, RequestRejected
from astro_xdeps.outbox import pacing
from astro_xdeps.outbox.actions import ACTIONS, EVENT_ID_KEY, AssetEventAction
from astro_xdeps.outbox.models import Item


class _PacedConnection(urllib3.connection.HTTPConnection):
    """Reads a response only once no listener's hook is in flight (in a background thread).

    Why: a response that arrives while a hook runs would take the GIL at the hook's next SQLite
    call and hold it for its parsing (~0.3 ms of Python in ``http.client``, ``urllib3`` and
    ``requests``), and the hook would wait for that. Here the thread waits for the response
    without the GIL (``select``), then at a pacing checkpoint, and only then parses it.
    """

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        if pacing.is_background() and self.sock is not None:
            _wait_for_response(self.sock, self.timeout)
        return super().getresponse(*args, **kwargs)


class _PacedHTTPSConnection(_PacedConnection, urllib3.connection.HTTPSConnection):
    pass


class _PacedPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _PacedConnection


class _PacedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _PacedHTTPSConnection


class PacedAdapter(requests.adapters.HTTPAdapter):
    """``requests``' adapter with :class:`_PacedConnection` for http and https (proxies excepted)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _PacedPool, "https": _PacedHTTPSPool}


def _wait_for_response(sock: Any, timeout: Any) -> None:
    """Wait until ``sock`` has data (the GIL released), then for the hooks in flight.

    ``timeout``: the connection's read timeout (urllib3 puts it on the socket only when it reads).
    Past it, raise the timeout the read itself would have raised: urllib3 reports it as a read
    timeout, as always.
    """
    if not isinstance(timeout, (int, float)):  # urllib3's "default" sentinel: the socket's own
        timeout = sock.gettimeout()
    pending = getattr(sock, "pending", None)  # TLS: bytes already decrypted and buffered
    if not (pending and pending()) and not wait_for_read(sock, timeout=timeout):
        raise TimeoutError("timed out")
    pacing.yield_to_foreground()


def pace(client: DeploymentClient) -> DeploymentClient:
    """Let ``client``'s responses wait for a listener's hook in flight (see :class:`_PacedConnection`)."""
    session = client.transport.session
    session.mount("http://", PacedAdapter())
    session.mount("https://", PacedAdapter())
    return client


class ClientPool:
    """One client per target connection, created on first use, dropped when its config fails.

    Its clients read responses at a pacing checkpoint (:func:`pace`)."""

    def __init__(self, factory: Callable[[str], DeploymentClient] | None = None) -> None:
        self._factory = factory or _client_from_connection
        self._clients: dict[str, DeploymentClient] = {}
        self._lock = threading.Lock()

    def get(self, target: str) -> DeploymentClient:
        with self._lock:
            client = self._clients.get(target)
            if client is None:
                client = self._clients[target] = pace(self._factory(target))
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

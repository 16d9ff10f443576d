"""The delivery worker: claims due outbox items, sends them downstream, records the outcome.

Outcomes per failure class:
- success (event created, run created or already existing): delivered;
- the request itself was refused (400/422: a bug or a mismatch like partition keys to
  Airflow < 3.2): dead at once, with the reason — resending cannot help;
- anything else (unreachable, 5xx, 429, timeouts, 401/403, asset or DAG missing during a
  deploy, connection not configured yet): retried with exponential backoff and jitter,
  honouring ``Retry-After``, until ``retry_horizon`` has passed, then dead.

Asset events are resent only after checking the target's recent events for the item's
``xdeps_event_id``, so a retry after an ambiguous failure never creates a second event.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from astro_xdeps.client import DeploymentClient
from astro_xdeps.exceptions import (
    AuthError,
    ConfigError,
    NotFoundError,
    RequestRejected,
    TransientError,
    XdepsError,
)
from astro_xdeps.outbox.models import ASSET_EVENT, DAG_RUN, Item
from astro_xdeps.outbox.store import Outbox, new_owner_id

log = logging.getLogger(__name__)

EVENT_ID_KEY = "xdeps_event_id"


@dataclass
class DrainStats:
    delivered: int = 0
    retried: int = 0
    dead: int = 0

    def add(self, other: DrainStats) -> None:
        self.delivered += other.delivered
        self.retried += other.retried
        self.dead += other.dead

    @property
    def handled(self) -> int:
        return self.delivered + self.retried + self.dead


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


def backoff_delay(attempts: int, *, base: float, maximum: float, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter in [50%, 100%], at least ``retry_after``."""
    delay = min(maximum, base * (2 ** max(0, attempts - 1)))
    delay *= random.uniform(0.5, 1.0)
    return max(delay, retry_after or 0.0)


@dataclass
class DeliveryWorker:
    """Delivers outbox items. ``deliver_due`` does one batch; ``start`` runs it in a thread."""

    outbox: Outbox
    clients: ClientPool = field(default_factory=ClientPool)
    owner: str = field(default_factory=lambda: new_owner_id("worker"))
    batch_size: int = 200
    lease_seconds: float = 120.0
    concurrency: int = 4
    retry_horizon: float = 3 * 24 * 3600.0
    backoff_base: float = 1.0
    backoff_max: float = 300.0
    idle_poll: float = 5.0
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=max(1, self.concurrency), thread_name_prefix="xdeps-send")

    # -- one batch ---------------------------------------------------------------------------
    def deliver_due(self) -> DrainStats:
        """Claim one batch of due items and deliver them; returns what happened."""
        items = self.outbox.claim(
            self.owner, limit=self.batch_size, lease_seconds=self.lease_seconds, now=self.clock()
        )
        stats = DrainStats()
        if not items:
            return stats
        by_target: dict[str, list[Item]] = defaultdict(list)
        for item in items:
            by_target[item.target].append(item)
        down: set[str] = set()
        lock = threading.Lock()

        def work(item: Item) -> None:
            outcome = self._deliver_one(item, down, lock)
            with lock:
                stats.add(outcome)

        # Interleave targets so one slow deployment does not hold back the others.
        ordered = [item for group in _round_robin(list(by_target.values())) for item in group]
        list(self._pool.map(work, ordered))
        return stats

    def drain(self, *, timeout: float | None = None) -> DrainStats:
        """Deliver until nothing is due (or ``timeout`` passed). Items scheduled later stay."""
        total = DrainStats()
        deadline = None if timeout is None else time.monotonic() + timeout
        while deadline is None or time.monotonic() < deadline:
            stats = self.deliver_due()
            total.add(stats)
            if stats.handled == 0:
                break
        return total

    def _deliver_one(self, item: Item, down: set[str], lock: threading.Lock) -> DrainStats:
        with lock:
            target_down = item.target in down
        if target_down:
            # The target just failed to answer: don't spend a timeout per item on it.
            self._fail(item, "not sent: the target was unreachable earlier in this batch", None)
            return DrainStats(retried=1)
        try:
            result = self._send(item)
        except RequestRejected as exc:
            self.outbox.mark_dead(item.id, self.owner, f"rejected by the target, not retried: {exc}")
            log.error("Outbox item %s to %s is dead: %s", item.id, item.target, exc)
            return DrainStats(dead=1)
        except (TransientError, NotFoundError, AuthError, ConfigError) as exc:
            if isinstance(exc, TransientError) and exc.status is None and not exc.ambiguous:
                # Unreachable (refused, connect timeout), not merely busy: skip its other items.
                with lock:
                    down.add(item.target)
            if isinstance(exc, (AuthError, ConfigError)):
                self.clients.invalidate(item.target)  # re-read the connection next time
            return self._fail(item, str(exc), getattr(exc, "retry_after", None))
        except Exception as exc:  # never lose an item to a bug: keep it and retry
            log.exception("Unexpected error delivering outbox item %s", item.id)
            return self._fail(item, f"{type(exc).__name__}: {exc}", None)
        self.outbox.mark_delivered(item.id, self.owner, result)
        return DrainStats(delivered=1)

    def _fail(self, item: Item, error: str, retry_after: float | None) -> DrainStats:
        now = self.clock()
        if now - item.created_at > self.retry_horizon:
            hours = self.retry_horizon / 3600
            self.outbox.mark_dead(item.id, self.owner, f"gave up after {hours:g} h of retries: {error}")
            log.error(
                "Outbox item %s to %s is dead after %d attempts: %s",
                item.id,
                item.target,
                item.attempts,
                error,
            )
            return DrainStats(dead=1)
        delay = backoff_delay(
            item.attempts, base=self.backoff_base, maximum=self.backoff_max, retry_after=retry_after
        )
        self.outbox.mark_failed(item.id, self.owner, error, now + delay)
        log.warning(
            "Outbox item %s to %s failed (attempt %d), retry in %.0fs: %s",
            item.id,
            item.target,
            item.attempts,
            delay,
            error,
        )
        return DrainStats(retried=1)

    def _send(self, item: Item) -> dict[str, Any]:
        client = self.clients.get(item.target)
        payload = item.payload
        if item.kind == ASSET_EVENT:
            uri, event_id = payload["uri"], payload["event_id"]
            # Any earlier try may have arrived, even one before an operator's replay (attempts 0).
            if item.attempts > 1 or item.last_error is not None:
                try:
                    found = client.find_event(uri, EVENT_ID_KEY, event_id)
                except NotFoundError:
                    found = None  # the asset is missing, so the event cannot be there either
                if found is not None:
                    return {"event_id": found.get("id"), "found_existing": True}
            event = client.create_asset_event(
                uri,
                payload.get("extra") or {},
                partition_key=payload.get("partition_key"),
                dedupe=(EVENT_ID_KEY, event_id),
            )
            return {"event_id": event.get("id")}
        if item.kind == DAG_RUN:
            trigger = client.trigger_dag_run(
                payload["dag_id"], payload["dag_run_id"], conf=payload.get("conf"), note=payload.get("note")
            )
            return {"dag_run_id": trigger.dag_run_id, "created": trigger.created}
        raise RequestRejected(f"Unknown outbox item kind {item.kind!r}", deployment=item.target)

    # -- background thread -------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="xdeps-delivery", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Deliver now rather than at the next poll (called after an enqueue)."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
        # A fresh (thread-less until used) pool, so start() or drain() after stop() still deliver.
        self._pool = ThreadPoolExecutor(max_workers=max(1, self.concurrency), thread_name_prefix="xdeps-send")

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                stats = self.deliver_due()
                if stats.handled:
                    continue  # more may be due right away
                next_due = self.outbox.next_due_at()
            except XdepsError as exc:
                log.warning("Delivery worker: %s", exc)
                next_due = None
            except Exception:
                log.exception("Delivery worker loop failed; continuing")
                next_due = None
            wait = (
                self.idle_poll if next_due is None else max(0.0, min(self.idle_poll, next_due - self.clock()))
            )
            self._wake.wait(wait)
            self._wake.clear()


def _round_robin(groups: list[list[Item]]) -> list[list[Item]]:
    out: list[list[Item]] = []
    while any(groups):
        out.append([g.pop(0) for g in groups if g])
    return out

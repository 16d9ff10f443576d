"""The delivery worker: claims due outbox items, sends them downstream, records the outcome.

Outcomes per failure class:
- success (event created, run created or already existing): delivered;
- the request itself was refused (400/422: a bug or a mismatch like partition keys to
  Airflow < 3.2): dead at once, with the reason — resending cannot help;
- anything else (unreachable, 5xx, 429, timeouts, 401/403, asset or DAG missing during a
  deploy, connection not configured yet): retried with exponential backoff and jitter,
  honouring ``Retry-After``, until ``retry_horizon`` has passed, then dead.

Asset events are resent only after checking the target's events since the item was enqueued
for the item's ``xdeps_event_id``, so a retry after an ambiguous failure never creates a
second event.

Leases: several workers (api-server, scheduler, replicas) share one outbox, and an item whose
lease runs out may be claimed by another worker. So a worker claims only what its senders can
finish in half a lease (measured send time), renews the leases of the items it holds every third
of a lease while the batch runs, and never sends an item whose lease it no longer holds: that
item belongs to the worker that took it over, which checks downstream before it sends.

Outcomes are written in batches (:meth:`Outbox.finish_many`, gathered by
:class:`~astro_xdeps.outbox.outcome_batch.OutcomeBatch`), and an item is done (its lease let go)
only once its outcome is durable. A crash in between leaves the item leased; it comes back when
the lease runs out, ``attempts`` raised, so the next try looks downstream before sending again.

A target that refuses connections gets its breaker opened
(:mod:`~astro_xdeps.outbox.breakers`): none of its items are claimed until a probe is due, and
then one.

Delivered items are purged after ``purge_after`` seconds (``[astro_xdeps] delivered_retention``),
once per ``purge_interval``, by the worker's thread.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from astro_xdeps.exceptions import (
    AuthError,
    ConfigError,
    NotFoundError,
    RequestRejected,
    TransientError,
    XdepsError,
)
from astro_xdeps.outbox import pacing
from astro_xdeps.outbox.breakers import Breakers
from astro_xdeps.outbox.models import Item, Outcome
from astro_xdeps.outbox.outcome_batch import DrainStats, OutcomeBatch
from astro_xdeps.outbox.sending import ClientPool, send_item
from astro_xdeps.outbox.store import Outbox, new_owner_id

log = logging.getLogger(__name__)

# What one send is assumed to take before the worker has measured one (sizes the first claim).
ASSUMED_SEND_SECONDS = 1.0
# After an enqueue wakes the worker, or once it has delivered its backlog, it waits this long
# before it claims, so that items arriving together share one claim and one outcome write
# instead of one each: at 500 events/s, ~10 per claim instead of 1. Each write is one a
# listener's hook in the same process may have to wait behind.
CLAIM_GATHER_SECONDS = 0.02
# Sends faster than this on average go out from the worker's own thread, one at a time (see
# DeliveryWorker._sends_here); slower ones from ``concurrency`` sender threads.
SEND_HERE_BELOW_SECONDS = 0.005


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
    # Delete delivered items this many seconds after delivery (None or 0: keep them forever).
    purge_after: float | None = 7 * 24 * 3600.0
    purge_interval: float = 3600.0
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        if not self.lease_seconds > 0:
            raise ValueError(f"lease_seconds must be positive, got {self.lease_seconds}")
        if self.purge_after is not None and self.purge_after < 0:
            raise ConfigError(
                f"[astro_xdeps] delivered_retention must be 0 (keep forever) or a number of seconds, "
                f"got {self.purge_after:g}."
            )
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = self._new_pool()
        self._cancelled = threading.Event()  # set by stop(): the senders send nothing more
        # Leases this worker holds: item id -> lease expiry as last written by this worker.
        self._held: dict[int, float] = {}
        self._held_lock = threading.Lock()
        self._send_seconds: float | None = None  # moving average of one send's duration
        self._next_purge = 0.0  # time.monotonic() of the next purge
        # Targets that refused connections: their items are not claimed until a probe is due.
        self._breakers = Breakers(
            lambda trips: backoff_delay(trips, base=self.backoff_base, maximum=self.backoff_max)
        )

    # -- one batch ---------------------------------------------------------------------------
    def claim_limit(self) -> int:
        """How many items to claim: what ``concurrency`` senders finish in half a lease.

        Until a send has been measured, a send is assumed to take :data:`ASSUMED_SEND_SECONDS`.
        """
        senders = max(1, self.concurrency)
        per_send = ASSUMED_SEND_SECONDS if self._send_seconds is None else self._send_seconds
        fits = int(senders * (self.lease_seconds / 2) / max(per_send, 1e-3))
        return max(1, min(self.batch_size, fits))

    def deliver_due(self) -> DrainStats:
        """Claim one batch of due items and deliver them; returns what happened."""
        now = self.clock()
        items = self.outbox.claim(
            self.owner,
            limit=self.claim_limit(),
            lease_seconds=self.lease_seconds,
            now=now,
            exclude_targets=self._breakers.open_targets(),
        )
        items += self._claim_probes(now)
        stats = DrainStats()
        if not items:
            return stats
        with self._held_lock:
            for item in items:
                self._held[item.id] = now + self.lease_seconds
        by_target: dict[str, list[Item]] = defaultdict(list)
        for item in items:
            by_target[item.target].append(item)
        # Interleave targets so one slow deployment does not hold back the others.
        ordered = [item for group in _round_robin(list(by_target.values())) for item in group]
        down: set[str] = set()
        batch = OutcomeBatch(len(items))
        batch_done = threading.Event()
        renewer: threading.Thread | None = None
        lock = threading.Lock()
        queue = deque(ordered)
        cancelled = self._cancelled
        try:
            # This thread sends while that is as fast (see _sends_here), writing outcomes between
            # sends. While sends are fast the batch ends long before a third of a lease, so no
            # thread renews the leases; otherwise one does, from the first slow send on.
            while queue and self._sends_here(len(queue)):
                if cancelled.is_set():
                    _skip_rest(queue, batch)
                    break
                if renewer is None and not self._sends_fast():
                    renewer = self._start_renewal(batch_done)
                self._deliver_into(batch, queue.popleft(), down, lock)
                self._record(batch, stats, final=False)
            if queue:
                # Sends wait on the network: the sender threads take the next item until none is
                # left (one hand-over per sender and batch).
                if renewer is None:
                    renewer = self._start_renewal(batch_done)
                for _ in range(min(self.concurrency, len(queue))):
                    sender = self._pool.submit(self._send_queued, queue, batch, down, lock, cancelled)
                    # stop() cancels the senders that have not started: what they would have sent is skipped.
                    sender.add_done_callback(lambda f: f.cancelled() and _skip_rest(queue, batch))
            while not self._record(batch, stats, final=True):
                pass
        finally:
            batch_done.set()
            if renewer is not None:
                renewer.join()
            with self._held_lock:
                for item in items:
                    self._held.pop(item.id, None)
        return stats

    def _claim_probes(self, now: float) -> list[Item]:
        """One item of each target whose breaker's probe is due: its send is the probe.

        A target with nothing due has nothing to hold back: its breaker closes. Its items past
        the retry horizon are dead first, as a send would have found them.
        """
        probes: list[Item] = []
        for target in self._breakers.probes_due(now):
            dead = self.outbox.give_up(
                target,
                started_before=now - self.retry_horizon,
                reason=self._gave_up("the target was unreachable"),
                now=now,
            )
            if dead:
                log.error(
                    "%d outbox item(s) to %s are dead: the target was unreachable for %g h",
                    dead,
                    target,
                    self.retry_horizon / 3600,
                )
            claimed = self.outbox.claim(
                self.owner, limit=1, lease_seconds=self.lease_seconds, now=now, targets=[target]
            )
            if not claimed:
                self._breakers.reset(target)
            probes += claimed
        return probes

    def _sends_here(self, left: int) -> bool:
        """Whether the worker's own thread sends the next of ``left`` items, not the sender threads.

        Yes with one sender or one item left, and while a send takes under
        :data:`SEND_HERE_BELOW_SECONDS`: such a send waits on this process's CPU (the GIL), not on
        the network, so more threads would not deliver faster (measured: 1,492 events/s with one,
        1,491 with four, to a stub answering at once); they would only contend with each other
        and with a listener's hook in the same process.
        """
        return self.concurrency <= 1 or left <= 1 or self._sends_fast()

    def _sends_fast(self) -> bool:
        return self._send_seconds is not None and self._send_seconds < SEND_HERE_BELOW_SECONDS

    def _start_renewal(self, batch_done: threading.Event) -> threading.Thread:
        renewer = threading.Thread(
            target=self._renew_while, args=(batch_done,), name="xdeps-lease-renewal", daemon=True
        )
        renewer.start()
        return renewer

    def _send_queued(
        self,
        queue: deque[Item],
        batch: OutcomeBatch,
        down: set[str],
        lock: threading.Lock,
        cancelled: threading.Event,
    ) -> None:
        """In a sender thread: deliver the batch's items one by one until none is left.

        After stop() (``cancelled``) the items not started yet are skipped, not sent.
        """
        while not cancelled.is_set():
            try:
                item = queue.popleft()
            except IndexError:
                return
            self._deliver_into(batch, item, down, lock)
        _skip_rest(queue, batch)

    def _deliver_into(self, batch: OutcomeBatch, item: Item, down: set[str], lock: threading.Lock) -> None:
        """In a sender thread: deliver ``item`` and hand its outcome to the batch (never raises)."""
        outcome: Outcome | None = None
        try:
            outcome = self._deliver_one(item, down, lock)
        except Exception:  # _deliver_one turns every send error into an outcome: this is a bug
            log.exception("Outbox item %s: delivery failed unexpectedly; its lease will run out", item.id)
        finally:
            batch.add(item, outcome)

    def _record(self, batch: OutcomeBatch, stats: DrainStats, *, final: bool) -> bool:
        """Write the outcomes that are due (see :class:`OutcomeBatch`); True when all are written.

        ``final``: wait for the senders. The items whose outcome is durable are let go.
        """
        items, outcomes, skipped = batch.take(wait=final)
        stats.skipped += skipped
        if outcomes:
            self.outbox.finish_many(self.owner, outcomes)
            for outcome in outcomes:
                stats.count(outcome)
        with self._held_lock:
            for item in items:
                self._held.pop(item.id, None)
        return batch.all_taken

    def _renew_while(self, batch_done: threading.Event) -> None:
        """Every third of a lease until the batch is done, extend the leases still held."""
        pacing.background_thread()
        while not batch_done.wait(self.lease_seconds / 3):
            self.renew_leases()

    def renew_leases(self) -> None:
        """Extend the leases of every item this worker holds; forget the ones it lost."""
        with self._held_lock:
            ids = list(self._held)
        if not ids:
            return
        now = self.clock()
        try:
            kept = self.outbox.renew(ids, self.owner, lease_seconds=self.lease_seconds, now=now)
        except XdepsError as exc:
            # Not fatal: each item's lease is checked again right before it is sent.
            log.warning("Delivery worker could not renew its leases: %s", exc)
            return
        with self._held_lock:
            for item_id in ids:
                if item_id not in self._held:
                    continue  # finished meanwhile
                if item_id in kept:
                    self._held[item_id] = now + self.lease_seconds
                else:
                    del self._held[item_id]
                    log.warning(
                        "Outbox item %s: lease lost to another worker; it will not be sent from here", item_id
                    )

    def _holds_lease(self, item: Item) -> bool:
        """True if this worker still holds the item's lease for at least half a lease from now.

        A lease closer to its end is renewed first (one write); one that another worker took over
        is not ours any more.
        """
        with self._held_lock:
            until = self._held.get(item.id)
        if until is None:
            return False
        now = self.clock()
        if until - now >= self.lease_seconds / 2:
            return True
        try:
            kept = self.outbox.renew([item.id], self.owner, lease_seconds=self.lease_seconds, now=now)
        except XdepsError as exc:
            log.warning("Outbox item %s: could not renew its lease, not sending now: %s", item.id, exc)
            return False
        with self._held_lock:
            if item.id in kept:
                self._held[item.id] = now + self.lease_seconds
                return True
            self._held.pop(item.id, None)
        return False

    def purge_if_due(self) -> int:
        """Delete items delivered longer than ``purge_after`` ago, at most once per ``purge_interval``.

        Returns how many were deleted. Their idempotency keys go with them, so a duplicate of an
        older event (a webhook sent again) is no longer recognised: the retention is the dedupe window.
        """
        if not self.purge_after or time.monotonic() < self._next_purge:
            return 0
        self._next_purge = time.monotonic() + self.purge_interval
        purged = self.outbox.purge_delivered(self.purge_after, now=self.clock())
        if purged:
            log.info("Purged %d outbox item(s) delivered more than %gs ago", purged, self.purge_after)
        return purged

    def drain(self, *, timeout: float | None = None) -> DrainStats:
        """Deliver until nothing is due (or ``timeout`` passed). Items scheduled later stay."""
        self.purge_if_due()
        total = DrainStats()
        deadline = None if timeout is None else time.monotonic() + timeout
        while deadline is None or time.monotonic() < deadline:
            stats = self.deliver_due()
            total.add(stats)
            if stats.handled == 0:
                break
        return total

    def _deliver_one(self, item: Item, down: set[str], lock: threading.Lock) -> Outcome | None:
        """Send ``item`` unless its lease was lost (None); return the outcome to record."""
        with lock:
            target_down = item.target in down
        if target_down:
            # The target just failed to answer: don't spend a timeout per item on it.
            return self._fail(item, "not sent: the target was unreachable earlier in this batch", None)
        if not self._holds_lease(item):
            # Another worker took it over after the lease ran out; it checks downstream and sends.
            log.info("Outbox item %s: lease no longer held by %s; not sending it", item.id, self.owner)
            return None
        started = time.monotonic()
        try:
            result = self._send(item)
        except RequestRejected as exc:
            self._answered(item.target)
            log.error("Outbox item %s to %s is dead: %s", item.id, item.target, exc)
            return Outcome.dead(item.id, f"rejected by the target, not retried: {exc}")
        except (TransientError, NotFoundError, AuthError, ConfigError) as exc:
            if isinstance(exc, TransientError) and exc.status is None and not exc.ambiguous:
                # Unreachable (refused, connect timeout), not merely busy: skip its other items,
                # and claim none of its items until the breaker's probe is due.
                with lock:
                    first = item.target not in down
                    down.add(item.target)
                if first:
                    delay = self._breakers.trip(item.target, self.clock())
                    log.warning(
                        "Target %s is unreachable: its items wait %.0fs before the next try",
                        item.target,
                        delay,
                    )
            elif not isinstance(exc, ConfigError):
                self._answered(item.target)  # with an error, but it answered
            if isinstance(exc, (AuthError, ConfigError)):
                self.clients.invalidate(item.target)  # re-read the connection next time
            return self._fail(item, str(exc), getattr(exc, "retry_after", None))
        except Exception as exc:  # never lose an item to a bug: keep it and retry
            log.exception("Unexpected error delivering outbox item %s", item.id)
            return self._fail(item, f"{type(exc).__name__}: {exc}", None)
        finally:
            self._record_send_time(time.monotonic() - started)
        self._answered(item.target)
        return Outcome.delivered(item.id, result)

    def _answered(self, target: str) -> None:
        """``target`` answered a request: its breaker (if open) closes."""
        if self._breakers.reset(target):
            log.info("Target %s is reachable again; delivering its items", target)

    def _gave_up(self, error: str) -> str:
        """The last error of an item past the retry horizon: a send's, or a breaker's probe's."""
        return f"gave up after {self.retry_horizon / 3600:g} h of retries: {error}"

    def _record_send_time(self, seconds: float) -> None:
        with self._held_lock:
            previous = self._send_seconds
            self._send_seconds = seconds if previous is None else 0.8 * previous + 0.2 * seconds

    def _fail(self, item: Item, error: str, retry_after: float | None) -> Outcome:
        now = self.clock()
        if now - item.horizon_start > self.retry_horizon:
            log.error(
                "Outbox item %s to %s is dead after %d attempts: %s",
                item.id,
                item.target,
                item.attempts,
                error,
            )
            return Outcome.dead(item.id, self._gave_up(error))
        delay = backoff_delay(
            item.attempts, base=self.backoff_base, maximum=self.backoff_max, retry_after=retry_after
        )
        log.warning(
            "Outbox item %s to %s failed (attempt %d), retry in %.0fs: %s",
            item.id,
            item.target,
            item.attempts,
            delay,
            error,
        )
        return Outcome.failed(item.id, error, now + delay)

    def _send(self, item: Item) -> dict[str, Any]:
        return send_item(self.clients.get(item.target), item)

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
        self._cancelled.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        # A fresh (thread-less until used) pool, so start() or drain() after stop() still deliver.
        self._pool = self._new_pool()
        self._cancelled = threading.Event()

    def _new_pool(self) -> ThreadPoolExecutor:
        """The sender threads: background threads (:mod:`~astro_xdeps.outbox.pacing`)."""
        return ThreadPoolExecutor(
            max_workers=max(1, self.concurrency),
            thread_name_prefix="xdeps-send",
            initializer=pacing.background_thread,
        )

    def _next_due(self) -> float | None:
        """When the next item may be claimed: the earliest due item of a target without an open
        breaker, or the earliest probe (when that target has nothing due, its probe closes it)."""
        due = self.outbox.next_due_at(exclude_targets=self._breakers.open_targets())
        probe = self._breakers.next_probe()
        return min((t for t in (due, probe) if t is not None), default=None)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        pacing.background_thread()
        while not self._stop.is_set():
            try:
                self.purge_if_due()
            except XdepsError as exc:
                log.warning("Delivery worker could not purge delivered items: %s", exc)
            except Exception:
                log.exception("Delivery worker purge failed; continuing")
            try:
                stats = self.deliver_due()
                if stats.handled:
                    if stats.handled < self.claim_limit():
                        # The backlog is out: let what arrives meanwhile gather for one claim.
                        self._stop.wait(CLAIM_GATHER_SECONDS)
                    continue  # more may be due right away
                next_due = self._next_due()
            except XdepsError as exc:
                log.warning("Delivery worker: %s", exc)
                next_due = None
            except Exception:
                log.exception("Delivery worker loop failed; continuing")
                next_due = None
            wait = (
                self.idle_poll if next_due is None else max(0.0, min(self.idle_poll, next_due - self.clock()))
            )
            if self._wake.wait(wait):
                self._stop.wait(CLAIM_GATHER_SECONDS)  # woken by an enqueue: let the next ones join it
            self._wake.clear()


def _skip_rest(queue: deque[Item], batch: OutcomeBatch) -> None:
    """The items left in ``queue`` are not sent: nothing to record for them."""
    while True:
        try:
            item = queue.popleft()
        except IndexError:
            return
        batch.add(item, None)


def _round_robin(groups: list[list[Item]]) -> list[list[Item]]:
    out: list[list[Item]] = []
    while any(groups):
        out.append([g.pop(0) for g in groups if g])
    return out

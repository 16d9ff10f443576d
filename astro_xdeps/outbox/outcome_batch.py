"""The outcomes of one claimed batch: gathered so that several share one write transaction, and counted."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from astro_xdeps.outbox.models import DEAD, DELIVERED, Item, Outcome

# Outcomes wait at most OUTCOME_GATHER_SECONDS for others to share their write transaction, and
# at most OUTCOME_BATCH of them share one. Each write costs more than its rows (GIL hand-overs at
# every SQLite call, the write lock that a listener's hook in the same process may wait behind),
# so fewer, fuller writes deliver faster and slow the hooks less: at 50 ms per send and four
# senders, 20 ms of gathering still meant ~50 writes a second. An item waits at most this much
# longer to be marked delivered; its lease covers it meanwhile.
OUTCOME_GATHER_SECONDS = 0.1
OUTCOME_BATCH = 200


@dataclass
class DrainStats:
    """What became of the items a worker claimed: the outcomes it recorded, and the ones it skipped."""

    delivered: int = 0
    retried: int = 0
    dead: int = 0
    # Claimed but not sent: the lease was lost to another worker, or stop() cancelled the send.
    skipped: int = 0

    def add(self, other: DrainStats) -> None:
        self.delivered += other.delivered
        self.retried += other.retried
        self.dead += other.dead
        self.skipped += other.skipped

    def count(self, outcome: Outcome) -> None:
        if outcome.state == DELIVERED:
            self.delivered += 1
        elif outcome.state == DEAD:
            self.dead += 1
        else:
            self.retried += 1

    @property
    def handled(self) -> int:
        return self.delivered + self.retried + self.dead + self.skipped


class OutcomeBatch:
    """The outcomes of one claimed batch, handed over by the senders and taken to be written.

    :meth:`take` hands out what is due: everything once all senders are done, otherwise whatever
    has gathered once the oldest waited :data:`OUTCOME_GATHER_SECONDS` or :data:`OUTCOME_BATCH`
    are waiting, so many outcomes share one transaction and each is still written promptly.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._added = 0
        self._taken = 0
        self._items: list[Item] = []
        self._outcomes: list[Outcome] = []
        self._skipped = 0
        self._first_at: float | None = None
        self._ready = threading.Condition()

    @property
    def all_taken(self) -> bool:
        return self._taken == self._size

    def add(self, item: Item, outcome: Outcome | None) -> None:
        """One item is finished: ``outcome`` to record, or None (not sent, nothing to record)."""
        with self._ready:
            self._added += 1
            self._items.append(item)
            if outcome is None:
                self._skipped += 1
            else:
                self._outcomes.append(outcome)
                if self._first_at is None:
                    self._first_at = time.monotonic()
                    self._ready.notify()  # the writer starts waiting for company
            if self._added == self._size or len(self._outcomes) >= OUTCOME_BATCH:
                self._ready.notify()

    def take(self, *, wait: bool) -> tuple[list[Item], list[Outcome], int]:
        """The items finished since the last take, their outcomes and how many were skipped.

        ``wait``: block until some are due; otherwise return at once (maybe nothing).
        """
        with self._ready:
            while True:
                due = self._added == self._size or len(self._outcomes) >= OUTCOME_BATCH
                left = None
                if not due and self._first_at is not None:
                    left = self._first_at + OUTCOME_GATHER_SECONDS - time.monotonic()
                    due = left <= 0
                if due or not wait:
                    break
                self._ready.wait(left)
            if not due:
                return [], [], 0
            items, outcomes, skipped = self._items, self._outcomes, self._skipped
            self._items, self._outcomes, self._skipped, self._first_at = [], [], 0, None
            self._taken += len(items)
            return items, outcomes, skipped

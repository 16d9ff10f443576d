"""Targets found unreachable: the delivery worker claims none of their items until a probe is due.

Why: while a deployment refuses connections, every claim of its items costs an outbox write, a
refused connection, an exception and a reschedule per item, and new items keep arriving. Those
writes and that Python are what a listener's hook in the same process waits behind, and they buy
nothing. (Within one batch, the items after the first refusal were already not sent; they were
still claimed and rescheduled one by one.)

So the first refusal in a batch opens the target's breaker: its items stay pending, untouched,
until the probe time. Then the worker claims one of them, and its send is the probe: an answer
closes the breaker (the rest follow in the next batch), another refusal opens it again for about
twice as long (the worker's backoff, up to its ``backoff_max``). A target with nothing due at
the probe time has nothing to hold back: its breaker closes. Nothing is lost or reordered: the
items keep their place, their attempts and their retry horizon.

Only "unreachable" opens a breaker (connection refused, connect timeout): a downstream that
answers, even with 5xx or 429, or that hangs after accepting, keeps its per-item retries.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Breakers:
    """Per target: when its next probe is due and how often it has failed in a row (thread-safe)."""

    def __init__(self, delay: Callable[[int], float]) -> None:
        """``delay(trips)``: seconds until the probe after the ``trips``-th refusal in a row."""
        self._delay = delay
        self._open: dict[str, tuple[float, int]] = {}  # target -> (probe_at, trips)
        self._lock = threading.Lock()

    def trip(self, target: str, now: float) -> float:
        """``target`` refused: open (or re-open) its breaker; returns the seconds until its probe."""
        with self._lock:
            trips = self._open.get(target, (0.0, 0))[1] + 1
            delay = self._delay(trips)
            self._open[target] = (now + delay, trips)
        return delay

    def reset(self, target: str) -> bool:
        """``target`` answered (or has nothing due): close its breaker; True if it was open."""
        if target not in self._open:  # the common case, without the lock: a send to a healthy target
            return False
        with self._lock:
            return self._open.pop(target, None) is not None

    def open_targets(self) -> list[str]:
        """The targets whose breaker is open, sorted: their items are claimed only as probes."""
        with self._lock:
            return sorted(self._open)

    def probes_due(self, now: float) -> list[str]:
        """The targets whose probe is due at ``now``, sorted."""
        with self._lock:
            return sorted(t for t, (probe_at, _) in self._open.items() if probe_at <= now)

    def next_probe(self) -> float | None:
        """When the earliest probe is due (maybe past); None if no breaker is open."""
        with self._lock:
            return min((p for p, _ in self._open.values()), default=None)

"""Background delivery must never slow the thread that records a task's success.

The listener's hook (``listeners.assets.forward``) runs on Airflow's own thread while it records a
task's success, and the delivery worker runs in the same process. Both need the GIL, the CPU and
the outbox's one writer, so every Python step the worker takes while a hook is in flight can
delay the hook. So a hook marks itself in flight (:func:`foreground`), and a background thread
(one that called :func:`background_thread`) waits at its next checkpoint
(:func:`yield_to_foreground`: before each outbox write, before each request a sender starts,
and before it reads a response that has arrived, see ``sending.PacedAdapter``) until no hook is
in flight, at most :data:`MAX_YIELD_SECONDS` per checkpoint so that a steady stream of hooks
cannot stall delivery.

A hook never waits on a background thread's checkpoint: the checkpoint comes before a write is
queued, while the background thread holds none of the writer's state. What a hook can still wait
for is a worker's write already begun (one commit at a time).

Lowering the background threads' CPU priority (per-thread nice) was measured too: no gain once
pacing was on, and a lowered thread that holds the GIL or SQLite's write lock (which other
processes' hooks wait on) would hold it longer on a busy machine. So priorities stay as they are.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

# The longest a background thread waits at one checkpoint for the hooks in flight.
MAX_YIELD_SECONDS = 0.02

_local = threading.local()
_cond = threading.Condition(threading.Lock())
_in_flight = 0  # hooks running now (read without the lock: a stale read only mistimes one wait)


def _reset_after_fork() -> None:
    """In a forked child only the forking thread exists: no hook is in flight, the lock is fresh."""
    global _cond, _in_flight
    _cond = threading.Condition(threading.Lock())
    _in_flight = 0


os.register_at_fork(after_in_child=_reset_after_fork)


@contextlib.contextmanager
def foreground() -> Iterator[None]:
    """Mark the calling hook in flight: background threads wait at their checkpoints meanwhile."""
    global _in_flight
    with _cond:
        _in_flight += 1
    try:
        yield
    finally:
        with _cond:
            _in_flight -= 1
            if not _in_flight:
                _cond.notify_all()


def in_flight() -> int:
    """How many hooks are in flight in this process now."""
    return _in_flight


def background_thread() -> None:
    """Called first thing in a background thread: it yields to hooks from now on."""
    _local.background = True


def is_background() -> bool:
    return getattr(_local, "background", False)


def yield_to_foreground() -> None:
    """In a background thread: wait while a hook is in flight (at most MAX_YIELD_SECONDS)."""
    if not _in_flight or not is_background():
        return
    with _cond:
        _cond.wait_for(lambda: not _in_flight, MAX_YIELD_SECONDS)

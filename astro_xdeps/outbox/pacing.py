"""Background delivery must never slow the thread that records a task's success.

The listener's hook (``listeners.assets.forward``) runs on Airflow's own thread while it records a
task's success, and the delivery worker runs in the same process. Both need the GIL, the CPU and
the outbox's one writer, so every Python step the worker takes while a hook is in flight can
delay the hook. Two measures keep the hook first:

- **Pacing.** A hook marks itself in flight (:func:`foreground`); a background thread (one that
  called :func:`background_thread`) waits at its next checkpoint (:func:`yield_to_foreground`:
  before each outbox write, before each request a sender starts) until no hook is in flight, at
  most :data:`MAX_YIELD_SECONDS` per checkpoint so a steady stream of hooks cannot stall delivery.
- **CPU priority.** On Linux nice is per thread: a background thread lowers its own priority by
  :data:`BACKGROUND_NICE`, so when the cores are busy the hook's thread runs first. A new thread
  inherits its creator's nice and an unprivileged process cannot raise it back, so the outbox
  writer never starts a thread from a worker's: its checkpoint thread starts when the outbox
  opens, its asyncio leader from an event loop's thread.
  Elsewhere (no per-thread nice): nothing, a debug log.

A hook never waits on a background thread's checkpoint: the checkpoint comes before a write is
queued, while the background thread holds none of the writer's state. It can still wait for a
worker's write that began before it (one commit at a time), which is why those stay short.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

# How much lower (nice) a background thread's priority is than the process's.
BACKGROUND_NICE = 10
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
    """Called first thing in a background thread: lower its priority and make it yield to hooks."""
    _local.background = True
    lower_priority()


def is_background() -> bool:
    return getattr(_local, "background", False)


def yield_to_foreground() -> None:
    """In a background thread: wait while a hook is in flight (at most MAX_YIELD_SECONDS)."""
    if not _in_flight or not is_background():
        return
    with _cond:
        _cond.wait_for(lambda: not _in_flight, MAX_YIELD_SECONDS)


def lower_priority() -> None:
    """Lower the calling thread's CPU priority to the process's nice + BACKGROUND_NICE (Linux).

    Never raises: where a thread's priority cannot be set it stays as it is.
    """
    if not sys.platform.startswith("linux"):  # elsewhere PRIO_PROCESS takes a process id, not a thread's
        log.debug("astro-xdeps: per-thread priority is Linux only; background threads keep the process's")
        return
    try:
        target = min(19, os.getpriority(os.PRIO_PROCESS, os.getpid()) + BACKGROUND_NICE)
        tid = threading.get_native_id()
        if os.getpriority(os.PRIO_PROCESS, tid) < target:
            os.setpriority(os.PRIO_PROCESS, tid, target)
    except OSError as exc:
        log.debug("astro-xdeps: could not lower a background thread's priority: %s", exc)

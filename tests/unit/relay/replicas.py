"""Relay replicas racing each other: each on its own outbox, their state writes made to overlap."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from astro_xdeps.outbox import Outbox
from astro_xdeps.relay.engine import RelayEngine
from astro_xdeps.relay.events import StateEvent
from astro_xdeps.relay.rules import RelayConfig
from astro_xdeps.relay.state import state_table


def stalled_replicas(open_outbox: Callable[[], Outbox], config: RelayConfig, n: int = 2) -> list[RelayEngine]:
    """``n`` engines, each on its own outbox, whose transactions stall right after inserting into
    the relay state until every replica has inserted too, or 2 s passed.

    Unserialised, none sees the others' uncommitted rows; serialised (as it should be), the
    barrier breaks because one transaction waits for another to end.
    """
    barrier = threading.Barrier(n, timeout=2)

    def stall(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith(f"INSERT INTO {state_table.name.upper()}"):
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait()

    engines = []
    for _ in range(n):
        replica = open_outbox()
        sa.event.listen(replica.engine, "after_cursor_execute", stall)
        engines.append(RelayEngine(config, replica))
    return engines


def ingest_together(pairs: Sequence[tuple[RelayEngine, StateEvent]], now: float) -> dict[str, Any]:
    """Each engine ingests its event in a thread of its own; the result (or exception) by event id."""
    results: dict[str, Any] = {}

    def run(engine: RelayEngine, event: StateEvent) -> None:
        try:
            results[event.id] = engine.ingest(event, now=now)
        except BaseException as exc:  # the caller asserts there is none
            results[event.id] = exc

    threads = [threading.Thread(target=run, args=pair) for pair in pairs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results

"""Relay replicas racing each other: each on its own outbox, their writes made to overlap."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from astro_xdeps.outbox import Outbox

Statement = Callable[[str, Any], bool]


def inserts_into(table: str, *, with_value: str | None = None) -> Statement:
    """Matches an INSERT into ``table`` (whose parameters mention ``with_value``, if given)."""

    def matches(statement: str, parameters: Any) -> bool:
        if f"INSERT INTO {table.upper()}" not in statement.upper():
            return False
        return with_value is None or with_value.upper() in str(parameters).upper()

    return matches


def stall_together(outboxes: Sequence[Outbox], after: Statement) -> None:
    """Each outbox's transaction stalls right after a statement ``after`` matches, until every
    outbox has run one too, or 2 s passed.

    Unserialised, none sees the others' uncommitted rows; serialised (as it should be), the
    barrier breaks because one transaction waits for another to end.
    """
    barrier = threading.Barrier(len(outboxes), timeout=2)

    def stall(conn, cursor, statement, parameters, context, executemany) -> None:
        if after(statement, parameters):
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait()

    for outbox in outboxes:
        sa.event.listen(outbox.engine, "after_cursor_execute", stall)


def run_together(calls: Sequence[Callable[[], Any]]) -> list[Any]:
    """Each call in a thread of its own; their results (or exceptions) in the order given."""
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # the caller asserts there is none
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results

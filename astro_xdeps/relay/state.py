"""Durable state of stateful rules (when_all, at_least, count): what matched, inside the window.

Kept in the outbox's database (same file or PostgreSQL), in table ``xdeps_relay_state``. A
firing marks the events it used as consumed instead of deleting them, so a webhook delivered
again after the firing cannot count towards the next one. Rows older than the window expire.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import sqlalchemy as sa

from astro_xdeps.exceptions import RelayStateError
from astro_xdeps.outbox.db import DB_ERRORS, Database
from astro_xdeps.relay.firing import Decision, Match, decide, match_time
from astro_xdeps.relay.rules import Rule
from astro_xdeps.state_events import StateEvent

_metadata = sa.MetaData()
state_table = sa.Table(
    "xdeps_relay_state",
    _metadata,
    sa.Column("rule", sa.String(100), primary_key=True),
    sa.Column("condition", sa.Integer, primary_key=True),
    # StateEvent.key: the event's id within its source (at most 250 characters).
    sa.Column("event_id", sa.String(250), primary_key=True),
    sa.Column("occurred_at", sa.Float, nullable=False),
    sa.Column("consumed", sa.Boolean, nullable=False, default=False),
    sa.Column("event", sa.Text, nullable=False),
    # The events of the firing this row was consumed by (JSON), so a repeat can re-plan it.
    sa.Column("firing", sa.Text, nullable=True),
)


T = TypeVar("T")


def _pending(rule: Rule, now: float) -> tuple[sa.ColumnElement[bool], ...]:
    """Where-clauses for the unconsumed matches of ``rule`` inside its window."""
    assert rule.within_seconds is not None
    t = state_table
    return (t.c.rule == rule.name, t.c.consumed.is_(False), t.c.occurred_at >= now - rule.within_seconds)


class CompanionTables:
    """A relay table beside the outbox's, in the same database and through the same writer.

    Created on first use; database errors become :class:`RelayStateError` (the relay answers
    503: retry), with the same message and hints as the outbox's own.
    """

    _subject = "The relay"  # how an error message names this store

    def __init__(self, db: Database, metadata: sa.MetaData, table: str) -> None:
        self._database = db
        with self._errors(f"create the {table} table"):
            db.create_schema(lambda conn: metadata.create_all(conn, checkfirst=True))

    @contextmanager
    def _errors(self, op: str) -> Iterator[None]:
        try:
            yield
        except DB_ERRORS as exc:
            raise RelayStateError(self._database.message(self._subject, op, exc)) from exc

    @contextmanager
    def _read(self, op: str) -> Iterator[sa.Connection]:
        with self._errors(op), self._database.read() as conn:
            yield conn

    def _write(self, op: str, fn: Callable[[sa.Connection], T]) -> T:
        with self._errors(op):
            return self._database.write(fn)


class RelayState(CompanionTables):
    """Records matches of stateful rules and decides, atomically, when one fires."""

    _subject = "The relay state"

    def __init__(self, db: Database) -> None:
        super().__init__(db, _metadata, "relay state")

    def record(
        self, rule: Rule, conditions: Sequence[int], event: StateEvent, now: float
    ) -> Decision[StateEvent]:
        """Record ``event`` for the matched ``conditions`` and decide (``firing.decide``) whether
        the rule fires: the decision's ``firing`` are its events, None while it waits.

        The events of a firing are marked consumed in the same transaction, so exactly one
        caller gets a given firing.
        """
        assert rule.within_seconds is not None
        window_start = now - rule.within_seconds
        occurred = match_time(rule, event, now)
        t = state_table

        def op(conn: sa.Connection) -> Decision[StateEvent]:
            if conn.dialect.name == "postgresql":
                # Replicas sharing the database take turns per rule (SQLite: BEGIN IMMEDIATE does
                # this). Otherwise two concurrent events each miss the other's uncommitted row, and
                # neither fires.
                conn.execute(
                    sa.select(
                        sa.func.pg_advisory_xact_lock(sa.func.hashtext(state_table.name + ":" + rule.name))
                    )
                )
            conn.execute(sa.delete(t).where(t.c.rule == rule.name, t.c.occurred_at < window_start))
            fired_before = conn.execute(
                sa.select(t.c.firing).where(
                    t.c.rule == rule.name, t.c.event_id == event.key, t.c.firing.is_not(None)
                )
            ).first()
            if fired_before is not None:
                # A repeat of an event that already fired: the same firing again. Its actions
                # have the same idempotency keys, so this only re-enqueues what may have been
                # lost between this transaction and the outbox write.
                return Decision({}, [StateEvent.from_dict(e) for e in json.loads(fired_before.firing)])
            if occurred is not None:
                for idx in conditions:
                    exists = conn.execute(
                        sa.select(t.c.event_id).where(
                            t.c.rule == rule.name, t.c.condition == idx, t.c.event_id == event.key
                        )
                    ).first()
                    if exists is None:
                        conn.execute(
                            sa.insert(t).values(
                                rule=rule.name,
                                condition=idx,
                                event_id=event.key,
                                occurred_at=occurred,
                                consumed=False,
                                event=json.dumps(event.to_dict()),
                            )
                        )
            rows = conn.execute(
                sa.select(t.c.condition, t.c.event_id, t.c.occurred_at, t.c.event)
                .where(*_pending(rule, now))
                .order_by(t.c.occurred_at, t.c.event_id)
            ).all()
            per_condition: dict[int, list[Match[str]]] = {}
            for row in rows:  # ordered by time
                per_condition.setdefault(row.condition, []).append(
                    Match(row.event_id, row.occurred_at, row.event)
                )
            decision = decide(rule, per_condition)
            if decision.firing is None:
                return Decision(decision.counts, None)
            chosen = decision.firing
            firing = [json.loads(m.event) for m in chosen]
            # Consume every pending match up to the firing: the rule starts over from here.
            conn.execute(
                sa.update(t)
                .where(t.c.rule == rule.name, t.c.consumed.is_(False), t.c.occurred_at <= chosen[-1].occurred)
                .values(consumed=True, firing=json.dumps(firing))
            )
            return Decision(decision.counts, [StateEvent.from_dict(e) for e in firing])

        return self._write("record an event", op)

    def pending_matches(self, rule: Rule, now: float) -> dict[int, list[Match[StateEvent]]]:
        """The unconsumed matches per condition inside the window, oldest first (for explain)."""
        t = state_table
        with self._read("read pending events") as conn:
            rows = conn.execute(
                sa.select(t.c.condition, t.c.event_id, t.c.occurred_at, t.c.event)
                .where(*_pending(rule, now))
                .order_by(t.c.occurred_at, t.c.event_id)
            ).all()
        out: dict[int, list[Match[StateEvent]]] = {}
        for row in rows:
            event = StateEvent.from_dict(json.loads(row.event))
            out.setdefault(row.condition, []).append(Match(row.event_id, row.occurred_at, event))
        return out

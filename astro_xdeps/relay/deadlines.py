"""Deadline (absence) rules: durable decisions per deadline, and the clock that makes them.

Table ``xdeps_relay_deadlines`` (the outbox's database) holds one row per rule and deadline
instant, keyed ``(rule, deadline)``. Whoever writes the row first decides the deadline:

- ``met``: an expected event happened inside the deadline's window (written on ingest);
- ``missed``: the clock found no such row ``grace`` after the deadline, and claimed it. Only the
  evaluator whose insert created the row fires the rule's ``then``; others (a second scheduler,
  a relay replica) find the row and do nothing;
- ``late``: a ``missed`` deadline whose event came afterwards (``on_late`` fired once);
- ``seen_after``: not decided yet (inside ``grace``), and an expected event that happened after
  the deadline has come. An in-time event turns it into ``met``; the clock into ``late``.

Row ``deadline = 0`` (``watching``) records when the rule was first evaluated: a deadline whose
window opened before that is not judged (nothing was watching it), so installing or renaming a
rule raises no false alarm. After a restart the rows are still there: a deadline that passed
while nothing ran is decided by the next tick, and one already decided is not decided again. The
clock judges the most recent deadline only; deadlines missed during a longer outage are not
reported one by one.

A claim and its outbox write are two transactions: ``enqueued`` is set after the write, and a
claim left without it (a crash in between) is enqueued again by the next tick. The actions'
idempotency keys come from the deadline, so that is never a second firing.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from astro_xdeps.outbox.db import Database
from astro_xdeps.relay.rules import Rule
from astro_xdeps.relay.state import CompanionTables
from astro_xdeps.state_events import DAG_RUN_MISSED_DEADLINE, DEADLINE_SOURCE, StateEvent

log = logging.getLogger(__name__)

WATCHING, MET, MISSED, LATE = "watching", "met", "missed", "late"
SEEN_AFTER = "seen_after"  # undecided yet, and an expected event came after it (late, if missed)
KEEP_SECONDS = 40 * 86400  # decided deadlines older than this are deleted

_metadata = sa.MetaData()
deadlines_table = sa.Table(
    "xdeps_relay_deadlines",
    _metadata,
    sa.Column("rule", sa.String(100), primary_key=True),
    # The deadline instant, unix seconds (cron instants are whole minutes); 0 for ``watching``.
    sa.Column("deadline", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("decided_at", sa.Float, nullable=False),
    sa.Column("event", sa.Text, nullable=True),  # the event that met it or came late (JSON)
    sa.Column("enqueued", sa.Boolean, nullable=False, default=False),
)


def _ts(instant: datetime) -> int:
    return int(instant.timestamp())


def _dt(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


@dataclass(frozen=True)
class Decision:
    """A missed deadline to act on: its event, whether this call claimed it, and a late firing."""

    missed: StateEvent
    created: bool
    late: list[StateEvent] | None = None


def missed_event(rule: Rule, deadline: datetime) -> StateEvent:
    """The ``dag_run.missed_deadline`` event of ``rule`` for ``deadline``: the same every time."""
    assert rule.deadline is not None
    cond = rule.conditions[0]
    opens, _ = rule.deadline.window(deadline)
    local = deadline.astimezone(rule.deadline.zone)
    expected = "/".join(cond.types)
    what = f"{cond.dag_id}.{cond.task_id}" if cond.task_id != "*" else cond.dag_id
    return StateEvent(
        id=f"{rule.name}@{deadline.isoformat()}",
        type=DAG_RUN_MISSED_DEADLINE,
        dag_id=cond.dag_id,
        task_id=None if cond.task_id == "*" else cond.task_id,
        deployment=None if any(c in cond.deployment for c in "*?[") else cond.deployment,
        occurred_at=deadline,
        message=f"no {expected} of {what} by {local:%Y-%m-%d %H:%M} {rule.deadline.timezone}",
        attributes={
            "deadline": deadline.isoformat(),
            "deadline_local": local.isoformat(),
            "window_opens": opens.isoformat(),
            "timezone": rule.deadline.timezone,
            "expected": expected,
        },
        source=DEADLINE_SOURCE,
    )


def _insert_ignore(conn: sa.Connection, values: dict) -> bool:
    """Insert a row unless its key exists; True when this call created it."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(deadlines_table).values(**values).on_conflict_do_nothing()
    return conn.execute(stmt).rowcount == 1


class DeadlineState(CompanionTables):
    """The durable decisions of deadline rules; safe across threads, processes and replicas."""

    _subject = "The relay's deadlines"

    def __init__(self, db: Database) -> None:
        super().__init__(db, _metadata, "deadlines")

    def _row(self, conn: sa.Connection, rule: str, deadline: int) -> sa.Row | None:
        t = deadlines_table
        return conn.execute(sa.select(t).where(t.c.rule == rule, t.c.deadline == deadline)).first()

    def observe(self, rule: Rule, event: StateEvent, now: float) -> list[StateEvent] | None:
        """Record an expected ``event``: it meets its deadline, or comes late for a missed one.

        Returns ``[missed, event]`` when it is the first event after a missed deadline (the
        firing of ``on_late``; the same again for a repeat of that event), else None.
        """
        sched = rule.deadline
        assert sched is not None
        happened = min(event.occurred_at, _dt(now))  # a sender's clock ahead of ours moves nothing
        upcoming = sched.next_deadline(happened)
        opens, _ = sched.window(upcoming)
        t = deadlines_table
        key = dict(rule=rule.name)
        stored = json.dumps(event.to_dict())

        def op(conn: sa.Connection) -> list[StateEvent] | None:
            if happened >= opens:
                met = dict(
                    key, deadline=_ts(upcoming), outcome=MET, decided_at=now, event=stored, enqueued=True
                )
                if not _insert_ignore(conn, met):
                    conn.execute(
                        sa.update(t)
                        .where(
                            t.c.rule == rule.name, t.c.deadline == _ts(upcoming), t.c.outcome == SEEN_AFTER
                        )
                        .values(outcome=MET, event=stored)
                    )
            previous = sched.previous_deadline(happened - timedelta(microseconds=1))
            # Late for the upcoming deadline (it happened in time but came after the clock
            # decided), else for the one before it.
            for deadline in (upcoming, previous):
                row = self._row(conn, rule.name, _ts(deadline))
                if row is None and deadline == previous:
                    # Not decided yet: if the clock finds it missed, this event is the late one.
                    _insert_ignore(
                        conn,
                        dict(key, deadline=_ts(previous), outcome=SEEN_AFTER, decided_at=now, event=stored),
                    )
                    return None
                if row is None or row.outcome not in (MISSED, LATE):
                    continue
                if row.outcome == LATE:
                    first = StateEvent.from_dict(json.loads(row.event))
                    return [missed_event(rule, deadline), event] if first.key == event.key else None
                won = conn.execute(
                    sa.update(t)
                    .where(t.c.rule == rule.name, t.c.deadline == _ts(deadline), t.c.outcome == MISSED)
                    .values(outcome=LATE, event=stored)
                ).rowcount
                return [missed_event(rule, deadline), event] if won == 1 else None

        return self._write("record a deadline event", op)

    def decide(self, rule: Rule, now: float) -> list[Decision]:
        """Judge the latest deadline of ``rule`` that is ``grace`` past; claim it when missed.

        Returns a decision for a deadline this call claimed, or one claimed before whose
        actions were not confirmed enqueued; empty otherwise. An expected event that happened
        after the deadline but came before this decision makes the decision ``late`` at once.
        """
        sched = rule.deadline
        assert sched is not None
        t = deadlines_table

        def op(conn: sa.Connection) -> list[Decision]:
            _insert_ignore(conn, dict(rule=rule.name, deadline=0, outcome=WATCHING, decided_at=now))
            since = self._row(conn, rule.name, 0).decided_at
            deadline = sched.previous_deadline(_dt(now - sched.grace_seconds))
            opens, _ = sched.window(deadline)
            if opens.timestamp() < since:
                return []  # nothing was watching the whole window
            conn.execute(
                sa.delete(t).where(t.c.rule == rule.name, t.c.deadline > 0, t.c.deadline < now - KEEP_SECONDS)
            )
            created = _insert_ignore(
                conn,
                dict(rule=rule.name, deadline=_ts(deadline), outcome=MISSED, decided_at=now, enqueued=False),
            )
            missed = missed_event(rule, deadline)
            if created:
                return [Decision(missed, True, None)]
            row = self._row(conn, rule.name, _ts(deadline))
            if row is not None and row.outcome == SEEN_AFTER:
                # Missed, and its event has come since: decided missed and late at once.
                won = conn.execute(
                    sa.update(t)
                    .where(t.c.rule == rule.name, t.c.deadline == _ts(deadline), t.c.outcome == SEEN_AFTER)
                    .values(outcome=LATE, decided_at=now, enqueued=False)
                ).rowcount
                if won == 1:
                    return [Decision(missed, True, [missed, StateEvent.from_dict(json.loads(row.event))])]
                row = self._row(conn, rule.name, _ts(deadline))
            if row is not None and row.outcome in (MISSED, LATE) and not row.enqueued:
                late = [missed, StateEvent.from_dict(json.loads(row.event))] if row.outcome == LATE else None
                return [Decision(missed, False, late)]
            return []

        return self._write("decide a deadline", op)

    def mark_enqueued(self, rule: Rule, deadline: datetime) -> None:
        t = deadlines_table

        def op(conn: sa.Connection) -> None:
            conn.execute(
                sa.update(t).where(t.c.rule == rule.name, t.c.deadline == _ts(deadline)).values(enqueued=True)
            )

        return self._write("mark a deadline enqueued", op)

    def status(self, rule: Rule, now: float) -> list[str]:
        """Lines for ``relay explain``: the next deadline, its window, and the last decisions."""
        sched = rule.deadline
        assert sched is not None
        upcoming = sched.next_deadline(_dt(now))
        opens, _ = sched.window(upcoming)
        zone = sched.zone
        t = deadlines_table
        with self._read("read deadlines") as conn:
            rows = conn.execute(
                sa.select(t.c.deadline, t.c.outcome)
                .where(t.c.rule == rule.name, t.c.deadline > 0)
                .order_by(t.c.deadline.desc())
                .limit(3)
            ).all()
        lines = [
            f"  next deadline {upcoming.astimezone(zone):%Y-%m-%d %H:%M %Z} "
            f"(window opens {opens.astimezone(zone):%Y-%m-%d %H:%M %Z}, decided {sched.grace_seconds:g}s after)"
        ]
        for row in rows:
            lines.append(f"  deadline {_dt(row.deadline).astimezone(zone):%Y-%m-%d %H:%M %Z}: {row.outcome}")
        return lines


class DeadlineClock:
    """A daemon thread that calls ``tick(now)`` every ``interval`` seconds until stopped."""

    def __init__(self, tick: Callable[[float], object], interval: float = 15.0) -> None:
        self._tick = tick
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="xdeps-deadline-clock", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import time

        while not self._stop.is_set():
            try:
                self._tick(time.time())
            except Exception:  # the clock must outlive a database hiccup; the next tick retries
                log.exception("astro-xdeps deadline clock: tick failed; retrying in %gs", self.interval)
            self._stop.wait(self.interval)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

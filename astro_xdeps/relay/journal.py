"""What the relay received and what it did with each event, kept for the operator's page.

One row per ingested event in ``xdeps_relay_events`` (the outbox's database, beside the relay
state): the event (type, DAG, run, deployment, through which door) and the decision — which
rules matched, which many-to-one rules still wait and for which conditions, which actions went
to the outbox, and which of those were duplicates of actions already there (deduplicated).

Bounded: each insert removes rows beyond the newest :data:`KEEP` (a primary-key range delete).
A journal write that fails is logged and never fails the ingest: the outbox write is what counts.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from astro_xdeps.outbox.db import DB_ERRORS, Database
from astro_xdeps.relay.rules import Condition, Rule
from astro_xdeps.relay.state import CompanionTables
from astro_xdeps.state_events import StateEvent

log = logging.getLogger(__name__)

KEEP = 10_000
MAX_PAGE = 200

_metadata = sa.MetaData()
_id_type = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
journal_table = sa.Table(
    "xdeps_relay_events",
    _metadata,
    sa.Column("id", _id_type, primary_key=True, autoincrement=True),
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Column("event_id", sa.String(250), nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("dag_id", sa.String(250), nullable=False),
    sa.Column("run_id", sa.String(250), nullable=True),
    sa.Column("task_id", sa.String(250), nullable=True),
    sa.Column("deployment", sa.String(250), nullable=True),
    sa.Column("door", sa.String(64), nullable=True),
    sa.Column("outcome", sa.Text, nullable=False),
    sqlite_autoincrement=True,
)
_INSERT = sa.insert(journal_table)  # built once: SQLAlchemy reuses its compiled form
_COLUMNS = ("received_at", "event_id", "type", "dag_id", "run_id", "task_id", "deployment", "door", "outcome")
# SQLite: the row goes to the sqlite3 connection of the writer's open transaction directly. One
# insert per relay request, and through SQLAlchemy's execution machinery it cost more than the
# INSERT itself (the relay's per-request CPU).
_SQLITE_INSERT = (
    f"INSERT INTO {journal_table.name} ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
)


def describe_condition(condition: Condition) -> str:
    """``dag_run.success of extract_b`` (plus task and deployment when the condition names them)."""
    text = f"{'/'.join(condition.types)} of {condition.dag_id}"
    if condition.task_id != "*":
        text += f".{condition.task_id}"
    if condition.deployment != "*":
        text += f" in {condition.deployment}"
    return text


def outcome(
    *,
    matched: Sequence[str],
    waiting: dict[str, list[str]],
    planned: Sequence[Any],
    enqueued: Sequence[Any],
) -> dict[str, Any]:
    """The decision as JSON-safe data. Pure. ``planned``/``enqueued`` as :class:`IngestResult` has them."""
    actions = []
    for p, e in zip(planned, enqueued, strict=False):
        what = (
            f"trigger {p.payload.get('dag_id')} as run {p.payload.get('dag_run_id')}"
            if p.kind == "dag_run"
            else f"asset event {p.payload.get('uri')}"
        )
        actions.append(
            {
                "rule": p.rule,
                "kind": p.kind,
                "target": p.target,
                "what": what,
                "outbox_id": e.id,
                "new": e.created,
            }
        )
    fired = sorted({a["rule"] for a in actions})
    return {
        "matched": list(matched),
        "fired": fired,
        "waiting": waiting,
        "actions": actions,
        "deduplicated": bool(actions) and not any(a["new"] for a in actions),
    }


def summary(decision: dict[str, Any]) -> str:
    """One line for the page: what the relay did with the event. Pure."""
    if not decision.get("matched"):
        return "no rule matched"
    parts = []
    new = [a for a in decision.get("actions", []) if a["new"]]
    dup = [a for a in decision.get("actions", []) if not a["new"]]
    if new:
        parts.append(
            "fired "
            + ", ".join(sorted({a["rule"] for a in new}))
            + ": "
            + "; ".join(f"{a['what']} on {a['target']}" for a in new)
        )
    if dup:
        parts.append(
            "deduplicated (already in the outbox): " + "; ".join(f"{a['what']} on {a['target']}" for a in dup)
        )
    for rule, missing in decision.get("waiting", {}).items():
        parts.append(f"{rule} waits for " + (", ".join(missing) if missing else "its other conditions"))
    return "; ".join(parts) or "matched " + ", ".join(decision["matched"])


class RelayJournal(CompanionTables):
    """Appends one row per ingested event; lists the recent ones, newest first."""

    _subject = "The relay journal"

    def __init__(self, db: Database) -> None:
        super().__init__(db, _metadata, "relay journal")

    def record(self, event: StateEvent, decision: dict[str, Any], now: float | None = None) -> None:
        now = time.time() if now is None else now
        t = journal_table
        door = event.attributes.get("source") if event.attributes else None
        row = dict(
            received_at=now,
            event_id=event.id[:250],
            type=event.type,
            dag_id=event.dag_id,
            run_id=event.run_id,
            task_id=event.task_id,
            deployment=event.deployment,
            door=str(door)[:64] if door else None,
            outcome=json.dumps(decision),
        )

        def append(conn: sa.Connection) -> None:
            if conn.dialect.name == "sqlite":
                raw = conn.connection.driver_connection
                new_id = raw.execute(_SQLITE_INSERT, [row[c] for c in _COLUMNS]).lastrowid
            else:
                new_id = conn.execute(_INSERT, row).inserted_primary_key[0]
            if new_id % 100 == 0:
                conn.execute(sa.delete(t).where(t.c.id <= new_id - KEEP))

        try:
            self._database.write(append)
        except DB_ERRORS as exc:
            log.warning(
                "astro-xdeps could not record relay event %s in the journal: %s", event.id, _reason(exc)
            )

    def recent(
        self, *, before: int | None = None, limit: int = 50
    ) -> tuple[list[dict[str, Any]], int | None]:
        """One page of events, newest first, and the ``before`` id of the next page (None: last)."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
        t = journal_table
        stmt = sa.select(t).order_by(t.c.id.desc()).limit(limit + 1)
        if before is not None:
            stmt = stmt.where(t.c.id < before)
        with self._read("read its recent events") as conn:
            rows = conn.execute(stmt).all()
        out = []
        for r in rows[:limit]:
            decision = json.loads(r.outcome)
            out.append(
                {
                    "id": r.id,
                    "received_at": r.received_at,
                    "event_id": r.event_id,
                    "type": r.type,
                    "dag_id": r.dag_id,
                    "run_id": r.run_id,
                    "task_id": r.task_id,
                    "deployment": r.deployment,
                    "door": r.door,
                    "decision": decision,
                    "summary": summary(decision),
                }
            )
        return out, (out[-1]["id"] if len(rows) > limit else None)


def waiting_conditions(rule: Rule, unsatisfied: Sequence[int]) -> list[str]:
    """The conditions of a stateful ``rule`` still short of their ``count`` of events
    (``firing.Decision.unsatisfied``), described. Pure."""
    return [describe_condition(rule.conditions[i]) for i in unsatisfied]


def _reason(exc: BaseException) -> str:
    return " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]

"""Read-side queries of the outbox for the page and ``astro-xdeps graph``: counted and paged in SQL.

The outbox may hold 100,000 pending and 1,000,000 delivered items, and the store's indexes
are the ones the hot path pays for: the unique ``(target, kind, idempotency_key)`` and the
claim index ``(state, next_attempt_at)``. So every query here is shaped to use those (or the
primary key) and never to scan the table's rows:

- totals per (target, kind) come from the unique index alone; pending and dead per (target,
  kind) from the claim index; delivered is the difference, all in one read transaction so the
  three agree with each other;
- "recently" means the most recent :data:`RECENT_WINDOW` items by id (a primary-key range);
- lists are keyset-paged by id, newest first.

Writes (retry) go through :class:`~astro_xdeps.outbox.store.Outbox` itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from astro_xdeps.outbox.models import DEAD, DELIVERED, PENDING, STATES, StatusRow, outbox_table
from astro_xdeps.outbox.store import Outbox, OutboxError
from astro_xdeps.ui.words import plain_error

RECENT_WINDOW = 5000
MAX_PAGE = 200
SAMPLE_DEAD = 500
SAMPLE_PENDING = 500


@dataclass(frozen=True)
class TargetSummary:
    """One target deployment (connection id) as the page's first table shows it."""

    target: str
    pending: int
    delivered: int
    dead: int
    in_flight: int
    oldest_pending_at: float | None
    next_attempt_at: float | None
    last_error: str | None
    last_error_plain: str | None
    last_error_at: float | None
    recent_delivered: int
    last_delivered_at: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ItemRow:
    """An outbox item for the page's lists: its payload, what it is and where it came from."""

    id: int
    kind: str
    target: str
    state: str
    attempts: int
    created_at: float
    updated_at: float
    next_attempt_at: float
    delivered_at: float | None
    last_error: str | None
    payload: dict[str, Any]
    result: Any

    @property
    def what(self) -> str:
        if self.kind == "dag_run":
            return f"trigger {self.payload.get('dag_id')} (run {self.payload.get('dag_run_id')})"
        return f"asset event {self.payload.get('uri')}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["what"] = self.what
        d["last_error_plain"] = plain_error(self.last_error)
        d["provenance"] = provenance(self.kind, self.payload)
        return d


def provenance(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Where an item came from, from the provenance it carries (forwarding or relay). Pure."""
    if kind == "dag_run":
        prov = (payload.get("conf") or {}).get("xdeps") or {}
        events = prov.get("events") or []
        return {
            "via": "relay",
            "rule": prov.get("rule"),
            "events": [
                {k: e.get(k) for k in ("type", "deployment", "dag_id", "run_id", "task_id", "id")}
                for e in events
                if isinstance(e, dict)
            ],
        }
    prov = (payload.get("extra") or {}).get("xdeps") or {}
    if "rule" in prov:  # an asset event a relay rule made
        return {
            "via": "relay",
            "rule": prov.get("rule"),
            "events": [
                {k: e.get(k) for k in ("type", "deployment", "dag_id", "run_id", "task_id", "id")}
                for e in prov.get("events") or []
                if isinstance(e, dict)
            ],
        }
    source = prov.get("source") or {}
    return {
        "via": "forwarding",
        "route": prov.get("route"),
        "event_id": prov.get("event_id"),
        "hops": prov.get("hops"),
        "source": {
            k: source.get(k) for k in ("deployment", "dag_id", "task_id", "run_id", "map_index", "uri")
        },
    }


@dataclass
class _Pending:
    """The pending items of one target, summed over its kinds."""

    n: int = 0
    leased: int = 0
    oldest: float | None = None
    next: float | None = None

    def add(self, row: StatusRow) -> _Pending:
        self.n += row.count
        self.leased += row.in_flight
        self.oldest = (
            row.oldest_created_at if self.oldest is None else min(self.oldest, row.oldest_created_at)
        )
        if row.next_attempt_at is not None:
            self.next = row.next_attempt_at if self.next is None else min(self.next, row.next_attempt_at)
        return self


class OutboxQueries:
    """Counts, pages and samples of one outbox, in its own database, without loading rows in bulk."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        prefix = outbox.table_name[: -len("outbox")]
        self._t = outbox_table(sa.MetaData(), prefix)
        self._sqlite = outbox.dialect == "sqlite"

    @contextmanager
    def _read(self, op: str) -> Iterator[sa.Connection]:
        try:
            with self.outbox.engine.begin() as conn:  # one snapshot (SQLite WAL / PG transaction)
                yield conn
        except sa.exc.DBAPIError as exc:
            reason = " ".join(str(exc.orig).split())[:300]
            raise OutboxError(f"The outbox {self.outbox.url} could not {op}: {reason}") from exc

    def _unindexed(self, column: sa.Column) -> sa.ColumnElement:
        """``column`` in a form SQLite will not use an index for, so it walks the primary key.

        Used where matching rows are common (delivered, or one target): walking ids from the top
        finds a page at once, while the claim or unique index would first sort every match (a
        million rows). PostgreSQL's planner weighs this with statistics; it gets the column as is.
        """
        return sa.func.coalesce(column, "") if self._sqlite else column

    # -- the first table ---------------------------------------------------------------------
    def summary(self, now: float | None = None) -> list[TargetSummary]:
        now = time.time() if now is None else now
        # Counts from Outbox.status: kept by triggers and small indexes, not counted row by row.
        totals: dict[str, int] = {}
        pending: dict[str, _Pending] = {}
        dead: dict[str, int] = {}
        for row in self.outbox.status(now):
            totals[row.target] = totals.get(row.target, 0) + row.count
            if row.state == DEAD:
                dead[row.target] = dead.get(row.target, 0) + row.count
            elif row.state == PENDING:
                pending[row.target] = pending.get(row.target, _Pending()).add(row)
        with self._read("count items per target") as conn:
            recent = self._recent_by_target(conn)
            errors = {target: self._last_error(conn, target) for target in totals}
        out = []
        for target in sorted(totals):
            p = pending.get(target)
            n_pending = p.n if p else 0
            n_dead = dead.get(target, 0)
            error, error_at = errors[target]
            rec = recent.get(target, (0, None))
            out.append(
                TargetSummary(
                    target=target,
                    pending=n_pending,
                    delivered=totals[target] - n_pending - n_dead,
                    dead=n_dead,
                    in_flight=p.leased if p else 0,
                    oldest_pending_at=p.oldest if p else None,
                    next_attempt_at=p.next if p else None,
                    last_error=error,
                    last_error_plain=plain_error(error),
                    last_error_at=error_at,
                    recent_delivered=rec[0],
                    last_delivered_at=rec[1],
                )
            )
        return out

    def _floor_id(self, conn: sa.Connection) -> int:
        top = conn.execute(sa.select(sa.func.max(self._t.c.id))).scalar()
        return 0 if top is None else int(top) - RECENT_WINDOW

    def _recent_by_target(self, conn: sa.Connection) -> dict[str, tuple[int, float | None]]:
        t = self._t
        floor = self._floor_id(conn)
        # Grouping by the plain column would make SQLite walk the whole (target, ...) index.
        target = self._unindexed(t.c.target).label("target")
        rows = conn.execute(
            sa.select(target, sa.func.count().label("n"), sa.func.max(t.c.delivered_at).label("last"))
            .where(t.c.id > floor, self._unindexed(t.c.state) == DELIVERED)
            .group_by(target)
        )
        return {r.target: (int(r.n), None if r.last is None else float(r.last)) for r in rows}

    def _last_error(self, conn: sa.Connection, target: str) -> tuple[str | None, float | None]:
        """The newest error among the target's dead items and its pending items that failed."""
        t = self._t
        # A pending item that failed is scheduled in the future: walking the claim index from
        # the latest next try finds the most recent failure first.
        pending = conn.execute(
            sa.select(t.c.last_error, t.c.updated_at)
            .where(t.c.state == PENDING, t.c.target == target, t.c.last_error.is_not(None))
            .order_by(t.c.state, t.c.next_attempt_at.desc())
            .limit(1)
        ).first()
        dead = conn.execute(
            sa.select(t.c.last_error, t.c.updated_at)
            .where(t.c.state == DEAD, t.c.target == target)
            .order_by(t.c.state, t.c.next_attempt_at.desc())
            .limit(1)
        ).first()
        candidates = [r for r in (pending, dead) if r is not None and r.last_error]
        if not candidates:
            return None, None
        best = max(candidates, key=lambda r: r.updated_at)
        return best.last_error, float(best.updated_at)

    # -- lists -------------------------------------------------------------------------------
    def items(
        self,
        *,
        state: str | None = None,
        target: str | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> tuple[list[ItemRow], int | None]:
        """One page of items, newest first, and the ``before`` id of the next page (None: last page)."""
        if state is not None and state not in STATES:
            raise ValueError(f"state {state!r} is unknown; use one of {', '.join(STATES)}")
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
        t = self._t
        stmt = sa.select(t).order_by(t.c.id.desc()).limit(limit + 1)
        # Pending and dead: the claim index narrows to them; otherwise walk ids from the top.
        by_state = state in (PENDING, DEAD)
        if state is not None:
            stmt = stmt.where((t.c.state if by_state else self._unindexed(t.c.state)) == state)
        if target is not None:
            stmt = stmt.where(self._unindexed(t.c.target) == target)
        if before is not None:
            stmt = stmt.where(t.c.id < before)
        with self._read("list items") as conn:
            rows = [_row(r) for r in conn.execute(stmt)]
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (rows[-1].id if more else None)

    def item(self, item_id: int) -> ItemRow | None:
        t = self._t
        with self._read("read an item") as conn:
            row = conn.execute(sa.select(t).where(t.c.id == item_id)).first()
        return None if row is None else _row(row)

    def kinds_of(self, ids: list[int]) -> dict[int, str]:
        """The kind of each existing item among ``ids`` (for per-kind permission checks)."""
        t = self._t
        if not ids:
            return {}
        with self._read("read items") as conn:
            return {r.id: r.kind for r in conn.execute(sa.select(t.c.id, t.c.kind).where(t.c.id.in_(ids)))}

    def dead_kinds(self) -> set[str]:
        t = self._t
        with self._read("read dead items") as conn:
            return set(conn.execute(sa.select(t.c.kind).where(t.c.state == DEAD).distinct()).scalars())

    # -- for the graph -----------------------------------------------------------------------
    def sample(self) -> list[ItemRow]:
        """Items whose provenance draws the graph: the most recent ones, every dead one (up to
        :data:`SAMPLE_DEAD`) and the longest-waiting pending ones (up to :data:`SAMPLE_PENDING`)."""
        t = self._t
        with self._read("sample items for the graph") as conn:
            floor = self._floor_id(conn)
            recent = conn.execute(sa.select(t).where(t.c.id > floor).order_by(t.c.id.desc()))
            rows = {r.id: _row(r) for r in recent}
            for stmt in (
                sa.select(t)
                .where(t.c.state == DEAD)
                .order_by(t.c.state, t.c.next_attempt_at.desc())
                .limit(SAMPLE_DEAD),
                sa.select(t)
                .where(t.c.state == PENDING)
                .order_by(t.c.state, t.c.next_attempt_at)
                .limit(SAMPLE_PENDING),
            ):
                for r in conn.execute(stmt):
                    rows.setdefault(r.id, _row(r))
        return sorted(rows.values(), key=lambda r: r.id)


def _row(r: sa.Row[Any]) -> ItemRow:
    m = r._mapping
    return ItemRow(
        id=int(m["id"]),
        kind=m["kind"],
        target=m["target"],
        state=m["state"],
        attempts=int(m["attempts"]),
        created_at=float(m["created_at"]),
        updated_at=float(m["updated_at"]),
        next_attempt_at=float(m["next_attempt_at"]),
        delivered_at=None if m["delivered_at"] is None else float(m["delivered_at"]),
        last_error=m["last_error"],
        payload=m["payload"] if isinstance(m["payload"], dict) else {},
        result=m["result"],
    )

"""The durable outbox: every outgoing action is written here before anything is sent.

One SQLAlchemy Core code path serves two backends (on SQLite the worker's two hot statements,
claim and finish_many, run as SQL text on the driver's connection: SQLAlchemy's per-row work
cost more than the statements):

- **SQLite** (default): one file, e.g. ``$AIRFLOW_HOME/xdeps_outbox.db``, in WAL mode with
  ``synchronous=NORMAL`` — a committed enqueue survives the process being killed (not a power
  cut). Every write of a process goes through its one writer thread
  (:mod:`astro_xdeps.outbox.writer`), which commits the writes that arrived together in one
  transaction; it takes the write lock up front (``BEGIN IMMEDIATE``), so two processes cannot
  both claim an item, and ``busy_timeout`` makes processes queue for the lock instead of failing.
- **PostgreSQL**: a SQLAlchemy URL, for several replicas sharing one outbox. Claims lock the rows
  they take with ``SELECT ... FOR UPDATE SKIP LOCKED``, so concurrent workers never wait on or
  take each other's items.

Workers claim items with a lease (owner + expiry). An item whose lease ran out is due again, which
is how the items of a crashed worker come back. ``mark_*`` only succeed for the lease's owner, so a
worker that lost its lease to another cannot overwrite what the other one recorded.

Not the Airflow metadata database: on SQLite a second writer there deadlocks against the
scheduler's open transaction.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from astro_xdeps.exceptions import ConfigError, OutboxError
from astro_xdeps.outbox import status as status_module
from astro_xdeps.outbox.db import DB_ERRORS, Database
from astro_xdeps.outbox.models import (
    DEAD,
    DEFAULT_TABLE_PREFIX,
    DELIVERED,
    ITEM_COLUMNS,
    PENDING,
    EnqueueResult,
    Item,
    NewItem,
    Outcome,
    StatusRow,
    check_new_item,
    check_owner,
    check_state,
    check_targets,
    cut_error,
    item_from_row,
    item_from_values,
    outbox_table,
)
from astro_xdeps.outbox.sa_compat import URL, inserted_id, supports_returning, update_returning

log = logging.getLogger(__name__)

DEFAULT_SQLITE_FILENAME = "xdeps_outbox.db"
PURGE_BATCH = 1000
# Ids per statement where SQLite takes them as parameters (older builds allow 999 in all).
_SQLITE_MAX_IDS = 900

_TABLE_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}")

T = TypeVar("T")

# SQLite ran UPDATE ... RETURNING from 3.35 on: claim's one-statement form below needs it.
_SQLITE_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)

__all__ = ["DEFAULT_SQLITE_FILENAME", "Outbox", "OutboxError", "new_owner_id"]


def new_owner_id(prefix: str = "worker") -> str:
    """Return a lease owner id unique to this call: host, pid and a random part.

    Owners must be unique per worker: two workers sharing an owner id could complete each
    other's leases.
    """
    return f"{prefix}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Outbox:
    """A durable, multi-process queue of outgoing actions with leased claims.

    Thread-safe: one object may be shared by every thread of a process. Safe across ``fork``: a
    child process drops the connections and writer it inherited and opens its own.
    """

    def __init__(self, url: str | sa.URL, *, table_prefix: str = DEFAULT_TABLE_PREFIX) -> None:
        """Open (and create if missing) the outbox at ``url``; prefer :meth:`from_url`/:meth:`sqlite`."""
        if not _TABLE_PREFIX.fullmatch(table_prefix):
            raise ConfigError(
                f"The outbox table prefix {table_prefix!r} is not valid: use 1-40 letters, digits and "
                "underscores, starting with a letter, such as the default 'xdeps_'."
            )
        self._db = Database(url)
        self._safe_url = self._db.safe_url
        self._dialect = self._db.dialect
        self._metadata = sa.MetaData()
        self._table = outbox_table(self._metadata, table_prefix)
        self._counts = status_module.counts_table(self._metadata, self._table, self._dialect)
        self._prepare_statements()
        try:
            with self._errors("open"):
                self._db.create_schema(self._create_schema)
        except BaseException:
            self._db.close()
            raise
        log.debug("Opened outbox %s (table %s)", self._safe_url, self._table.name)

    def _create_schema(self, conn: sa.Connection) -> None:
        self._table.create(conn, checkfirst=True)
        status_module.upgrade(conn, self._table, self._counts)

    # -- opening and closing ---------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str | sa.URL, *, table_prefix: str = DEFAULT_TABLE_PREFIX) -> Outbox:
        """Open the outbox at a SQLAlchemy URL: ``sqlite:////abs/path.db`` or ``postgresql+psycopg2://...``."""
        return cls(url, table_prefix=table_prefix)

    @classmethod
    def sqlite(cls, path: str | os.PathLike[str], *, table_prefix: str = DEFAULT_TABLE_PREFIX) -> Outbox:
        """Open the SQLite outbox file at ``path``, creating the file if missing."""
        return cls(URL.create("sqlite", database=os.fspath(path)), table_prefix=table_prefix)

    def close(self) -> None:
        """Finish queued writes and close every connection. Idempotent; the object cannot be used afterwards."""
        self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Outbox({self._safe_url!r}, table={self._table.name!r})"

    @property
    def url(self) -> str:
        """The database URL with any password masked: safe to log and show."""
        return self._safe_url

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._dialect

    @property
    def db(self) -> Database:
        """The database plumbing (reads, the writer), for the relay's tables kept beside the outbox."""
        return self._db

    @property
    def engine(self) -> sa.Engine:
        """The engine, for reads of small companion tables kept in the same database."""
        return self._db.engine

    @property
    def write_engine(self) -> sa.Engine:
        """An engine whose transactions take the write lock up front (SQLite ``BEGIN IMMEDIATE``).

        For tools and tests only: in the package every write goes through :meth:`write`.
        """
        return self._db.write_engine

    @property
    def table_name(self) -> str:
        return self._table.name

    # -- the write path ----------------------------------------------------------------------------

    def write(self, op: str, fn: Callable[[sa.Connection], T]) -> T:
        """Run ``fn(conn)`` through the process's writer, atomically; return once it is durable.

        ``op`` says what it does, for the error message. A batch of statements is one ``fn``.
        """
        with self._errors(op):
            return self._db.write(fn)

    async def write_async(self, op: str, fn: Callable[[sa.Connection], T]) -> T:
        """:meth:`write` for asyncio callers (the relay): no thread is held while it waits."""
        with self._errors(op):
            return await self._db.write_async(fn)

    # -- writing ---------------------------------------------------------------------------------

    def enqueue(self, items: Sequence[NewItem]) -> list[EnqueueResult]:
        """Store ``items`` in one transaction, due now; return their ids in the same order.

        An item whose (target, kind, idempotency_key) is already stored (in any state, until
        :meth:`purge_delivered` deletes it) is not stored again: its result carries the existing
        id and ``created=False``. That is what makes a duplicate webhook or an event seen twice
        have no second effect.
        """
        if not items:
            return []
        for item in items:
            check_new_item(item)
        now = time.time()
        return self.write("enqueue", lambda conn: [self._insert_one(conn, item, now) for item in items])

    def claim(
        self,
        owner: str,
        *,
        limit: int,
        lease_seconds: float,
        now: float | None = None,
        targets: Collection[str] | None = None,
        exclude_targets: Collection[str] = (),
    ) -> list[Item]:
        """Lease up to ``limit`` due items to ``owner``, oldest first, and return them.

        Due: pending, ``next_attempt_at <= now`` and no live lease. Each claimed item gets
        ``attempts + 1``, ``lease_owner = owner`` and ``lease_until = now + lease_seconds``; its
        ``next_attempt_at`` moves to ``lease_until`` too, so :meth:`next_due_at` reports when an
        unfinished lease could be taken over. ``targets`` restricts the claim to those targets;
        the items of ``exclude_targets`` (the worker's open breakers) are left alone.
        """
        check_owner(owner)
        if limit < 1:
            raise ValueError(f"claim limit must be at least 1, got {limit}")
        if not lease_seconds > 0:
            raise ValueError(f"lease_seconds must be positive, got {lease_seconds}")
        check_targets(targets)
        check_targets(exclude_targets)
        if targets is not None and not targets:
            return []
        now = time.time() if now is None else now
        statements = self._claim_statements
        params = {"c_now": now, "c_until": now + lease_seconds, "c_owner": owner, "c_limit": limit}
        sql = statements["sqlite"]
        if targets is None and sql is not None:
            # The worker's claim on SQLite: one statement on the driver's connection, plain tuples
            # back. SQLAlchemy's per-row processing cost more than the statement itself.
            if exclude_targets:
                sql = _sqlite_claim(self._table.name, excluded=len(exclude_targets))
                params.update({f"c_x{i}": target for i, target in enumerate(exclude_targets)})
            rows = self.write(
                "claim", lambda conn: conn.connection.driver_connection.execute(sql, params).fetchall()
            )
            rows.sort()  # by id, the first column
            return [item_from_values(row) for row in rows]
        due = statements["due"] if targets is None else statements["due in targets"]
        if targets is not None:
            params["c_targets"] = list(targets)
        if exclude_targets:
            due = due.where(statements["not excluded"])
            params["c_excluded"] = list(exclude_targets)

        def claim(conn: sa.Connection) -> list[Any]:
            ids = list(conn.execute(due, params).scalars())
            if not ids:
                return []
            update_params = {**params, "c_ids": ids}
            rows = statements["update returning"]
            if rows is not None:
                return conn.execute(rows, update_params).all()
            conn.execute(statements["update"], update_params)  # no RETURNING (SQLite on 1.4): read back
            return conn.execute(statements["claimed"], update_params).all()

        rows = self.write("claim", claim)
        return sorted((item_from_row(row) for row in rows), key=lambda item: item.id)

    def renew(
        self, ids: Collection[int], owner: str, *, lease_seconds: float, now: float | None = None
    ) -> set[int]:
        """Extend ``owner``'s leases on ``ids`` to ``now + lease_seconds``; return the ids still held.

        An id missing from the result is no longer this owner's (another worker claimed it after
        the lease ran out, or it was finished or purged): the caller must not send it. A lease
        that ran out but was not taken over is still held, as for :meth:`mark_delivered`.
        """
        check_owner(owner)
        if not lease_seconds > 0:
            raise ValueError(f"lease_seconds must be positive, got {lease_seconds}")
        if not ids:
            return set()
        now = time.time() if now is None else now
        t = self._table
        lease_until = now + lease_seconds
        stmt = (
            sa.update(t)
            .where(t.c.id.in_(list(ids)), t.c.state == PENDING, t.c.lease_owner == owner)
            .values(lease_until=lease_until, next_attempt_at=lease_until)
        )
        rows = self.write(
            "renew leases",
            lambda conn: update_returning(
                conn, stmt, t, t.c.id.in_(list(ids)), t.c.lease_owner == owner, t.c.lease_until == lease_until
            ),
        )
        return {row.id for row in rows}

    def mark_delivered(self, item_id: int, owner: str, result: Any = None) -> bool:
        """Record that the downstream confirmed the item; ``result`` is any JSON value to keep.

        Returns False, changing nothing, unless ``owner`` still holds the item's lease (it is
        pending and ``lease_owner == owner``; a lease that expired but was not taken over by
        another worker still counts).
        """
        now = time.time()
        return self._finish(
            "mark_delivered",
            item_id,
            owner,
            state=DELIVERED,
            delivered_at=now,
            result=result,
            updated_at=now,
        )

    def mark_failed(self, item_id: int, owner: str, error: str, next_attempt_at: float) -> bool:
        """Release the item to be tried again at ``next_attempt_at``, keeping ``error``.

        Same lease rule as :meth:`mark_delivered`. ``attempts`` is left as claim set it.
        """
        return self._finish(
            "mark_failed",
            item_id,
            owner,
            state=PENDING,
            next_attempt_at=next_attempt_at,
            last_error=cut_error(error),
            updated_at=time.time(),
        )

    def mark_dead(self, item_id: int, owner: str, error: str) -> bool:
        """Give up on the item (dead letter), keeping ``error``; :meth:`retry` can revive it.

        Same lease rule as :meth:`mark_delivered`.
        """
        return self._finish(
            "mark_dead", item_id, owner, state=DEAD, last_error=cut_error(error), updated_at=time.time()
        )

    def retry(self, ids: Sequence[int] | None = None, *, all_dead: bool = False) -> int:
        """Make dead or pending items due now with ``attempts`` reset to 0; return how many changed.

        ``ids`` names items; ``all_dead=True`` takes every dead item (both may be given). Delivered
        items are never re-sent, and an item under a live lease is skipped (a worker is sending
        it right now). ``last_error`` is kept as history. ``retried_at`` is set to now: the
        worker's give-up horizon counts from it (``created_at`` stays the creation time).
        """
        if ids is None and not all_dead:
            raise ValueError("retry needs the ids of the items to retry, or all_dead=True")
        t = self._table
        chosen = []
        if ids:
            chosen.append(sa.and_(t.c.id.in_(list(ids)), t.c.state.in_([DEAD, PENDING])))
        if all_dead:
            chosen.append(t.c.state == DEAD)
        if not chosen:
            return 0
        now = time.time()
        stmt = (
            sa.update(t)
            .where(sa.or_(*chosen), _no_live_lease(t, now))
            .values(
                state=PENDING,
                attempts=0,
                next_attempt_at=now,
                updated_at=now,
                retried_at=now,
                lease_owner=None,
                lease_until=None,
            )
        )
        return self.write("retry", lambda conn: conn.execute(stmt).rowcount)

    def give_up(self, target: str, *, started_before: float, reason: str, now: float | None = None) -> int:
        """Make dead the pending items of ``target`` whose retry horizon started before
        ``started_before`` (and that no worker holds); return how many.

        For the worker's open breakers: their items are not claimed, so no send finds them past
        the horizon. In batches (:meth:`_in_batches`).
        """
        now = time.time() if now is None else now
        t = self._table
        horizon_start = sa.func.coalesce(t.c.retried_at, t.c.created_at)
        expired = (
            t.c.target == target,
            t.c.state == PENDING,
            horizon_start < started_before,
            _no_live_lease(t, now),
        )
        return self._in_batches(
            "give_up",
            sa.select(t.c.id).where(*expired),
            lambda ids: (
                sa.update(t)
                .where(t.c.id.in_(ids), *expired)
                .values(state=DEAD, last_error=reason, lease_owner=None, lease_until=None, updated_at=now)
            ),
        )

    def purge_delivered(self, older_than_seconds: float, *, now: float | None = None) -> int:
        """Delete items delivered more than ``older_than_seconds`` ago; return how many.

        Deletes in batches (:meth:`_in_batches`). On PostgreSQL it then
        folds the status counts of backends that have gone (:func:`status.fold`).
        """
        if older_than_seconds < 0:
            raise ValueError(f"older_than_seconds must not be negative, got {older_than_seconds}")
        cutoff = (time.time() if now is None else now) - older_than_seconds
        t = self._table
        total = self._in_batches(
            "purge_delivered",
            sa.select(t.c.id).where(t.c.state == DELIVERED, t.c.delivered_at < cutoff),
            lambda ids: sa.delete(t).where(t.c.id.in_(ids), t.c.state == DELIVERED),
        )
        if self._dialect == "postgresql":
            self.write("purge_delivered", lambda conn: status_module.fold(conn, self._counts))
        return total

    def _in_batches(self, op: str, ids: sa.Select[Any], change: Callable[[list[int]], sa.Executable]) -> int:
        """Run ``change(batch)`` on the rows ``ids`` selects, PURGE_BATCH ids at a time (oldest
        first), each batch its own short write, so a large change never holds SQLite's write
        lock long enough to slow down enqueue on Airflow's hot path. Returns how many rows."""

        def one(conn: sa.Connection) -> int:
            batch = list(conn.execute(ids.order_by(self._table.c.id).limit(PURGE_BATCH)).scalars())
            if batch:
                conn.execute(change(batch))
            return len(batch)

        total = 0
        while True:
            n = self.write(op, one)
            total += n
            if n < PURGE_BATCH:
                return total

    # -- outcomes of a batch, in one write transaction ------------------------------------------

    def finish_many(self, owner: str, outcomes: Sequence[Outcome]) -> list[bool]:
        """Record what became of several items in one transaction; True for each one applied.

        The batch form of :meth:`mark_delivered`, :meth:`mark_failed` and :meth:`mark_dead`, with
        the same lease rule: an outcome is applied only while ``owner`` still holds the item's
        lease, otherwise it changes nothing and its entry is False. Durable when this returns.
        """
        check_owner(owner)
        if not outcomes:
            return []
        now = time.time()
        rows = [_outcome_params(o, owner, now) for o in outcomes]  # checked before writing
        statements = self._finish_statements
        if statements["sqlite"]:
            held = self.write("record delivery outcomes", self._finish_sqlite(owner, outcomes, rows))
            return self._applied(owner, outcomes, held)

        def op(conn: sa.Connection) -> set[int]:
            # Which leases are still the owner's: the rows are locked (PostgreSQL: FOR UPDATE;
            # SQLite: the write lock), so the updates below change exactly these.
            held = set(
                conn.execute(
                    statements["held"], {"f_ids": [o.item_id for o in outcomes], "f_owner": owner}
                ).scalars()
            )
            for state, group in _groups_by_state(outcomes, rows, held):
                conn.execute(statements[state], group)  # one executemany per state
            return held

        return self._applied(owner, outcomes, self.write("record delivery outcomes", op))

    def _finish_sqlite(
        self, owner: str, outcomes: Sequence[Outcome], rows: list[dict[str, Any]]
    ) -> Callable[[sa.Connection], set[int]]:
        """finish_many's write on SQLite: the same statements as SQL text run on the driver's
        connection, skipping SQLAlchemy's per-row parameter processing (most of the cost)."""
        sql = self._finish_statements["sqlite"]
        for o, row in zip(outcomes, rows, strict=True):
            if o.state == DELIVERED:  # JSON as SQLAlchemy stores it: None is NULL
                row["f_result"] = None if o.result is None else self._json_text(o.item_id, o.result)
        ids = [o.item_id for o in outcomes]

        def op(conn: sa.Connection) -> set[int]:
            raw = conn.connection.driver_connection
            held: set[int] = set()
            for start in range(0, len(ids), _SQLITE_MAX_IDS):
                chunk = ids[start : start + _SQLITE_MAX_IDS]
                marks = ", ".join("?" * len(chunk))
                held.update(i for (i,) in raw.execute(sql["held"].format(marks), (*chunk, owner)))
            for state, group in _groups_by_state(outcomes, rows, held):
                raw.executemany(sql[state], group)
            return held

        return op

    def _json_text(self, item_id: int, value: Any) -> str:
        """``value`` as SQLAlchemy's JSON type stores it; an OutboxError as from SQLAlchemy if it cannot."""
        try:
            return json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise OutboxError(
                f"The outbox {self._safe_url} could not record delivery outcomes: the result of item "
                f"{item_id} is not JSON ({exc})."
            ) from exc

    @staticmethod
    def _applied(owner: str, outcomes: Sequence[Outcome], held: set[int]) -> list[bool]:
        applied = [o.item_id in held for o in outcomes]
        lost = [o.item_id for o, ok in zip(outcomes, applied, strict=True) if not ok]
        if lost:
            log.info("Outbox items %s: outcomes by %s ignored, the leases are no longer theirs", lost, owner)
        return applied

    @functools.cached_property
    def _claim_statements(self) -> dict[str, Any]:
        """claim's statements, built once with bind parameters: built per call (and compiled into
        the cache key each time) they cost more than running them, inside the write lock that
        every listener's write in this process waits for."""
        t = self._table
        now, until, owner = sa.bindparam("c_now"), sa.bindparam("c_until"), sa.bindparam("c_owner")
        ids = sa.bindparam("c_ids", expanding=True)
        due = (
            sa.select(t.c.id)
            .where(t.c.state == PENDING, t.c.next_attempt_at <= now, _no_live_lease(t, now))
            .order_by(t.c.id)
            .limit(sa.bindparam("c_limit"))
            # PostgreSQL: lock the chosen rows, skipping rows another claim holds. SQLite ignores
            # this and relies on the write lock BEGIN IMMEDIATE took.
            .with_for_update(skip_locked=True)
        )
        update = (
            sa.update(t)
            .where(t.c.id.in_(ids), t.c.state == PENDING)
            .values(
                attempts=t.c.attempts + 1,
                lease_owner=owner,
                lease_until=until,
                next_attempt_at=until,
                updated_at=now,
            )
        )
        return {
            "sqlite": _sqlite_claim(t.name) if self._dialect == "sqlite" and _SQLITE_RETURNING else None,
            "due": due,
            "due in targets": due.where(t.c.target.in_(sa.bindparam("c_targets", expanding=True))),
            "not excluded": t.c.target.not_in(sa.bindparam("c_excluded", expanding=True)),
            "update": update,
            "update returning": update.returning(*t.c) if supports_returning(self._dialect) else None,
            # The rows the update changed (what RETURNING gives), read back under the same lock.
            "claimed": sa.select(t).where(
                t.c.id.in_(ids), t.c.lease_owner == owner, t.c.lease_until == until
            ),
        }

    @functools.cached_property
    def _finish_statements(self) -> dict[str, Any]:
        """The leases still held, and one UPDATE per outcome state: built once with bind parameters."""
        t = self._table
        held = (
            t.c.id == sa.bindparam("f_id"),
            t.c.state == PENDING,
            t.c.lease_owner == sa.bindparam("f_owner"),
        )
        done = {"lease_owner": None, "lease_until": None, "updated_at": sa.bindparam("f_now")}
        error = sa.bindparam("f_error", type_=t.c.last_error.type)
        return {
            "sqlite": _sqlite_finish(t.name) if self._dialect == "sqlite" else None,
            "held": sa.select(t.c.id)
            .where(t.c.id.in_(sa.bindparam("f_ids", expanding=True)), *held[1:])
            .with_for_update(),
            DELIVERED: sa.update(t)
            .where(*held)
            .values(
                state=DELIVERED,
                delivered_at=sa.bindparam("f_now"),
                result=sa.bindparam("f_result", type_=t.c.result.type),
                **done,
            ),
            PENDING: sa.update(t)
            .where(*held)
            .values(
                state=PENDING,
                next_attempt_at=sa.bindparam("f_next", type_=t.c.next_attempt_at.type),
                last_error=error,
                **done,
            ),
            DEAD: sa.update(t).where(*held).values(state=DEAD, last_error=error, **done),
        }

    # -- reading ---------------------------------------------------------------------------------

    def get(self, item_id: int) -> Item | None:
        """The item with this id, or None if there is none (never stored, or purged)."""
        with self._read("get") as conn:
            row = conn.execute(sa.select(self._table).where(self._table.c.id == item_id)).first()
        return None if row is None else item_from_row(row)

    def list_items(self, state: str | None = None, target: str | None = None, limit: int = 100) -> list[Item]:
        """Up to ``limit`` items, oldest first, optionally only in ``state`` and/or for ``target``."""
        t = self._table
        stmt = sa.select(t).order_by(t.c.id).limit(limit)
        if state is not None:
            check_state(state)
            stmt = stmt.where(t.c.state == state)
        if target is not None:
            stmt = stmt.where(t.c.target == target)
        with self._read("list_items") as conn:
            return [item_from_row(row) for row in conn.execute(stmt)]

    def status(self, now: float | None = None) -> list[StatusRow]:
        """One row per (target, kind, state) with counts and the latest error, sorted by those keys.

        Fast at any size (counts kept by triggers, the rest from small indexes): see
        :mod:`astro_xdeps.outbox.status`.
        """
        with self._read("status") as conn:
            return status_module.status(conn, self._table, self._counts, now)

    def next_due_at(
        self, targets: Collection[str] | None = None, *, exclude_targets: Collection[str] = ()
    ) -> float | None:
        """When the earliest pending item becomes claimable (may be in the past); None if none pending.

        Leased items count with their lease expiry, so a worker sleeping until this time also
        wakes up to take over the items of a worker that died. ``targets`` and
        ``exclude_targets`` narrow the items as in :meth:`claim`.
        """
        t = self._table
        stmt = sa.select(sa.func.min(t.c.next_attempt_at)).where(t.c.state == PENDING)
        check_targets(targets)
        check_targets(exclude_targets)
        if targets is not None:
            if not targets:
                return None
            stmt = stmt.where(t.c.target.in_(list(targets)))
        if exclude_targets:
            stmt = stmt.where(t.c.target.not_in(list(exclude_targets)))
        with self._read("next_due_at") as conn:
            value = conn.execute(stmt).scalar()
        return None if value is None else float(value)

    # -- internals -------------------------------------------------------------------------------

    def _prepare_statements(self) -> None:
        """Build the hot-path statements once; SQLAlchemy then reuses their compiled form."""
        t = self._table
        insert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert
        self._insert_stmt = insert(t).on_conflict_do_nothing(
            index_elements=[t.c.target, t.c.kind, t.c.idempotency_key]
        )
        if supports_returning(self._dialect):
            self._insert_stmt = self._insert_stmt.returning(t.c.id)
        self._find_key_stmt = sa.select(t.c.id).where(
            t.c.target == sa.bindparam("target"),
            t.c.kind == sa.bindparam("kind"),
            t.c.idempotency_key == sa.bindparam("idempotency_key"),
        )
        self._sqlite_insert = _sqlite_insert(t.name) if self._dialect == "sqlite" else None

    def _insert_sqlite(self, conn: sa.Connection, item: NewItem, now: float) -> EnqueueResult:
        """The listener's write on SQLite: the INSERT of ``_insert_stmt`` as text on the driver's
        connection. Through SQLAlchemy's execution machinery it cost more than the INSERT itself,
        on the thread recording a task's success. Under the write lock no conflicting row can
        disappear before it is read back."""
        try:
            payload = json.dumps(item.payload)  # as SQLAlchemy's JSON type stores it
        except (TypeError, ValueError) as exc:
            raise _payload_error(item, exc) from exc
        key = (item.target, item.kind, item.idempotency_key)
        assert self._sqlite_insert is not None
        insert, find = self._sqlite_insert
        raw = conn.connection.driver_connection
        cursor = raw.execute(insert, (*key, payload, PENDING, now, now, now))
        if cursor.rowcount == 1:
            return EnqueueResult(id=cursor.lastrowid, created=True)
        return EnqueueResult(id=raw.execute(find, key).fetchone()[0], created=False)

    def _insert_one(self, conn: sa.Connection, item: NewItem, now: float) -> EnqueueResult:
        if self._sqlite_insert is not None:
            return self._insert_sqlite(conn, item, now)
        key = {"target": item.target, "kind": item.kind, "idempotency_key": item.idempotency_key}
        row = {
            **key,
            "payload": item.payload,
            "state": PENDING,
            "attempts": 0,
            "created_at": now,
            "next_attempt_at": now,
            "updated_at": now,
        }
        # Two rounds at most: on PostgreSQL the conflicting row can be purged between our INSERT
        # and SELECT, and then the next INSERT succeeds.
        for _ in range(2):
            try:
                new_id = inserted_id(conn.execute(self._insert_stmt, row))
            except sa.exc.StatementError as exc:
                if isinstance(exc, sa.exc.DBAPIError):
                    raise
                raise _payload_error(item, exc.orig) from exc
            if new_id is not None:
                return EnqueueResult(id=new_id, created=True)
            existing = conn.execute(self._find_key_stmt, key).scalar_one_or_none()
            if existing is not None:
                return EnqueueResult(id=existing, created=False)
        raise OutboxError(
            f"The outbox {self._safe_url} could not enqueue {item.idempotency_key!r} for {item.target!r}: "
            "its key kept conflicting with an item that then disappeared. Try again."
        )

    @contextmanager
    def _errors(self, op: str) -> Iterator[None]:
        """Database errors of ``op`` become an OutboxError that says what to check."""
        if self._db.closed:
            raise OutboxError(f"The outbox {self._safe_url} is closed; open a new Outbox to {op}.")
        try:
            yield
        except DB_ERRORS as exc:
            raise OutboxError(self._db.message(f"The outbox {self._safe_url}", op, exc)) from exc

    @contextmanager
    def _read(self, op: str) -> Iterator[sa.Connection]:
        with self._errors(op), self._db.read() as conn:
            yield conn

    def _finish(self, op: str, item_id: int, owner: str, **values: Any) -> bool:
        t = self._table
        stmt = (
            sa.update(t)
            .where(t.c.id == item_id, t.c.state == PENDING, t.c.lease_owner == owner)
            .values(lease_owner=None, lease_until=None, **values)
        )
        changed = self.write(op, lambda conn: conn.execute(stmt).rowcount == 1)
        if not changed:
            log.info("Outbox item %s: %s by %s ignored, the lease is no longer theirs", item_id, op, owner)
        return changed


def _sqlite_claim(table: str, *, excluded: int = 0) -> str:
    """claim's statements as one SQLite ``UPDATE ... RETURNING``, with its named parameters.

    Claims the same rows as ``due`` then ``update`` in :attr:`Outbox._claim_statements`; the
    write lock (``BEGIN IMMEDIATE``) keeps other processes out as it does for those.
    ``excluded``: how many targets (``:c_x0`` ...) to leave out.
    """
    not_excluded = (
        f"AND target NOT IN ({', '.join(f':c_x{i}' for i in range(excluded))}) " if excluded else ""
    )
    return (
        f'UPDATE "{table}" SET attempts = attempts + 1, lease_owner = :c_owner, lease_until = :c_until, '
        "next_attempt_at = :c_until, updated_at = :c_now "
        f"WHERE state = '{PENDING}' AND id IN ("
        f"SELECT id FROM \"{table}\" WHERE state = '{PENDING}' AND next_attempt_at <= :c_now "
        f"AND (lease_until IS NULL OR lease_until <= :c_now) {not_excluded}ORDER BY id LIMIT :c_limit) "
        f"RETURNING {', '.join(ITEM_COLUMNS)}"
    )


def _payload_error(item: NewItem, reason: BaseException) -> TypeError:
    return TypeError(
        f"The payload of outbox item {item.idempotency_key!r} for {item.target!r} cannot be "
        f"stored as JSON: {reason}. Build payloads from str, int, float, bool, None, "
        "lists and dicts only (datetimes as ISO strings)."
    )


def _sqlite_insert(table: str) -> tuple[str, str]:
    """enqueue's ``_insert_stmt`` and ``_find_key_stmt`` as SQLite text, with ``?`` parameters:
    target, kind, idempotency_key, then payload, state, created_at, next_attempt_at, updated_at."""
    key = "target, kind, idempotency_key"
    return (
        f'INSERT INTO "{table}" ({key}, payload, state, attempts, created_at, next_attempt_at, updated_at) '
        f"VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?) ON CONFLICT ({key}) DO NOTHING",
        f'SELECT id FROM "{table}" WHERE target = ? AND kind = ? AND idempotency_key = ?',
    )


def _sqlite_finish(table: str) -> dict[str, str]:
    """finish_many's statements in :attr:`Outbox._finish_statements` as SQLite text: ``held``
    takes the ids as ``?`` marks (filled in with ``str.format``) and then the owner."""
    held = f"state = '{PENDING}' AND lease_owner = :f_owner"
    done = "lease_owner = NULL, lease_until = NULL, updated_at = :f_now"
    update = f"UPDATE \"{table}\" SET state = '{{}}', {{}}, {done} WHERE id = :f_id AND {held}"
    return {
        "held": f"SELECT id FROM \"{table}\" WHERE id IN ({{}}) AND state = '{PENDING}' AND lease_owner = ?",
        DELIVERED: update.format(DELIVERED, "delivered_at = :f_now, result = :f_result"),
        PENDING: update.format(PENDING, "next_attempt_at = :f_next, last_error = :f_error"),
        DEAD: update.format(DEAD, "last_error = :f_error"),
    }


def _no_live_lease(t: sa.Table, now: float) -> sa.ColumnElement[bool]:
    return sa.or_(t.c.lease_until.is_(None), t.c.lease_until <= now)


def _outcome_params(o: Outcome, owner: str, now: float) -> dict[str, Any]:
    """The bind parameters of ``o``'s statement in :meth:`Outbox.finish_many`."""
    params: dict[str, Any] = {"f_id": o.item_id, "f_owner": owner, "f_now": now}
    if o.state == DELIVERED:
        params["f_result"] = o.result
    elif o.state in (PENDING, DEAD):
        params["f_error"] = cut_error(o.error or "")
        if o.state == PENDING:
            if o.next_attempt_at is None:
                raise ValueError(f"Outcome of item {o.item_id}: a retry needs next_attempt_at")
            params["f_next"] = o.next_attempt_at
    else:
        raise ValueError(f"Outcome of item {o.item_id}: unknown state {o.state!r}")
    return params


def _groups_by_state(
    outcomes: Sequence[Outcome], rows: list[dict[str, Any]], held: set[int]
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """finish_many's parameter rows of the items still held, one non-empty group per new state."""
    for state in (DELIVERED, PENDING, DEAD):
        group = [row for o, row in zip(outcomes, rows, strict=True) if o.state == state and o.item_id in held]
        if group:
            yield state, group

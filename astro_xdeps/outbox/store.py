"""The durable outbox: every outgoing action is written here before anything is sent.

One SQLAlchemy Core code path serves two backends:

- **SQLite** (default): one file, e.g. ``$AIRFLOW_HOME/xdeps_outbox.db``, in WAL mode with
  ``synchronous=NORMAL`` — a committed enqueue survives the process being killed (not a power
  cut). Writes take the write lock up front (``BEGIN IMMEDIATE``), so two processes cannot both
  claim an item and a transaction never fails half-way on a lock upgrade; ``busy_timeout`` makes
  them queue for the lock instead of failing.
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
import logging
import os
import re
import socket
import sqlite3
import time
import uuid
import weakref
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite

from astro_xdeps.exceptions import ConfigError, XdepsError
from astro_xdeps.outbox.models import (
    DEAD,
    DEFAULT_TABLE_PREFIX,
    DELIVERED,
    KINDS,
    MAX_ERROR_CHARS,
    MAX_KEY_CHARS,
    MAX_OWNER_CHARS,
    MAX_TARGET_CHARS,
    PENDING,
    STATES,
    EnqueueResult,
    Item,
    NewItem,
    Outcome,
    StatusRow,
    outbox_table,
)
from astro_xdeps.outbox.sa_compat import (
    URL,
    create_engine,
    inserted_id,
    make_url,
    supports_returning,
    update_returning,
)

log = logging.getLogger(__name__)

DEFAULT_SQLITE_FILENAME = "xdeps_outbox.db"
SQLITE_BUSY_TIMEOUT_SECONDS = 10.0
PG_CONNECT_TIMEOUT_SECONDS = 10
PURGE_BATCH = 1000

_TABLE_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}")

# Execution option that makes the SQLite "begin" hook take the write lock up front.
_WRITE = "xdeps_write"


class OutboxError(XdepsError):
    """The outbox database could not be opened, read or written (down, unreachable, locked, full).

    Items already committed are kept; the message names the database (password hidden), what
    failed and what to check.
    """


# Outboxes open in this process, so a forked child can drop the connections it inherited.
_OPEN_OUTBOXES: weakref.WeakSet[Outbox] = weakref.WeakSet()


def _forget_inherited_connections() -> None:
    """In a forked child, give every open outbox a fresh pool before anything can use it.

    The parent's pooled connections (sockets, SQLite file handles) must not be used by the child;
    ``dispose(close=False)`` drops them without closing, which SQLAlchemy documents for forks.
    Running at fork time also covers code that uses :attr:`Outbox.engine` directly.
    """
    for outbox in list(_OPEN_OUTBOXES):
        outbox._engine.dispose(close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_inherited_connections)


def new_owner_id(prefix: str = "worker") -> str:
    """Return a lease owner id unique to this call: host, pid and a random part.

    Owners must be unique per worker: two workers sharing an owner id could complete each
    other's leases.
    """
    return f"{prefix}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Outbox:
    """A durable, multi-process queue of outgoing actions with leased claims.

    Thread-safe: one object may be shared by every thread of a process. Safe across ``fork``: a
    child process drops the connections it inherited and opens its own.
    """

    def __init__(self, url: str | sa.URL, *, table_prefix: str = DEFAULT_TABLE_PREFIX) -> None:
        """Open (and create if missing) the outbox at ``url``; prefer :meth:`from_url`/:meth:`sqlite`."""
        if not _TABLE_PREFIX.fullmatch(table_prefix):
            raise ConfigError(
                f"The outbox table prefix {table_prefix!r} is not valid: use 1-40 letters, digits and "
                "underscores, starting with a letter, such as the default 'xdeps_'."
            )
        parsed = _parse_url(url)
        self._safe_url = parsed.render_as_string(hide_password=True)
        self._dialect = parsed.get_backend_name()
        self._engine = _create_engine(parsed, self._safe_url)
        self._write_engine = self._engine.execution_options(**{_WRITE: True})
        self._closed = False
        self._metadata = sa.MetaData()
        self._table = outbox_table(self._metadata, table_prefix)
        self._prepare_statements()
        try:
            if self._dialect == "sqlite":
                self._ensure_wal()
            self._create_schema()
        except BaseException:
            self._engine.dispose()
            raise
        _OPEN_OUTBOXES.add(self)
        log.debug("Opened outbox %s (table %s)", self._safe_url, self._table.name)

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
        """Close every pooled connection. Idempotent; the object cannot be used afterwards."""
        if not self._closed:
            self._closed = True
            _OPEN_OUTBOXES.discard(self)
            self._engine.dispose()

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
    def engine(self) -> sa.Engine:
        """The engine, for small companion tables kept in the same database (relay state)."""
        return self._engine

    @property
    def write_engine(self) -> sa.Engine:
        """The engine whose transactions take the write lock up front (SQLite ``BEGIN IMMEDIATE``)."""
        return self._write_engine

    @property
    def table_name(self) -> str:
        return self._table.name

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
            _check_new_item(item)
        now = time.time()
        results: list[EnqueueResult] = []
        with self._transaction("enqueue", write=True) as conn:
            for item in items:
                results.append(self._insert_one(conn, item, now))
        return results

    def claim(
        self,
        owner: str,
        *,
        limit: int,
        lease_seconds: float,
        now: float | None = None,
        targets: Collection[str] | None = None,
    ) -> list[Item]:
        """Lease up to ``limit`` due items to ``owner``, oldest first, and return them.

        Due: pending, ``next_attempt_at <= now`` and no live lease. Each claimed item gets
        ``attempts + 1``, ``lease_owner = owner`` and ``lease_until = now + lease_seconds``; its
        ``next_attempt_at`` moves to ``lease_until`` too, so :meth:`next_due_at` reports when an
        unfinished lease could be taken over. ``targets`` restricts the claim to those targets.
        """
        _check_owner(owner)
        if limit < 1:
            raise ValueError(f"claim limit must be at least 1, got {limit}")
        if not lease_seconds > 0:
            raise ValueError(f"lease_seconds must be positive, got {lease_seconds}")
        _check_targets(targets)
        if targets is not None and not targets:
            return []
        now = time.time() if now is None else now
        t = self._table
        lease_until = now + lease_seconds
        due = (
            sa.select(t.c.id)
            .where(t.c.state == PENDING, t.c.next_attempt_at <= now, _no_live_lease(t, now))
            .order_by(t.c.id)
            .limit(limit)
            # PostgreSQL: lock the chosen rows, skipping rows another claim holds. SQLite ignores
            # this and relies on the write lock BEGIN IMMEDIATE took.
            .with_for_update(skip_locked=True)
        )
        if targets is not None:
            due = due.where(t.c.target.in_(list(targets)))
        with self._transaction("claim", write=True) as conn:
            ids = list(conn.execute(due).scalars())
            if not ids:
                return []
            rows = update_returning(
                conn,
                sa.update(t)
                .where(t.c.id.in_(ids), t.c.state == PENDING)
                .values(
                    attempts=t.c.attempts + 1,
                    lease_owner=owner,
                    lease_until=lease_until,
                    next_attempt_at=lease_until,
                    updated_at=now,
                ),
                t,
                t.c.id.in_(ids),
                t.c.lease_owner == owner,
                t.c.lease_until == lease_until,
            )
        return sorted((_item(row) for row in rows), key=lambda item: item.id)

    def renew(
        self, ids: Collection[int], owner: str, *, lease_seconds: float, now: float | None = None
    ) -> set[int]:
        """Extend ``owner``'s leases on ``ids`` to ``now + lease_seconds``; return the ids still held.

        An id missing from the result is no longer this owner's (another worker claimed it after
        the lease ran out, or it was finished or purged): the caller must not send it. A lease
        that ran out but was not taken over is still held, as for :meth:`mark_delivered`.
        """
        _check_owner(owner)
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
        with self._transaction("renew leases", write=True) as conn:
            rows = update_returning(
                conn, stmt, t, t.c.id.in_(list(ids)), t.c.lease_owner == owner, t.c.lease_until == lease_until
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
            last_error=_cut_error(error),
            updated_at=time.time(),
        )

    def mark_dead(self, item_id: int, owner: str, error: str) -> bool:
        """Give up on the item (dead letter), keeping ``error``; :meth:`retry` can revive it.

        Same lease rule as :meth:`mark_delivered`.
        """
        return self._finish(
            "mark_dead", item_id, owner, state=DEAD, last_error=_cut_error(error), updated_at=time.time()
        )

    def retry(self, ids: Sequence[int] | None = None, *, all_dead: bool = False) -> int:
        """Make dead or pending items due now with ``attempts`` reset to 0; return how many changed.

        ``ids`` names items; ``all_dead=True`` takes every dead item (both may be given). Delivered
        items are never re-sent, and an item under a live lease is skipped (a worker is sending
        it right now). ``last_error`` is kept as history.
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
                lease_owner=None,
                lease_until=None,
            )
        )
        with self._transaction("retry", write=True) as conn:
            return conn.execute(stmt).rowcount

    def purge_delivered(self, older_than_seconds: float, *, now: float | None = None) -> int:
        """Delete items delivered more than ``older_than_seconds`` ago; return how many.

        Deletes in batches, each its own short transaction, so a large purge never holds the
        SQLite write lock long enough to slow down enqueue on Airflow's hot path.
        """
        if older_than_seconds < 0:
            raise ValueError(f"older_than_seconds must not be negative, got {older_than_seconds}")
        cutoff = (time.time() if now is None else now) - older_than_seconds
        t = self._table
        batch = (
            sa.select(t.c.id)
            .where(t.c.state == DELIVERED, t.c.delivered_at < cutoff)
            .order_by(t.c.id)
            .limit(PURGE_BATCH)
        )
        total = 0
        while True:
            with self._transaction("purge_delivered", write=True) as conn:
                ids = list(conn.execute(batch).scalars())
                if ids:
                    conn.execute(sa.delete(t).where(t.c.id.in_(ids), t.c.state == DELIVERED))
            total += len(ids)
            if len(ids) < PURGE_BATCH:
                return total

    # -- outcomes of a batch, in one write transaction ------------------------------------------

    def finish_many(self, owner: str, outcomes: Sequence[Outcome]) -> list[bool]:
        """Record what became of several items in one transaction; True for each one applied.

        The batch form of :meth:`mark_delivered`, :meth:`mark_failed` and :meth:`mark_dead`, with
        the same lease rule: an outcome is applied only while ``owner`` still holds the item's
        lease, otherwise it changes nothing and its entry is False. Durable when this returns.
        """
        _check_owner(owner)
        if not outcomes:
            return []
        now = time.time()
        rows = [_outcome_params(o, owner, now) for o in outcomes]  # checked before writing
        statements = self._finish_statements
        with self._transaction("record delivery outcomes", write=True) as conn:
            # Which leases are still the owner's: the rows are locked (PostgreSQL: FOR UPDATE;
            # SQLite: the write lock), so the updates below change exactly these.
            held = set(
                conn.execute(
                    statements["held"], {"f_ids": [o.item_id for o in outcomes], "f_owner": owner}
                ).scalars()
            )
            for state in (DELIVERED, PENDING, DEAD):
                group = [
                    row
                    for o, row in zip(outcomes, rows, strict=True)
                    if o.state == state and o.item_id in held
                ]
                if group:
                    conn.execute(statements[state], group)  # one executemany per state
        applied = [o.item_id in held for o in outcomes]
        lost = [o.item_id for o, ok in zip(outcomes, applied, strict=True) if not ok]
        if lost:
            log.info("Outbox items %s: outcomes by %s ignored, the leases are no longer theirs", lost, owner)
        return applied

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
        with self._transaction("get") as conn:
            row = conn.execute(sa.select(self._table).where(self._table.c.id == item_id)).first()
        return None if row is None else _item(row)

    def list_items(self, state: str | None = None, target: str | None = None, limit: int = 100) -> list[Item]:
        """Up to ``limit`` items, oldest first, optionally only in ``state`` and/or for ``target``."""
        t = self._table
        stmt = sa.select(t).order_by(t.c.id).limit(limit)
        if state is not None:
            _check_state(state)
            stmt = stmt.where(t.c.state == state)
        if target is not None:
            stmt = stmt.where(t.c.target == target)
        with self._transaction("list_items") as conn:
            return [_item(row) for row in conn.execute(stmt)]

    def status(self, now: float | None = None) -> list[StatusRow]:
        """One row per (target, kind, state) with counts and the latest error, sorted by those keys."""
        now = time.time() if now is None else now
        t = self._table
        pending = t.c.state == PENDING
        leased = sa.and_(pending, t.c.lease_until.is_not(None), t.c.lease_until > now)
        due = sa.and_(pending, t.c.next_attempt_at <= now, _no_live_lease(t, now))
        groups = (
            sa.select(
                t.c.target,
                t.c.kind,
                t.c.state,
                sa.func.count().label("total"),
                sa.func.min(t.c.created_at).label("oldest_created_at"),
                sa.func.sum(sa.case((leased, 1), else_=0)).label("in_flight"),
                sa.func.sum(sa.case((due, 1), else_=0)).label("due"),
                sa.func.min(sa.case((pending, t.c.next_attempt_at))).label("next_attempt_at"),
            )
            .group_by(t.c.target, t.c.kind, t.c.state)
            .order_by(t.c.target, t.c.kind, t.c.state)
        )
        ranked = (
            sa.select(
                t.c.target,
                t.c.kind,
                t.c.state,
                t.c.last_error,
                t.c.updated_at,
                sa.func.row_number()
                .over(
                    partition_by=(t.c.target, t.c.kind, t.c.state),
                    order_by=(t.c.updated_at.desc(), t.c.id.desc()),
                )
                .label("rn"),
            )
            .where(t.c.last_error.is_not(None))
            .subquery()
        )
        latest_errors = sa.select(
            ranked.c.target, ranked.c.kind, ranked.c.state, ranked.c.last_error, ranked.c.updated_at
        ).where(ranked.c.rn == 1)
        with self._transaction("status") as conn:
            group_rows = conn.execute(groups).all()
            errors = {
                (r.target, r.kind, r.state): (r.last_error, r.updated_at) for r in conn.execute(latest_errors)
            }
        rows = []
        for r in group_rows:
            last_error, last_error_at = errors.get((r.target, r.kind, r.state), (None, None))
            rows.append(
                StatusRow(
                    target=r.target,
                    kind=r.kind,
                    state=r.state,
                    count=int(r.total),
                    oldest_created_at=float(r.oldest_created_at),
                    in_flight=int(r.in_flight or 0),
                    due=int(r.due or 0),
                    next_attempt_at=None if r.next_attempt_at is None else float(r.next_attempt_at),
                    last_error=last_error,
                    last_error_at=last_error_at,
                )
            )
        return rows

    def next_due_at(self, targets: Collection[str] | None = None) -> float | None:
        """When the earliest pending item becomes claimable (may be in the past); None if none pending.

        Leased items count with their lease expiry, so a worker sleeping until this time also
        wakes up to take over the items of a worker that died.
        """
        t = self._table
        stmt = sa.select(sa.func.min(t.c.next_attempt_at)).where(t.c.state == PENDING)
        _check_targets(targets)
        if targets is not None:
            if not targets:
                return None
            stmt = stmt.where(t.c.target.in_(list(targets)))
        with self._transaction("next_due_at") as conn:
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

    def _ensure_wal(self) -> None:
        """Switch the SQLite file to WAL once (the mode is stored in the file), retrying while busy.

        Converting needs an exclusive lock, and SQLite answers "database is locked" at once,
        without waiting, when two connections try it together (a fresh file opened by two
        processes); so this retries until the busy timeout instead of leaving it to each connection.
        """
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_SECONDS
        while True:
            try:
                raw = self._engine.raw_connection()
            except sa.exc.DBAPIError as exc:
                raise self._outbox_error("open", exc.orig) from exc
            except sqlite3.Error as exc:  # raised by the connect hook's PRAGMAs, unwrapped
                raise self._outbox_error("open", exc) from exc
            try:
                cursor = raw.cursor()
                try:
                    mode = str(cursor.execute("PRAGMA journal_mode = WAL").fetchone()[0])
                finally:
                    cursor.close()
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise self._outbox_error("switch to WAL mode", exc) from exc
            except sqlite3.Error as exc:
                raise self._outbox_error("switch to WAL mode", exc) from exc
            finally:
                raw.close()
            time.sleep(0.01)
        if mode.lower() != "wal":
            log.warning(
                "The outbox SQLite file %s could not switch to WAL (journal_mode is %s); it still works "
                "but writers block readers. WAL needs a local file system, not a network share.",
                self._safe_url,
                mode,
            )

    def _insert_one(self, conn: sa.Connection, item: NewItem, now: float) -> EnqueueResult:
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
                raise TypeError(
                    f"The payload of outbox item {item.idempotency_key!r} for {item.target!r} cannot be "
                    f"stored as JSON: {exc.orig}. Build payloads from str, int, float, bool, None, "
                    "lists and dicts only (datetimes as ISO strings)."
                ) from exc
            if new_id is not None:
                return EnqueueResult(id=new_id, created=True)
            existing = conn.execute(self._find_key_stmt, key).scalar_one_or_none()
            if existing is not None:
                return EnqueueResult(id=existing, created=False)
        raise OutboxError(
            f"The outbox {self._safe_url} could not enqueue {item.idempotency_key!r} for {item.target!r}: "
            "its key kept conflicting with an item that then disappeared. Try again."
        )

    def _create_schema(self) -> None:
        """Create the table and indexes unless present; safe when processes race to do it.

        On SQLite the check and the CREATE run under the write lock. On PostgreSQL the loser of a
        race fails on the duplicate and, on the next try, finds the winner's committed table.
        """
        for attempt in range(3):
            try:
                with self._transaction("create the outbox table", write=True, wrap=False) as conn:
                    self._metadata.create_all(conn, checkfirst=True)
                return
            except (sa.exc.IntegrityError, sa.exc.ProgrammingError) as exc:
                if attempt == 2:
                    raise self._outbox_error("create the outbox table", exc.orig) from exc
                log.debug("Outbox table creation raced with another process; checking again: %s", exc.orig)
            except sa.exc.DBAPIError as exc:
                raise self._outbox_error("open", exc.orig) from exc
            except (sqlite3.Error, sa.exc.SQLAlchemyError) as exc:
                raise self._outbox_error("open", exc) from exc

    @contextmanager
    def _transaction(self, op: str, *, write: bool = False, wrap: bool = True) -> Iterator[sa.Connection]:
        """A connection in a transaction, committed on success; database errors become OutboxError."""
        if self._closed:
            raise OutboxError(f"The outbox {self._safe_url} is closed; open a new Outbox to {op}.")
        engine = self._write_engine if write else self._engine
        try:
            with engine.begin() as conn:
                yield conn
        except sa.exc.DBAPIError as exc:
            if not wrap:
                raise
            raise self._outbox_error(op, exc.orig) from exc
        except sa.exc.TimeoutError as exc:
            raise OutboxError(
                f"The outbox {self._safe_url} could not {op}: every pooled connection stayed busy "
                "too long. Try: fewer threads using one Outbox at once, or look for "
                "a slow or stuck database."
            ) from exc
        except sqlite3.Error as exc:
            # A new pooled connection's PRAGMAs failed (the file was damaged or replaced meanwhile).
            raise self._outbox_error(op, exc) from exc
        except sa.exc.SQLAlchemyError as exc:
            if not wrap:
                raise
            raise self._outbox_error(op, exc) from exc

    def _finish(self, op: str, item_id: int, owner: str, **values: Any) -> bool:
        t = self._table
        stmt = (
            sa.update(t)
            .where(t.c.id == item_id, t.c.state == PENDING, t.c.lease_owner == owner)
            .values(lease_owner=None, lease_until=None, **values)
        )
        with self._transaction(op, write=True) as conn:
            changed = conn.execute(stmt).rowcount == 1
        if not changed:
            log.info("Outbox item %s: %s by %s ignored, the lease is no longer theirs", item_id, op, owner)
        return changed

    def _outbox_error(self, op: str, error: BaseException | None) -> OutboxError:
        reason = _reason(error)
        if self._dialect == "sqlite" and _is_corrupt(error):
            path = self._engine.url.database or ""
            return OutboxError(
                f"The outbox {self._safe_url} could not {op}: {reason}. The file {path} is damaged or is "
                f"not an SQLite database. Try: stop the Airflow processes that use it, move it aside "
                f"together with its -wal and -shm files (mv {path} {path}.corrupt), and start them "
                "again: a new, empty outbox is created. Items of the old file that were not "
                f"delivered yet may be recovered with: sqlite3 {path}.corrupt .recover"
            )
        if self._dialect == "sqlite":
            hint = (
                "check that the file's folder exists and is writable, that the disk is not full, and that "
                "no other process holds a write transaction open for more than "
                f"{SQLITE_BUSY_TIMEOUT_SECONDS:g} s."
            )
        else:
            hint = (
                "check that PostgreSQL is running and reachable from this host, and that the URL's user, "
                "password, host, port and database are right (the user needs CREATE on first use)."
            )
        return OutboxError(f"The outbox {self._safe_url} could not {op}: {reason}. Try: {hint}")


# -- module helpers ------------------------------------------------------------------------------


def _parse_url(url: str | sa.URL) -> sa.URL:
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(
            "The outbox URL could not be parsed. Use sqlite:////absolute/path/xdeps_outbox.db or "
            "postgresql+psycopg2://user:password@host:5432/database."
        ) from exc
    safe = parsed.render_as_string(hide_password=True)
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"The outbox URL {safe} uses {backend!r}; the outbox supports sqlite and postgresql "
            "(postgresql+psycopg2://user:password@host:5432/database)."
        )
    if backend == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or parsed.query.get("mode") == "memory":
            raise ConfigError(
                f"The outbox URL {safe} is an in-memory SQLite database, which loses every item when "
                "the process ends. Give a file path, e.g. sqlite:////opt/airflow/xdeps_outbox.db."
            )
        if not parsed.query.get("uri"):
            folder = Path(database).expanduser().resolve().parent
            if not folder.is_dir():
                raise ConfigError(
                    f"The outbox file's folder {str(folder)!r} does not exist. Create it, or point the "
                    "outbox at an existing folder such as $AIRFLOW_HOME."
                )
    return parsed


def _create_engine(url: sa.URL, safe_url: str) -> sa.Engine:
    try:
        if url.get_backend_name() == "sqlite":
            # File databases get a thread-safe QueuePool (check_same_thread off) by default.
            engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
            event.listen(engine, "connect", _sqlite_on_connect)
            event.listen(engine, "begin", _sqlite_on_begin)
            return engine
        connect_args: dict[str, Any] = {}
        if url.get_driver_name() == "psycopg2":
            if "connect_timeout" not in url.query:
                connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_SECONDS
            if "application_name" not in url.query:
                connect_args["application_name"] = "astro-xdeps-outbox"
        return create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    except (ImportError, sa.exc.NoSuchModuleError) as exc:
        raise ConfigError(
            f"The outbox URL {safe_url} needs a database driver that is not installed ({exc}). "
            "For PostgreSQL install astro-xdeps[postgres] (psycopg2-binary)."
        ) from exc
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"The outbox URL {safe_url} is not valid: {exc}") from exc


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    """Per connection: wait for locks, durable-on-crash sync; SQLAlchemy issues BEGIN (below).

    Setting ``isolation_level = None`` stops the sqlite3 driver from emitting its own BEGIN
    (it skips it for SELECT and DDL), per SQLAlchemy's documented recipe for SQLite transactions.
    """
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_SECONDS * 1000)}")
        # With WAL (set once per file by Outbox._ensure_wal) NORMAL syncs at checkpoints only: a
        # commit survives the process being killed; only a power cut may lose the last commits.
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: sa.Connection) -> None:
    """Writers take the write lock at BEGIN, so read-then-write claims are atomic across processes."""
    immediate = conn.get_execution_options().get(_WRITE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _is_corrupt(error: BaseException | None) -> bool:
    """SQLite says the file is damaged or not a database (not merely locked, full or unreadable)."""
    if not isinstance(error, sqlite3.DatabaseError):
        return False
    text = str(error).lower()
    return type(error) is sqlite3.DatabaseError or any(
        word in text for word in ("malformed", "not a database", "corrupt")
    )


def _reason(error: BaseException | None) -> str:
    """The driver's own message, on one line: it holds no SQL parameters (payloads) and no password."""
    return " ".join(str(error).split())[:300] or type(error).__name__


def _no_live_lease(t: sa.Table, now: float) -> sa.ColumnElement[bool]:
    return sa.or_(t.c.lease_until.is_(None), t.c.lease_until <= now)


def _item(row: sa.Row[Any]) -> Item:
    m = row._mapping
    return Item(
        id=m["id"],
        kind=m["kind"],
        target=m["target"],
        payload=m["payload"],
        idempotency_key=m["idempotency_key"],
        state=m["state"],
        attempts=m["attempts"],
        created_at=m["created_at"],
        next_attempt_at=m["next_attempt_at"],
        updated_at=m["updated_at"],
        delivered_at=m["delivered_at"],
        last_error=m["last_error"],
        lease_owner=m["lease_owner"],
        lease_until=m["lease_until"],
        result=m["result"],
    )


def _outcome_params(o: Outcome, owner: str, now: float) -> dict[str, Any]:
    """The bind parameters of ``o``'s statement in :meth:`Outbox.finish_many`."""
    params: dict[str, Any] = {"f_id": o.item_id, "f_owner": owner, "f_now": now}
    if o.state == DELIVERED:
        params["f_result"] = o.result
    elif o.state in (PENDING, DEAD):
        params["f_error"] = _cut_error(o.error or "")
        if o.state == PENDING:
            if o.next_attempt_at is None:
                raise ValueError(f"Outcome of item {o.item_id}: a retry needs next_attempt_at")
            params["f_next"] = o.next_attempt_at
    else:
        raise ValueError(f"Outcome of item {o.item_id}: unknown state {o.state!r}")
    return params


def _cut_error(error: str) -> str:
    error = str(error)
    if len(error) <= MAX_ERROR_CHARS:
        return error
    return error[: MAX_ERROR_CHARS - 1] + "…"


def _check_new_item(item: NewItem) -> None:
    if item.kind not in KINDS:
        raise ValueError(f"Outbox item kind {item.kind!r} is unknown; use one of {', '.join(KINDS)}.")
    if not isinstance(item.target, str) or not 0 < len(item.target) <= MAX_TARGET_CHARS:
        raise ValueError(f"Outbox item target must be a connection id of 1-{MAX_TARGET_CHARS} characters.")
    if not isinstance(item.idempotency_key, str) or not 0 < len(item.idempotency_key) <= MAX_KEY_CHARS:
        raise ValueError(
            f"Outbox item idempotency_key must be a string of 1-{MAX_KEY_CHARS} characters "
            f"(got {len(str(item.idempotency_key))}); hash longer keys."
        )
    if not isinstance(item.payload, dict):
        raise TypeError(f"Outbox item payload must be a dict, got {type(item.payload).__name__}.")


def _check_owner(owner: str) -> None:
    if not isinstance(owner, str) or not 0 < len(owner) <= MAX_OWNER_CHARS:
        raise ValueError(f"Lease owner must be a string of 1-{MAX_OWNER_CHARS} characters.")


def _check_targets(targets: Collection[str] | None) -> None:
    if isinstance(targets, str):
        raise TypeError(f"targets must be a collection of connection ids, e.g. [{targets!r}], not a string.")


def _check_state(state: str) -> None:
    if state not in STATES:
        raise ValueError(f"Outbox state {state!r} is unknown; use one of {', '.join(STATES)}.")

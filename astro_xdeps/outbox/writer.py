"""One writer per database per process: every write goes through it, with group commit (SQLite).

Why: SQLite has one write lock per file. When several threads of a process each run their own
``BEGIN IMMEDIATE`` transaction, the losers sleep in SQLite's busy handler (1, 2, 5, 10 ... ms)
although the lock is held for a tenth of a millisecond; and every transaction pays its own
COMMIT. Here one connection per process does all writing, one committer at a time. Callers hand
it an operation ``op(conn)``; the committer takes whatever has arrived, runs each op inside its
own SAVEPOINT (so one failing op fails only its caller), COMMITs them together in ONE
transaction, and then wakes the callers.
A caller returns only after the COMMIT: its write is as durable as before (WAL,
``synchronous=NORMAL``: survives the process being killed). The committer is whichever caller
finds nobody committing (see :class:`Writer`), so a quiet outbox costs no thread switch.

A write made from inside an op (the relay's ingest writes state, outbox items and its journal)
runs at once on the same connection, in a nested SAVEPOINT.

PostgreSQL has no single write lock (claims use ``SKIP LOCKED``, rows lock separately) and
commits of several connections already proceed in parallel, so funnelling them through one
thread and connection would only serialise them: :class:`DirectWriter` runs each op in its own
transaction on the caller's thread.

Writing a batch operation (e.g. outcomes of many items) against this: one op that runs all its
statements, ``outbox.write("record outcomes", lambda conn: conn.execute(stmt, rows))`` (or a loop
of executes) — committed with whatever else arrived, atomic (its own SAVEPOINT), errors mapped
to OutboxError by ``Outbox.write``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa

from astro_xdeps.outbox import pacing

log = logging.getLogger(__name__)

T = TypeVar("T")

_BEGIN_NESTED = "SAVEPOINT xdeps_op"
_ROLLBACK_NESTED = "ROLLBACK TO xdeps_op"
_END_NESTED = "RELEASE xdeps_op"

# WAL checkpoints (copying the log back into the database file, with an fsync) run on a thread of
# their own after every CHECKPOINT_EVERY commits, not inside a caller's COMMIT: SQLite's automatic
# checkpoint (every 1,000 pages) made one commit in ~120 of the listener's enqueue take several ms.
# The write connection still checkpoints by itself past SAFETY_CHECKPOINT_PAGES (~40 MB of log),
# so the log stays bounded if the checkpoint thread falls behind.
CHECKPOINT_EVERY = 100
SAFETY_CHECKPOINT_PAGES = 10_000


class _Request:
    __slots__ = ("error", "finished", "future", "loop", "op", "result")

    def __init__(self, op: Callable[[sa.Connection], Any]) -> None:
        self.op = op
        self.result: Any = None
        self.error: BaseException | None = None
        self.finished = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.future: asyncio.Future[Any] | None = None


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():  # the caller went away; the write itself is done (or failed) anyway
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Writer:
    """The process's single write path to an SQLite file: one connection, one committer at a time.

    Group commit with a leader: a caller that finds nobody committing takes every queued op and
    commits them itself, on its own thread (no hand-off to another thread when the outbox is
    quiet: the listener's enqueue pays no thread switch); callers that arrive meanwhile queue
    and are committed by the next leader. asyncio callers never wait on their loop: the ops a
    loop hands over in one turn commit together there, at the end of that turn, when nobody
    writes and SQLite's lock is free this instant; otherwise a background thread, started on
    their first such write, leads for them. WAL checkpoints run on a thread of their own
    (:meth:`_checkpoint_loop`), never inside a caller's COMMIT.
    """

    def __init__(self, write_engine: sa.Engine) -> None:
        self._engine = write_engine  # its transactions begin with BEGIN IMMEDIATE
        self.forget()

    def forget(self) -> None:
        """Start over without thread or connection (after fork: the parent's are not ours)."""
        self._cond = threading.Condition(threading.Lock())
        self._queue: list[_Request] = []
        self._leader: int | None = None  # thread ident of the caller committing now
        self._thread: threading.Thread | None = None
        self._conn: sa.Connection | None = None
        self._closed = False
        # Async path: the write connection's busy_timeout (None: not read yet on this connection).
        self._patience: int | None = None
        # WAL checkpoints: commits since the last one was asked for, and the thread that runs them.
        self._commits = 0
        self._checkpoint_due = threading.Event()
        self._checkpointer: threading.Thread | None = None
        # Ops of asyncio callers waiting for their loop's next turn (_flush_loop), per loop.
        self._loop_batches: dict[asyncio.AbstractEventLoop, list[_Request]] = {}

    def close(self) -> None:
        """Let queued writes finish, stop the background thread and close the connection."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            threads = [t for t in (self._thread, self._checkpointer) if t is not None]
        self._checkpoint_due.set()  # the checkpoint thread sees _closed and ends
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout=30)
        with self._cond:
            while self._leader is not None:
                self._cond.wait(30)
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # -- callers ---------------------------------------------------------------------------------

    def current_connection(self) -> sa.Connection | None:
        """The write connection when called from inside an op being committed, else None."""
        return self._conn if self._leader == threading.get_ident() else None

    def run(self, op: Callable[[sa.Connection], T]) -> T:
        conn = self.current_connection()
        if conn is not None:
            return _nested(conn, op)
        # A background thread (the delivery worker's) lets a listener's write in flight go first.
        pacing.yield_to_foreground()
        request = _Request(op)
        self._put([request])
        while True:
            with self._cond:
                while self._leader is not None and not request.finished:
                    self._cond.wait()
                if request.finished:
                    break
                batch = self._lead()
            self._commit(batch)
        if request.error is not None:
            raise request.error
        return request.result

    async def run_async(self, op: Callable[[sa.Connection], T]) -> T:
        """Commit ``op`` on the event loop's own thread, together with every other op its loop
        hands over in the same turn (group commit without a thread: :meth:`_flush_loop`)."""
        request = _Request(op)
        loop = request.loop = asyncio.get_running_loop()
        request.future = loop.create_future()
        with self._cond:
            if self._closed:
                raise sa.exc.InvalidRequestError("the database is closed")
            batch = self._loop_batches.get(loop)
            if batch is None:
                batch = self._loop_batches[loop] = []
                loop.call_soon(self._flush_loop, loop)
            batch.append(request)
        return await request.future

    def _flush_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Commit what the loop's requests handed over this turn, on the loop, in ONE transaction,
        when nobody is writing and SQLite's lock is free this instant (no thread hop, no GIL
        hand-off per statement, one COMMIT for many requests); else hand them to the background
        leader and never block the loop."""
        with self._cond:
            batch = self._loop_batches.pop(loop, [])
            inline = self._leader is None and not self._queue and not self._closed
            if inline:
                self._leader = threading.get_ident()
        if not batch:
            return
        if inline:
            if self._begin_now():
                self._commit(batch, begun=True)
                return
            with self._cond:
                self._leader = None
                self._cond.notify_all()
        try:
            self._put(batch, background=True)
        except sa.exc.InvalidRequestError as exc:  # closed meanwhile: nothing of the batch was queued
            for request in batch:
                assert request.future is not None
                _resolve(request.future, None, exc)

    def _begin_now(self) -> bool:
        """BEGIN IMMEDIATE only if the write lock is free right now: on an event loop, never wait.

        False when another process holds it (or the connection cannot be opened): the caller
        then hands its op to the background leader, which waits and reports errors as usual.
        """
        try:
            if self._conn is None:
                self._conn = self._connect()
            raw = self._conn.connection.driver_connection
            if self._patience is None:
                self._patience = int(raw.execute("PRAGMA busy_timeout").fetchone()[0])
            raw.execute("PRAGMA busy_timeout = 0")
            try:
                self._conn.begin()
            finally:
                raw.execute(f"PRAGMA busy_timeout = {self._patience}")
            return True
        except Exception as exc:  # locked, or no connection: the background leader tries with patience
            log.debug("Outbox write lock not free at once (%s); handing the write to the writer thread", exc)
            self._discard_connection()
            return False

    def _put(self, requests: list[_Request], *, background: bool = False) -> None:
        with self._cond:
            if self._closed:
                raise sa.exc.InvalidRequestError("the database is closed")
            self._queue += requests
            if background and self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="xdeps-outbox-writer", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _lead(self) -> list[_Request]:
        """Become the committer of everything queued (called holding the lock)."""
        self._leader = threading.get_ident()
        batch, self._queue = self._queue, []
        return batch

    # -- committing ------------------------------------------------------------------------------

    def _loop(self) -> None:
        """The background leader, for asyncio callers (and any queued op when it is free)."""
        while True:
            with self._cond:
                while not self._queue or self._leader is not None:
                    if self._closed and not self._queue:
                        return
                    self._cond.wait()
                batch = self._lead()
            self._commit(batch)

    def _commit(self, batch: list[_Request], *, begun: bool = False) -> None:
        """Commit ``batch`` in one transaction, then wake its callers and hand over the lead."""
        try:
            if self._conn is None:
                self._conn = self._connect()
            conn = self._conn
            if not begun:
                conn.begin()
            if len(batch) == 1:  # alone: no SAVEPOINT needed, a failure rolls back its own work
                try:
                    batch[0].result = batch[0].op(conn)
                except BaseException as exc:  # handed to the caller
                    batch[0].error = exc
                    conn.rollback()
            else:
                for request in batch:
                    try:
                        request.result = _nested(conn, request.op)
                    except BaseException as exc:  # handed to the caller
                        request.error = exc
            if conn.in_transaction():
                conn.commit()
                self._count_commit()
        except BaseException as exc:  # BEGIN or COMMIT failed: every caller gets it
            for request in batch:
                if request.error is None:
                    request.error = exc
            self._discard_connection()
        for request in batch:
            if request.future is not None:
                assert request.loop is not None
                with contextlib.suppress(RuntimeError):  # RuntimeError: the caller's loop is closed
                    request.loop.call_soon_threadsafe(_resolve, request.future, request.result, request.error)
        with self._cond:
            for request in batch:
                request.finished = True
            self._leader = None
            self._cond.notify_all()

    def _connect(self) -> sa.Connection:
        """The write connection, checkpointing by itself only as a safety net (see CHECKPOINT_EVERY)."""
        conn = self._engine.connect()
        conn.connection.driver_connection.execute(f"PRAGMA wal_autocheckpoint = {SAFETY_CHECKPOINT_PAGES}")
        return conn

    def _count_commit(self) -> None:
        """Every CHECKPOINT_EVERY commits, wake the checkpoint thread (started on first need)."""
        self._commits += 1  # only the leader commits: no lock needed
        if self._commits < CHECKPOINT_EVERY:
            return
        self._commits = 0
        if self._checkpointer is None:
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, name="xdeps-outbox-checkpoint", daemon=True
            )
            self._checkpointer.start()
        self._checkpoint_due.set()

    def _checkpoint_loop(self) -> None:
        """Copy the WAL into the database on a connection of its own, off every caller's path.

        PASSIVE never waits for readers or writers (they keep going meanwhile); whatever it could
        not copy this time is copied next time, or by the write connection's safety net.
        """
        raw = None
        try:
            while True:
                self._checkpoint_due.wait()
                self._checkpoint_due.clear()
                if self._closed:
                    return
                try:
                    if raw is None:
                        raw = self._engine.raw_connection()
                    raw.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except Exception as exc:  # not fatal: the safety net checkpoints eventually
                    log.debug("Outbox WAL checkpoint failed: %s", exc)
                    if raw is not None:
                        raw.invalidate()
                        raw = None
        finally:
            if raw is not None:
                raw.close()

    def _discard_connection(self) -> None:
        """After a failed BEGIN or COMMIT: roll back and start the next batch on a new connection."""
        conn, self._conn = self._conn, None
        self._patience = None
        if conn is None:
            return
        try:
            conn.rollback()
            conn.close()
        except Exception as exc:
            log.debug("Dropping the outbox write connection: %s", exc)
            conn.invalidate()


def _nested(conn: sa.Connection, op: Callable[[sa.Connection], T]) -> T:
    """``op(conn)`` inside a SAVEPOINT of the open transaction: on error only its work is undone.

    The SAVEPOINT statements go to the sqlite3 connection directly (the driver is in autocommit
    mode, SQLAlchemy's BEGIN hook owns the transaction): through SQLAlchemy's execution
    machinery they cost more than the INSERT they protect.
    """
    raw = conn.connection.driver_connection
    raw.execute(_BEGIN_NESTED)
    try:
        result = op(conn)
    except BaseException:
        raw.execute(_ROLLBACK_NESTED)
        raw.execute(_END_NESTED)
        raise
    raw.execute(_END_NESTED)
    return result


class DirectWriter:
    """PostgreSQL: each op in its own transaction on the caller's thread (see the module doc)."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def forget(self) -> None:
        """Nothing to drop: this writer keeps no thread or connection of its own."""

    def close(self) -> None:
        """Nothing to stop."""

    def current_connection(self) -> sa.Connection | None:
        return None

    def run(self, op: Callable[[sa.Connection], T]) -> T:
        with self._engine.begin() as conn:
            return op(conn)

    async def run_async(self, op: Callable[[sa.Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, self.run, op)

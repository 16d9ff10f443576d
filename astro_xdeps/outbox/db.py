"""The database under the outbox and the relay's tables: one place for URL, engine and errors.

:class:`Database` parses and checks the URL, creates the engine (SQLite: WAL, ``busy_timeout``,
``synchronous=NORMAL``; PostgreSQL: connect timeout, pre-ping), creates tables with a retry for
processes racing to do it, gives readers a snapshot, sends every write through the process's
:class:`~astro_xdeps.outbox.writer.Writer`, and turns driver errors into one message that names
the database (password hidden) and says what to check. Callers wrap that message in their own
error class (:class:`~astro_xdeps.exceptions.OutboxError`, ``RelayStateError``).

Fork safety: a forked child drops the pooled connections and the writer it inherited
(``os.register_at_fork``, once for every open database) and opens its own on first use.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event

from astro_xdeps.exceptions import ConfigError
from astro_xdeps.outbox.sa_compat import create_engine, make_url
from astro_xdeps.outbox.writer import DirectWriter, Writer

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_SECONDS = 10.0
PG_CONNECT_TIMEOUT_SECONDS = 10

T = TypeVar("T")

# Execution option that makes the SQLite "begin" hook take the write lock up front.
_WRITE = "xdeps_write"

# Databases open in this process, so a forked child can drop what it inherited.
_OPEN: weakref.WeakSet[Database] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """Give every open database a fresh pool and writer before anything in the child uses them.

    ``dispose(close=False)`` drops the parent's connections (sockets, SQLite file handles)
    without closing them, as SQLAlchemy documents for forks; the parent's writer thread does not
    exist in the child, so its queue and lock are replaced too.
    """
    for db in list(_OPEN):
        db.engine.dispose(close=False)
        db.writer.forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Database:
    """An engine, its write path and its error messages, shared by the outbox and relay tables."""

    def __init__(self, url: str | sa.URL) -> None:
        parsed = parse_url(url)
        self.safe_url = parsed.render_as_string(hide_password=True)
        self.dialect = parsed.get_backend_name()
        self.engine = _create_engine(parsed, self.safe_url)
        self.write_engine = self.engine.execution_options(**{_WRITE: True})
        self.writer: Writer | DirectWriter = (
            Writer(self.write_engine) if self.dialect == "sqlite" else DirectWriter(self.engine)
        )
        self.closed = False
        _OPEN.add(self)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            _OPEN.discard(self)
            self.writer.close()
            self.engine.dispose()

    # -- reading and writing ---------------------------------------------------------------------

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        """A connection in a read transaction (one snapshot); never takes the write lock.

        On the writer's own thread (a read inside a write) it is the write connection, so the read
        sees what the write has done so far.
        """
        conn = self.writer.current_connection()
        if conn is not None:
            yield conn
            return
        with self.engine.begin() as conn:
            yield conn

    def write(self, op: Callable[[sa.Connection], T]) -> T:
        """Run ``op(conn)`` in the process's write transaction; return once it is durable."""
        return self.writer.run(op)

    async def write_async(self, op: Callable[[sa.Connection], T]) -> T:
        """:meth:`write` for the event loop: awaits the commit without holding a thread."""
        return await self.writer.run_async(op)

    # -- schema ------------------------------------------------------------------------------------

    def create_schema(self, create: Callable[[sa.Connection], None]) -> None:
        """Run ``create(conn)`` (``create_all(checkfirst=True)``, upgrades) under the write lock.

        On SQLite the check and the CREATE run under the write lock (``BEGIN IMMEDIATE``). On
        PostgreSQL the loser of a race fails on the duplicate and, on the next try, finds the
        winner's committed table. Raises the driver's error; callers map it with :meth:`message`.
        """
        if self.dialect == "sqlite":
            self._ensure_wal()
        for attempt in range(3):
            try:
                with self.write_engine.begin() as conn:
                    create(conn)
                return
            except (sa.exc.IntegrityError, sa.exc.ProgrammingError):
                if attempt == 2:
                    raise
                log.debug("Creating tables in %s raced with another process; checking again", self.safe_url)

    def _ensure_wal(self) -> None:
        """Switch the SQLite file to WAL once (the mode is stored in the file), retrying while busy.

        Converting needs an exclusive lock, and SQLite answers "database is locked" at once,
        without waiting, when two connections try it together (a fresh file opened by two
        processes); so this retries until the busy timeout instead of leaving it to each connection.
        """
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_SECONDS
        while True:
            raw = self.engine.raw_connection()
            try:
                cursor = raw.cursor()
                try:
                    mode = str(cursor.execute("PRAGMA journal_mode = WAL").fetchone()[0])
                finally:
                    cursor.close()
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            finally:
                raw.close()
            time.sleep(0.01)
        if mode.lower() != "wal":
            log.warning(
                "The SQLite file %s could not switch to WAL (journal_mode is %s); it still works "
                "but writers block readers. WAL needs a local file system, not a network share.",
                self.safe_url,
                mode,
            )

    # -- errors --------------------------------------------------------------------------------

    def message(self, subject: str, op: str, error: BaseException) -> str:
        """What failed, the driver's reason and what to check, for any error a call raised.

        ``subject`` names the store, e.g. ``f"The outbox {db.safe_url}"`` or ``"The relay state"``.
        """
        orig = getattr(error, "orig", None) or error
        reason = _reason(orig)
        if isinstance(error, sa.exc.TimeoutError):
            return (
                f"{subject} could not {op}: every pooled connection stayed busy too long. "
                "Try: fewer threads using it at once, or look for a slow or stuck database."
            )
        if self.dialect == "sqlite" and _is_corrupt(orig):
            path = self.engine.url.database or ""
            return (
                f"{subject} could not {op}: {reason}. The file {path} is damaged or is "
                f"not an SQLite database. Try: stop the Airflow processes that use it, move it aside "
                f"together with its -wal and -shm files (mv {path} {path}.corrupt), and start them "
                "again: a new, empty outbox is created. Items of the old file that were not "
                f"delivered yet may be recovered with: sqlite3 {path}.corrupt .recover"
            )
        if self.dialect == "sqlite":
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
        return f"{subject} could not {op}: {reason}. Try: {hint}"


# Errors a database call can raise: SQLAlchemy's, and sqlite3's own from a new connection's PRAGMAs.
DB_ERRORS: tuple[type[BaseException], ...] = (sa.exc.SQLAlchemyError, sqlite3.Error)


def parse_url(url: str | sa.URL) -> sa.URL:
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
        # With WAL (set once per file by Database._ensure_wal) NORMAL syncs at checkpoints only: a
        # commit survives the process being killed; only a power cut may lose the last commits.
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: sa.Connection) -> None:
    """Writers take the write lock at BEGIN, so read-then-write claims are atomic across processes.

    Sent on the driver's connection: through ``exec_driver_sql`` the BEGIN cost the listener's
    write three times what SQLite takes to run it."""
    immediate = conn.get_execution_options().get(_WRITE, False)
    conn.connection.driver_connection.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")


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

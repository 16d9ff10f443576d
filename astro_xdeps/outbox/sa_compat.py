"""SQLAlchemy 1.4 (what Airflow 2.x pins) versus 2.x (Airflow 3.x): the few calls that differ.

The outbox and the relay state are written in 2.0-style Core. On 1.4 that style needs a
``future=True`` engine, ``make_url``/``URL`` live in ``sqlalchemy.engine``, and the SQLite dialect
cannot compile ``RETURNING`` and ``Double`` is ``Float`` (SQLAlchemy added it for SQLite in 2.0). Everything else is shared.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from packaging.version import Version

SQLALCHEMY_2 = Version(sa.__version__) >= Version("2.0")

if SQLALCHEMY_2:
    from sqlalchemy import URL, Double, make_url
else:  # pragma: no cover - SQLAlchemy 1.4 (Airflow 2.x)
    from sqlalchemy import Float as Double  # FLOAT without precision: float8 on PostgreSQL, as Double
    from sqlalchemy.engine import URL, make_url  # type: ignore[no-redef]

__all__ = [
    "SQLALCHEMY_2",
    "URL",
    "Double",
    "create_engine",
    "inserted_id",
    "make_url",
    "supports_returning",
    "update_returning",
]


def create_engine(url: Any, **kwargs: Any) -> sa.engine.Engine:
    """``sa.create_engine`` with 2.0 semantics on 1.4 as well.

    That is ``future=True`` and, for an SQLite file, 2.0's pool: a thread-safe ``QueuePool``
    (1.4 defaults to ``NullPool``, a new connection and its PRAGMAs per transaction).
    """
    if not SQLALCHEMY_2:
        kwargs.setdefault("future", True)
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            kwargs.setdefault("poolclass", sa.pool.QueuePool)
            kwargs["connect_args"] = {"check_same_thread": False, **kwargs.get("connect_args", {})}
    return sa.create_engine(url, **kwargs)


def supports_returning(dialect_name: str) -> bool:
    """Whether ``INSERT/UPDATE ... RETURNING`` compiles for this backend on this SQLAlchemy."""
    return SQLALCHEMY_2 or dialect_name != "sqlite"


def inserted_id(result: Any) -> int | None:
    """The new row's id from an ``INSERT ... ON CONFLICT DO NOTHING`` (None: it conflicted).

    With ``RETURNING`` the id is the result's row; without it (SQLite on 1.4) the driver's
    ``lastrowid`` is the id when one row was inserted.
    """
    if result.returns_rows:
        return result.scalar_one_or_none()
    return result.lastrowid if result.rowcount == 1 else None


def update_returning(conn: Any, stmt: Any, table: sa.Table, *changed: Any) -> list[Any]:
    """Run the UPDATE ``stmt`` and return the full rows it changed.

    Without ``RETURNING`` (SQLite on 1.4) the rows are read back by ``changed`` — conditions that
    match exactly the updated rows — in the same transaction; callers hold SQLite's write lock
    (``BEGIN IMMEDIATE``), so nobody can change them in between.
    """
    if supports_returning(conn.dialect.name):
        return conn.execute(stmt.returning(*table.c)).all()
    conn.execute(stmt)
    return conn.execute(sa.select(table).where(*changed)).all()

"""Outbox fixtures: the same behavioural tests run against SQLite and PostgreSQL.

PostgreSQL tests use the ``pg_url`` fixture (``tests/unit/conftest.py``). Each test gets its own
table prefix, dropped afterwards, so tests never see each other's items.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa

from astro_xdeps.outbox import DEFAULT_SQLITE_FILENAME, Outbox
from astro_xdeps.outbox.models import DEFAULT_TABLE_PREFIX


@dataclass
class Store:
    """Where one test's outbox lives; ``open()`` returns a new Outbox on it (closed at teardown).

    ``url`` and ``table_prefix`` are plain values so child processes can open the same store.
    """

    backend: str
    url: str
    table_prefix: str
    _opened: list[Outbox] = field(default_factory=list)

    def open(self) -> Outbox:
        outbox = Outbox.from_url(self.url, table_prefix=self.table_prefix)
        self._opened.append(outbox)
        return outbox

    def close_all(self) -> None:
        for outbox in self._opened:
            outbox.close()


@pytest.fixture
def pg_prefix(pg_url: str) -> Iterator[str]:
    """A table prefix no other test uses; its outbox table is dropped after the test."""
    prefix = f"xdeps_t{uuid.uuid4().hex[:10]}_"
    yield prefix
    drop_pg_outbox(pg_url, prefix)


def drop_pg_outbox(pg_url: str, prefix: str) -> None:
    """Drop what an outbox with ``prefix`` creates on PostgreSQL: its table, counts table and trigger function."""
    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{prefix}outbox", "{prefix}outbox_counts"')
            conn.exec_driver_sql(f'DROP FUNCTION IF EXISTS "{prefix}outbox_count"()')
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[Store]:
    """An empty outbox store on each backend."""
    if request.param == "sqlite":
        spec = Store("sqlite", f"sqlite:///{tmp_path / DEFAULT_SQLITE_FILENAME}", DEFAULT_TABLE_PREFIX)
    else:
        spec = Store("postgresql", request.getfixturevalue("pg_url"), request.getfixturevalue("pg_prefix"))
    yield spec
    spec.close_all()


@pytest.fixture
def outbox(store: Store) -> Outbox:
    return store.open()


@pytest.fixture
def sqlite_store(tmp_path) -> Iterator[Store]:
    """An empty SQLite outbox store, for SQLite-only tests."""
    spec = Store("sqlite", f"sqlite:///{tmp_path / DEFAULT_SQLITE_FILENAME}", DEFAULT_TABLE_PREFIX)
    yield spec
    spec.close_all()

"""SQLite specifics: file settings, waiting for the write lock, and URLs that cannot work."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from astro_xdeps.exceptions import ConfigError
from astro_xdeps.outbox import ASSET_EVENT, NewItem, Outbox, OutboxError
from astro_xdeps.outbox import db as db_module


def test_file_uses_wal_and_every_connection_is_durable_and_patient(sqlite_store) -> None:
    outbox = sqlite_store.open()
    path = sqlite_store.url.removeprefix("sqlite:///")
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        raw.close()
    # Per-connection settings are only visible through the outbox's own pool.
    with outbox.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000


def test_sqlite_constructor_and_url_open_the_same_file(tmp_path) -> None:
    with Outbox.sqlite(tmp_path / "a.db") as by_path:
        [r] = by_path.enqueue([NewItem(ASSET_EVENT, "prod", {}, "k")])
        assert by_path.dialect == "sqlite" and by_path.table_name == "xdeps_outbox"
    with Outbox.from_url(f"sqlite:///{tmp_path / 'a.db'}") as by_url:
        assert by_url.get(r.id) is not None
        assert "a.db" in repr(by_url)


def _hold_write_lock(path: str) -> sqlite3.Connection:
    raw = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    raw.execute("BEGIN IMMEDIATE")
    return raw


def test_a_writer_waits_for_another_processs_write_lock(sqlite_store) -> None:
    outbox = sqlite_store.open()
    raw = _hold_write_lock(sqlite_store.url.removeprefix("sqlite:///"))
    results: list[object] = []
    writer = threading.Thread(
        target=lambda: results.append(outbox.enqueue([NewItem(ASSET_EVENT, "prod", {}, "k")]))
    )
    try:
        writer.start()
        writer.join(0.3)
        assert writer.is_alive(), "enqueue should wait for the lock, not fail or skip it"
    finally:
        raw.execute("COMMIT")
        raw.close()
    writer.join(30)
    assert len(results) == 1
    assert len(outbox.list_items()) == 1


def test_a_lock_held_past_the_busy_timeout_is_an_outbox_error(
    sqlite_store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "SQLITE_BUSY_TIMEOUT_SECONDS", 0.2)
    outbox = sqlite_store.open()
    raw = _hold_write_lock(sqlite_store.url.removeprefix("sqlite:///"))
    try:
        with pytest.raises(OutboxError, match="could not enqueue: database is locked") as caught:
            outbox.enqueue([NewItem(ASSET_EVENT, "prod", {}, "k")])
    finally:
        raw.execute("ROLLBACK")
        raw.close()
    assert "Try:" in str(caught.value)
    assert outbox.enqueue([NewItem(ASSET_EVENT, "prod", {}, "k")])[0].created


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
        ("sqlite:////no/such/folder/xdeps_outbox.db", "does not exist"),
        ("mysql://user:s3cret@db/outbox", "supports sqlite and postgresql"),
        ("::not a url::", "could not be parsed"),
    ],
)
def test_urls_that_cannot_work_are_config_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        Outbox.from_url(url)
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize("prefix", ["", "1x_", "x; DROP TABLE y; --", "a" * 41])
def test_table_prefix_must_be_a_plain_identifier(tmp_path, prefix: str) -> None:
    with pytest.raises(ConfigError, match="table prefix"):
        Outbox.sqlite(tmp_path / "a.db", table_prefix=prefix)


def test_an_outbox_file_from_before_v2_is_upgraded_on_open_and_counted(sqlite_store) -> None:
    """An older file has no retried_at, no counts table, triggers or status indexes: opening adds
    them, counts the items already there, and status agrees with the rows from then on."""
    outbox = sqlite_store.open()
    outbox.enqueue([NewItem(ASSET_EVENT, "prod", {}, f"k{i}") for i in range(5)])
    path = sqlite_store.url.removeprefix("sqlite:///")
    outbox.close()
    raw = sqlite3.connect(path)
    for (name,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        raw.execute(f"DROP TRIGGER {name}")
    for suffix in ("group", "pending", "leased", "errors"):
        raw.execute(f"DROP INDEX ix_xdeps_outbox_{suffix}")
    raw.execute("DROP TABLE xdeps_outbox_counts")
    raw.execute("ALTER TABLE xdeps_outbox DROP COLUMN retried_at")
    raw.commit()
    raw.close()

    upgraded = sqlite_store.open()
    [row] = upgraded.status()
    assert (row.state, row.count, row.due) == ("pending", 5, 5)
    [item] = upgraded.claim("w", limit=1, lease_seconds=60)
    assert upgraded.mark_dead(item.id, "w", "boom")
    assert upgraded.retry([item.id]) == 1
    assert upgraded.get(item.id).retried_at is not None
    assert upgraded.claim("w", limit=1, lease_seconds=60)
    assert [(r.state, r.count, r.in_flight) for r in upgraded.status()] == [("pending", 5, 1)]

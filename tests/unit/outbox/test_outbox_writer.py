"""The process's one writer (SQLite): writes that arrive together commit together, one failing
write fails only its caller, and asyncio callers await the commit without a thread."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from astro_xdeps.outbox import ASSET_EVENT, NewItem, Outbox, OutboxError
from astro_xdeps.outbox import writer as writer_module


def test_writes_that_arrive_together_commit_in_one_transaction_and_a_failure_is_its_callers_own(
    tmp_path: Path,
) -> None:
    outbox = Outbox.sqlite(tmp_path / "o.db")
    commits: list[int] = []
    sa.event.listen(outbox.write_engine, "commit", lambda conn: commits.append(1))
    gate = threading.Event()
    outbox.write("open the write connection", lambda conn: None)
    results: dict[str, object] = {}

    started = threading.Event()

    def blocker(conn: sa.Connection) -> None:
        started.set()
        gate.wait(10)

    def call(name: str, fn) -> None:
        try:
            results[name] = outbox.write(name, fn)
        except Exception as exc:
            results[name] = exc

    first = threading.Thread(target=call, args=("block", blocker))
    first.start()
    assert started.wait(10)
    commits.clear()
    others = [
        threading.Thread(
            target=call,
            args=(f"k{i}", lambda c, i=i: outbox.enqueue([NewItem(ASSET_EVENT, "t", {}, f"k{i}")])),
        )
        for i in range(5)
    ]
    others.append(
        threading.Thread(target=call, args=("bad", lambda c: c.exec_driver_sql("SELECT * FROM nowhere")))
    )
    for t in others:
        t.start()
    while len(outbox.db.writer._queue) < len(others):
        threading.Event().wait(0.005)
    gate.set()
    for t in [first, *others]:
        t.join(10)
    assert isinstance(results["bad"], OutboxError)
    assert sorted(i.idempotency_key for i in outbox.list_items()) == [f"k{i}" for i in range(5)]
    assert len(commits) <= 2  # the blocker alone, then the six that queued behind it together
    outbox.close()


def test_an_asyncio_caller_awaits_the_commit(tmp_path: Path) -> None:
    outbox = Outbox.sqlite(tmp_path / "o.db")

    async def main() -> list:
        return await asyncio.gather(
            *(
                outbox.write_async(
                    "enqueue", lambda c, i=i: outbox.enqueue([NewItem(ASSET_EVENT, "t", {}, f"a{i}")])
                )
                for i in range(20)
            )
        )

    results = asyncio.run(main())
    assert [r[0].created for r in results] == [True] * 20
    with pytest.raises(OutboxError, match="could not fail: no such table"):
        asyncio.run(outbox.write_async("fail", lambda c: c.exec_driver_sql("SELECT * FROM nowhere")))
    assert len(outbox.list_items()) == 20
    outbox.close()


def test_what_a_loop_hands_over_in_one_turn_commits_once_on_the_loop_and_a_failure_is_its_own(
    tmp_path: Path,
) -> None:
    outbox = Outbox.sqlite(tmp_path / "o.db")
    commits: list[str] = []
    sa.event.listen(
        outbox.write_engine, "commit", lambda conn: commits.append(threading.current_thread().name)
    )

    async def main() -> list:
        writes = [
            outbox.write_async(
                "enqueue", lambda c, i=i: outbox.enqueue([NewItem(ASSET_EVENT, "t", {}, f"b{i}")])
            )
            for i in range(10)
        ]
        writes.insert(5, outbox.write_async("fail", lambda c: c.exec_driver_sql("SELECT * FROM nowhere")))
        return await asyncio.gather(*writes, return_exceptions=True)

    results = asyncio.run(main())
    assert isinstance(results.pop(5), OutboxError)
    assert [r[0].created for r in results] == [True] * 10
    assert commits == [threading.main_thread().name]  # one COMMIT, on the loop's thread
    assert sorted(i.idempotency_key for i in outbox.list_items()) == sorted(f"b{i}" for i in range(10))
    outbox.close()


def test_a_loop_writers_commits_count_towards_the_checkpoint_thread(tmp_path: Path, monkeypatch) -> None:
    """Commits made on an event loop wake the checkpoint thread too: the WAL stays short."""
    from astro_xdeps.outbox import writer

    monkeypatch.setattr(writer, "CHECKPOINT_EVERY", 5)
    outbox = Outbox.sqlite(tmp_path / "o.db")
    payload = {"blob": "x" * 16_000}  # four pages and more per item

    async def write(i: int) -> None:
        await outbox.write_async(
            "enqueue", lambda c: outbox.enqueue([NewItem(ASSET_EVENT, "t", payload, f"c{i}")])
        )

    asyncio.run(write(0))
    for i in range(1, 50):  # some 600 WAL frames
        asyncio.run(write(i))
    time.sleep(0.5)  # the thread copies them into the database file meanwhile
    asyncio.run(write(50))  # so this write starts the WAL over
    with outbox.engine.connect() as conn:
        _busy, frames, _copied = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
    assert frames < 100
    outbox.close()
    assert not any(t.name == "xdeps-outbox-checkpoint" for t in threading.enumerate())


def test_wal_checkpoints_run_on_their_own_thread_not_in_a_callers_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's automatic checkpoint (an fsync inside some caller's COMMIT) is pushed back to a
    safety net; the writer's own thread copies the log into the database every few commits."""
    monkeypatch.setattr(writer_module, "CHECKPOINT_EVERY", 5)
    path = tmp_path / "o.db"
    outbox = Outbox.sqlite(path)
    try:
        pages = outbox.write(
            "read the pragma", lambda c: c.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
        )
        assert pages == writer_module.SAFETY_CHECKPOINT_PAGES
        size_before = path.stat().st_size
        big = {"blob": "x" * 50_000}
        for i in range(5):  # with the pragma's write: at least 5 commits, so a checkpoint is due
            outbox.enqueue([NewItem(ASSET_EVENT, "t", big, f"k{i}")])
        deadline = time.monotonic() + 10
        while path.stat().st_size < size_before + 4 * 50_000 and time.monotonic() < deadline:
            time.sleep(0.01)
        # Copied into the database file (without the thread it stays in the log: 10,000 pages).
        assert path.stat().st_size >= size_before + 4 * 50_000
        checkpointers = [t.name for t in threading.enumerate() if t.name == "xdeps-outbox-checkpoint"]
        assert checkpointers == ["xdeps-outbox-checkpoint"]
    finally:
        outbox.close()
    assert not [t for t in threading.enumerate() if t.name == "xdeps-outbox-checkpoint"]

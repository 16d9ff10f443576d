"""A damaged SQLite outbox (issue 9, defect 5): an OutboxError that says what to do, never a raw
``sqlite3.DatabaseError``; and the listener's lost events are counted where operators look."""

from __future__ import annotations

import io
import multiprocessing
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from astro_xdeps.cli import main as cli_main
from astro_xdeps.cli import outbox as outbox_cli
from astro_xdeps.forwarding.payload import SourceEvent
from astro_xdeps.listeners.assets import forward
from astro_xdeps.outbox import ASSET_EVENT, NewItem, Outbox, OutboxError, loss
from astro_xdeps.relay.metrics import Metrics

FORK = multiprocessing.get_context("fork")
ENV = "AIRFLOW__ASTRO_XDEPS__"


def not_a_database(path: Path) -> Path:
    path.write_bytes(os.urandom(8192))
    return path


def malformed(path: Path) -> Path:
    """A real SQLite file whose pages after the header were overwritten."""
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE t (x)")
    raw.commit()
    raw.close()
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("damage", [not_a_database, malformed])
def test_opening_a_damaged_file_is_an_outbox_error_that_says_to_move_it_aside(tmp_path: Path, damage) -> None:
    """Regression: raised a raw sqlite3.DatabaseError from the connection's PRAGMAs."""
    path = damage(tmp_path / "xdeps_outbox.db")
    with pytest.raises(OutboxError) as info:
        Outbox.sqlite(path)
    message = str(info.value)
    assert str(path) in message
    assert "damaged or is not an SQLite database" in message
    assert f"mv {path} {path}.corrupt" in message


def test_a_file_damaged_while_open_gives_outbox_errors_on_every_call(tmp_path: Path) -> None:
    path = tmp_path / "xdeps_outbox.db"
    outbox = Outbox.sqlite(path)
    try:
        outbox.enqueue([NewItem(ASSET_EVENT, "prod", {}, "k1")])
        outbox.engine.dispose()
        for suffix in ("", "-wal", "-shm"):
            if Path(f"{path}{suffix}").exists():
                not_a_database(Path(f"{path}{suffix}"))
        calls = {
            "enqueue": lambda: outbox.enqueue([NewItem(ASSET_EVENT, "prod", {}, "k2")]),
            "claim": lambda: outbox.claim("w", limit=1, lease_seconds=1),
            "status": outbox.status,
            "next_due_at": outbox.next_due_at,
            "purge_delivered": lambda: outbox.purge_delivered(0),
        }
        for name, call in calls.items():
            with pytest.raises(OutboxError, match="move it aside"):
                call()
            outbox.engine.dispose()  # a new connection each time, like a fresh process
            assert name
    finally:
        outbox.close()


# -- the listener's lost events --------------------------------------------------------------------


@pytest.fixture
def corrupt_env(xdeps_options: Callable[..., None], tmp_path: Path) -> Path:
    """Forwarding on, to a damaged SQLite outbox in tmp_path."""
    path = not_a_database(tmp_path / "xdeps_outbox.db")
    xdeps_options(outbox_url=f"sqlite:///{path}", forward_assets="true")
    return path


def test_listener_counts_events_it_could_not_enqueue(corrupt_env: Path) -> None:
    """Regression: the listener dropped every event with nothing but a log line."""
    assert forward(SourceEvent(uri="s3://sales/orders")) == 0
    assert forward(SourceEvent(uri="s3://sales/returns")) == 0
    losses = loss.read_losses()
    assert loss.losses_path() == corrupt_env.parent / loss.LOSSES_FILENAME
    assert losses.lost_events == 2
    assert [r["uri"] for r in losses.recent] == ["s3://sales/orders", "s3://sales/returns"]
    assert "OutboxError" in losses.recent[-1]["error"] and "move it aside" in losses.recent[-1]["error"]


def test_outbox_status_on_a_damaged_file_says_what_to_do_and_shows_the_losses(
    corrupt_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: `outbox status` crashed with a sqlite3.DatabaseError traceback."""
    forward(SourceEvent(uri="s3://sales/orders"))
    assert cli_main.main(["outbox", "status"]) == cli_main.EXIT_USAGE
    captured = capsys.readouterr()
    assert "move it aside" in captured.err and str(corrupt_env) in captured.err
    assert "Traceback" not in captured.err
    assert "LOST: 1 asset event(s)" in captured.out
    assert "s3://sales/orders" in captured.out


def test_outbox_status_shows_the_losses_next_to_a_working_outbox(tmp_path: Path) -> None:
    path = tmp_path / "losses.json"
    loss.record_loss("s3://a", "OutboxError: disk full", path=path, now=1000.0)
    with Outbox.sqlite(tmp_path / "ok.db") as outbox:
        out = io.StringIO()
        outbox_cli.run_status(outbox, out, losses=loss.read_losses(path))
    assert "empty: nothing pending" in out.getvalue()
    assert "LOST: 1 asset event(s)" in out.getvalue() and "disk full" in out.getvalue()


def test_metrics_export_the_lost_event_count(corrupt_env: Path) -> None:
    forward(SourceEvent(uri="s3://sales/orders"))
    lines = Metrics().render(None).splitlines()
    assert "# TYPE xdeps_listener_lost_events_total counter" in lines
    assert "xdeps_listener_lost_events_total 1" in lines


def _record_many(path: str, n: int) -> None:
    for i in range(n):
        loss.record_loss(f"s3://x/{i}", "boom", path=Path(path))


def test_losses_counted_from_several_processes_at_once_add_up(tmp_path: Path) -> None:
    path = tmp_path / "losses.json"
    procs = [FORK.Process(target=_record_many, args=(str(path), 50)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    losses = loss.read_losses(path)
    assert losses.lost_events == 200
    assert len(losses.recent) == loss.RECENT_KEPT


def test_an_unwritable_or_unreadable_loss_file_never_raises(tmp_path: Path) -> None:
    assert loss.record_loss("s3://x", "boom", path=tmp_path / "missing-dir" / "f.json") is False
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    assert loss.read_losses(garbage).lost_events == 0
    assert loss.record_loss("s3://x", "boom", path=garbage) is True
    assert loss.read_losses(garbage).lost_events == 1
    assert loss.read_losses(tmp_path / "none.json") == loss.Losses()

"""PostgreSQL status from per-backend counts rows: exact under writers on several backends,
upgraded from an older table, and kept per table prefix (see ``astro_xdeps.outbox.status``)."""

from __future__ import annotations

import random
import threading
import time
import uuid

import sqlalchemy as sa

from astro_xdeps.outbox import ASSET_EVENT, NewItem, Outbox
from astro_xdeps.outbox.models import Outcome
from tests.unit.outbox.conftest import drop_pg_outbox

NOW = 1_000_000.0


def _group_by(pg_url: str, table: str, now: float) -> list[tuple]:
    """The status answer read straight from the items, as a whole-table GROUP BY."""
    pending = "state = 'pending'"
    leased = f"{pending} AND lease_until > {now}"
    due = f"{pending} AND next_attempt_at <= {now} AND (lease_until IS NULL OR lease_until <= {now})"
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            groups = conn.exec_driver_sql(
                f"SELECT target, kind, state, count(*), min(created_at), count(*) FILTER (WHERE {leased}), "
                f"count(*) FILTER (WHERE {due}), min(next_attempt_at) FILTER (WHERE {pending}) "
                f'FROM "{table}" GROUP BY 1, 2, 3 ORDER BY 1, 2, 3'
            ).all()
            errors = dict(
                ((r[0], r[1], r[2]), (r[3], r[4]))
                for r in conn.exec_driver_sql(
                    f"SELECT DISTINCT ON (target, kind, state) target, kind, state, last_error, updated_at "
                    f'FROM "{table}" WHERE last_error IS NOT NULL '
                    "ORDER BY target, kind, state, updated_at DESC, id DESC"
                )
            )
    finally:
        engine.dispose()
    return [(*g[:5], g[5], g[6], g[7], *errors.get(tuple(g[:3]), (None, None))) for g in groups]


def _status(outbox: Outbox, now: float) -> list[tuple]:
    return [
        (
            r.target,
            r.kind,
            r.state,
            r.count,
            r.oldest_created_at,
            r.in_flight,
            r.due,
            r.next_attempt_at,
            r.last_error,
            r.last_error_at,
        )
        for r in outbox.status(now=now)
    ]


def _backends(pg_url: str, counts: str) -> set[int]:
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            return set(conn.exec_driver_sql(f'SELECT DISTINCT backend FROM "{counts}"').scalars())
    finally:
        engine.dispose()


def _random_ops(outbox: Outbox, rng: random.Random, name: str, rounds: int) -> None:
    for i in range(rounds):
        op = rng.random()
        if op < 0.4:
            outbox.enqueue(
                [
                    NewItem(ASSET_EVENT, rng.choice(["prod", "stage"]), {}, f"{name}-{i}-{j}")
                    for j in range(rng.randint(1, 5))
                ]
            )
        elif op < 0.8:
            items = outbox.claim(name, limit=rng.randint(1, 6), lease_seconds=rng.choice([1, 600]))
            outcomes = []
            for item in items:
                pick = rng.random()
                if pick < 0.5:
                    outcomes.append(Outcome.delivered(item.id))
                elif pick < 0.7:
                    outcomes.append(
                        Outcome.failed(item.id, f"{name} failed {i}", time.time() + rng.choice([-5, 60]))
                    )
                elif pick < 0.85:
                    outcomes.append(Outcome.dead(item.id, f"{name} dead {i}"))
                # else: leave it leased
            outbox.finish_many(name, outcomes)
        elif op < 0.9:
            outbox.retry(all_dead=True)
        else:
            outbox.purge_delivered(0)


def test_status_equals_a_group_by_after_writes_from_two_backends_at_once(pg_url: str, pg_prefix: str) -> None:
    a = Outbox.from_url(pg_url, table_prefix=pg_prefix)
    b = Outbox.from_url(pg_url, table_prefix=pg_prefix)
    try:
        errors: list[BaseException] = []

        def run(outbox: Outbox, name: str, seed: int) -> None:
            try:
                _random_ops(outbox, random.Random(seed), name, 120)
            except BaseException as error:  # reported below
                errors.append(error)

        threads = [threading.Thread(target=run, args=(o, n, s)) for o, n, s in ((a, "a", 1), (b, "b", 2))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors
        assert len(_backends(pg_url, f"{pg_prefix}outbox_counts") - {0}) >= 2  # each wrote its own rows
        now = time.time()
        expected = _group_by(pg_url, f"{pg_prefix}outbox", now)
        assert len(expected) >= 3  # several groups, pending among them
        assert "pending" in {r[2] for r in expected}
        assert _status(a, now) == expected
        assert _status(b, now) == expected

        a.close()  # its backends go; b's purge folds their rows into backend 0, totals unchanged
        deadline = time.time() + 10
        while time.time() < deadline:
            b.purge_delivered(0)
            live = {0} | _live_pids(pg_url)
            if _backends(pg_url, f"{pg_prefix}outbox_counts") <= live:
                break
            time.sleep(0.1)
        assert _backends(pg_url, f"{pg_prefix}outbox_counts") <= {0} | _live_pids(pg_url)
        assert _status(b, now) == _group_by(pg_url, f"{pg_prefix}outbox", now)
    finally:
        a.close()
        b.close()


def _live_pids(pg_url: str) -> set[int]:
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            return set(conn.exec_driver_sql("SELECT pid FROM pg_stat_activity").scalars())
    finally:
        engine.dispose()


def test_an_older_table_is_upgraded_on_open_and_counted(pg_url: str, pg_prefix: str) -> None:
    """A table from before the counts (no retried_at, counts table, function, triggers or status
    indexes) gets them on open, with the items already there counted."""
    t = f"{pg_prefix}outbox"
    with Outbox.from_url(pg_url, table_prefix=pg_prefix) as outbox:
        outbox.enqueue([NewItem(ASSET_EVENT, "prod", {}, f"k{i}") for i in range(5)])
        [item] = outbox.claim("w", limit=1, lease_seconds=60)
        assert outbox.mark_dead(item.id, "w", "boom")
    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as conn:
            for op in ("insert", "update", "delete"):
                conn.exec_driver_sql(f"DROP TRIGGER {t}_count_{op} ON {t}")
            conn.exec_driver_sql(f"DROP FUNCTION {t}_count()")
            conn.exec_driver_sql(f"DROP TABLE {t}_counts")
            for suffix in ("group", "pending", "leased", "errors"):
                conn.exec_driver_sql(f"DROP INDEX ix_{t}_{suffix}")
            conn.exec_driver_sql(f"ALTER TABLE {t} DROP COLUMN retried_at")
    finally:
        engine.dispose()

    with Outbox.from_url(pg_url, table_prefix=pg_prefix) as upgraded:
        assert [(r.state, r.count) for r in upgraded.status()] == [("dead", 1), ("pending", 4)]
        assert upgraded.retry(all_dead=True) == 1
        upgraded.enqueue([NewItem(ASSET_EVENT, "prod", {}, "new")])
        assert [(r.state, r.count) for r in upgraded.status()] == [("pending", 6)]
        now = time.time()
        assert _status(upgraded, now) == _group_by(pg_url, t, now)


def test_counts_are_kept_per_table_prefix(pg_url: str, pg_prefix: str) -> None:
    """Two outboxes in one database (one prefix with capitals, so quoted) count only their own."""
    other = f"Xd_{uuid.uuid4().hex[:8]}_"
    try:
        with (
            Outbox.from_url(pg_url, table_prefix=pg_prefix) as mine,
            Outbox.from_url(pg_url, table_prefix=other) as theirs,
        ):
            mine.enqueue([NewItem(ASSET_EVENT, "prod", {}, f"k{i}") for i in range(3)])
            theirs.enqueue([NewItem(ASSET_EVENT, "stage", {}, "k")])
            assert [(r.target, r.count) for r in mine.status()] == [("prod", 3)]
            assert [(r.target, r.count) for r in theirs.status()] == [("stage", 1)]
            assert _backends(pg_url, f"{other}outbox_counts")
    finally:
        drop_pg_outbox(pg_url, other)

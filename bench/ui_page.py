"""The page's API with a big outbox: 100,000 pending and 1,000,000 delivered items (SQLite).

What is measured: the time of each page API call (summary, item lists, one item, relay, graph)
through the real FastAPI app in process (HTTP routing, JSON, SQL; auth is a stand-in that
allows everything, so Airflow's token check is not in the figures), median over repetitions of
each repetition's p50/p99.

Baselines measured in the same run:
- the same calls on a small outbox (1,000 delivered + 100 pending): how the page scales;
- ``Outbox.status()`` (what ``astro-xdeps outbox status`` runs) on the big outbox: the one
  whole-outbox summary that existed before the page.

Data: rows shaped like real forwarded asset events (payload with provenance, ~600 bytes), over
3 targets and 20 producing DAGs, plus 50 dead items and 1,000 relay journal rows; written with
bulk inserts into the real schema (created by ``Outbox``). Generating 1.1 M rows takes ~30 s.

    .venv/bin/python -m bench.ui_page [--reps 5] [--calls 10] [--keep DIR] [--smoke]
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import harness
from bench.common import LatencyRuns, fmt_ms, fmt_ratio, table, temp_dir

TARGETS = ("xdeps_finance", "xdeps_analytics", "xdeps_ml")


def _payload(i: int) -> str:
    eid = f"{i:032x}"
    uri = f"s3://bucket/asset_{i % 50}"
    source = {
        "deployment": "prod-upstream",
        "uri": uri,
        "name": None,
        "dag_id": f"dag_{i % 20}",
        "task_id": "publish",
        "run_id": f"scheduled__2026-01-01T00:{i % 60:02d}:00+00:00",
        "map_index": -1,
        "partition_key": None,
        "extra": {"rows": i},
    }
    extra = {
        "rows": i,
        "xdeps_event_id": eid,
        "xdeps": {"event_id": eid, "hops": 1, "route": "default", "source": source},
    }
    return json.dumps({"uri": uri, "extra": extra, "partition_key": None, "event_id": eid})


COLUMNS = (
    "kind, target, payload, idempotency_key, state, attempts, created_at, next_attempt_at, updated_at, "
    "delivered_at, last_error"
)
JOURNAL_COLUMNS = "received_at, event_id, type, dag_id, run_id, door, outcome"


def outbox_rows(delivered: int, pending: int, dead: int, now: float) -> Iterator[tuple]:
    """The outbox's rows (``COLUMNS``), oldest first, spread over the last three days."""
    i = 0
    total = delivered + pending + dead
    for state, n in (("delivered", delivered), ("pending", pending), ("dead", dead)):
        for _ in range(n):
            i += 1
            created = now - 3 * 86400 + i * (3 * 86400 / total)
            error = None
            if state == "pending":
                error = "The deployment is overloaded or failing [create_asset_event on xdeps] — HTTP 503"
            elif state == "dead":
                error = "rejected by the target, not retried: The deployment rejected the request — HTTP 422"
            yield (
                "asset_event",
                TARGETS[i % len(TARGETS)],
                _payload(i),
                f"{i:032x}:s3://bucket",
                state,
                1 if state == "delivered" else 3,
                created,
                created if state != "pending" else now + 60 + i % 240,
                created + 1,
                created + 1 if state == "delivered" else None,
                error,
            )


def journal_rows(journal: int, now: float) -> list[tuple]:
    """The relay journal's rows (``JOURNAL_COLUMNS``)."""
    outcome = json.dumps({"matched": [], "fired": [], "waiting": {}, "actions": [], "deduplicated": False})
    return [
        (now - j, f"ev{j}", "dag_run.success", f"dag_{j % 20}", f"run{j}", "listener", outcome)
        for j in range(journal)
    ]


def _create_schema(url: str) -> None:
    """The real schema (outbox, its status counts and indexes, relay journal), created by the package."""
    from astro_xdeps.outbox import Outbox
    from astro_xdeps.relay.journal import RelayJournal

    with Outbox.from_url(url) as outbox:
        RelayJournal(outbox.db)


def build(path: Path, delivered: int, pending: int, dead: int, journal: int) -> float:
    """Create the SQLite outbox at ``path`` with the given counts; return the seconds it took."""
    started = time.perf_counter()
    _create_schema(f"sqlite:///{path}")
    con = sqlite3.connect(path)
    now = time.time()
    sql = f"INSERT INTO xdeps_outbox ({COLUMNS}) VALUES ({','.join('?' * 11)})"
    rows = outbox_rows(delivered, pending, dead, now)
    while chunk := list(itertools.islice(rows, 20_000)):
        con.executemany(sql, chunk)
    con.executemany(
        f"INSERT INTO xdeps_relay_events ({JOURNAL_COLUMNS}) VALUES (?,?,?,?,?,?,?)",
        journal_rows(journal, now),
    )
    con.commit()
    con.close()
    return time.perf_counter() - started


def build_pg(url: str, delivered: int, pending: int, dead: int, journal: int) -> float:
    """Fill the (empty) PostgreSQL database at ``url`` the same way, with ``COPY``; return the seconds."""
    import csv
    import io

    import sqlalchemy as sa

    started = time.perf_counter()
    _create_schema(url)
    now = time.time()
    engine = sa.create_engine(url)
    try:
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            for table, columns, rows in (
                ("xdeps_outbox", COLUMNS, outbox_rows(delivered, pending, dead, now)),
                ("xdeps_relay_events", JOURNAL_COLUMNS, iter(journal_rows(journal, now))),
            ):
                while chunk := list(itertools.islice(rows, 50_000)):
                    buf = io.StringIO()
                    csv.writer(buf).writerows(chunk)  # None -> empty field -> NULL in CSV COPY
                    buf.seek(0)
                    cur.copy_expert(f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv)", buf)
            raw.commit()
            cur.execute("ANALYZE xdeps_outbox")
            raw.commit()
        finally:
            raw.close()
    finally:
        engine.dispose()
    return time.perf_counter() - started


def client_for(path: Path) -> tuple[Any, Any]:
    from astro_xdeps.graph.flows import flows_from_items
    from astro_xdeps.graph.sources import GraphInputs
    from astro_xdeps.outbox import Outbox
    from astro_xdeps.relay.journal import RelayJournal
    from astro_xdeps.ui.app import UiRuntime, create_app
    from astro_xdeps.ui.queries import OutboxQueries

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    class AllowAll:
        async def user(self, request, credentials):
            return "bench"

        def can_read(self, user):
            return True

        def can_retry(self, user, kind):
            return True

        def name(self, user):
            return user

    outbox = Outbox.sqlite(path)
    queries = OutboxQueries(outbox)
    rt = UiRuntime(
        outbox=outbox,
        deployment="bench",
        journal=RelayJournal(outbox.db),
        graph_inputs=lambda: GraphInputs(deployment="bench", flows=flows_from_items(queries.sample())),
    )
    return TestClient(create_app(lambda: rt, AllowAll())), outbox


CALLS = {
    "summary (counts per target)": "/api/summary",
    "items, newest 50": "/api/items?limit=50",
    "items, delivered, 50": "/api/items?state=delivered&limit=50",
    "items, pending, 50": "/api/items?state=pending&limit=50",
    "items, dead, 100": "/api/items?state=dead&limit=100",
    "items, one target, 50": "/api/items?target=xdeps_ml&limit=50",
    "items, pending of one target, 50": "/api/items?state=pending&target=xdeps_ml&limit=50",
    "items, page 2 (keyset)": None,  # filled in with a real `before`
    "relay, 50 recent events": "/api/relay?limit=50",
    "graph (sample + layout)": "/api/graph",
}


def measure(client: Any, reps: int, calls: int) -> dict[str, LatencyRuns]:
    first = client.get("/api/items?limit=50").json()
    paths = dict(CALLS)
    paths["items, page 2 (keyset)"] = f"/api/items?limit=50&before={first['next_before'] or 1}"
    out = {name: LatencyRuns([]) for name in paths}
    for rep in range(reps):
        print(f"  repetition {rep + 1}/{reps}", flush=True)
        for name, path in paths.items():
            samples = []
            for _ in range(calls):
                t = time.perf_counter()
                r = client.get(path)
                samples.append(time.perf_counter() - t)
                if r.status_code != 200:
                    raise SystemExit(f"{path}: HTTP {r.status_code} {r.text[:300]}")
            out[name].samples_per_rep.append(samples)
    return out


def measure_status(outbox: Any, reps: int, calls: int) -> LatencyRuns:
    runs = LatencyRuns([])
    for _ in range(reps):
        samples = []
        for _ in range(calls):
            t = time.perf_counter()
            outbox.status()
            samples.append(time.perf_counter() - t)
        runs.samples_per_rep.append(samples)
    return runs


SMOKE = {"reps": 1, "calls": 2, "delivered": 3000, "pending": 300, "keep": None}


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--calls", type=int, default=10, help="calls per endpoint per repetition")
    parser.add_argument("--delivered", type=int, default=1_000_000)
    parser.add_argument("--pending", type=int, default=100_000)
    parser.add_argument(
        "--keep", type=Path, default=None, help="reuse/keep the big outbox file in this folder"
    )
    args = harness.parse(parser, argv, SMOKE)
    started = time.monotonic()
    os.environ.setdefault("AIRFLOW__ASTRO_XDEPS__DEPLOYMENT_NAME", "bench")
    harness.header("Page API benchmark: the outbox page's calls on a big outbox vs a small one", args)
    with temp_dir("xdeps-ui-bench-") as tmp:
        folder = args.keep or tmp
        folder.mkdir(parents=True, exist_ok=True)
        big = folder / "big_outbox.db"
        if not big.exists():
            print(f"building {args.delivered:,} delivered + {args.pending:,} pending items ...", flush=True)
            print(
                f"  {build(big, args.delivered, args.pending, 50, 1000):.0f} s, {big.stat().st_size / 1e6:.0f} MB"
            )
        small = tmp / "small_outbox.db"
        build(small, 1000, 100, 5, 1000)
        big_client, big_outbox = client_for(big)
        small_client, small_outbox = client_for(small)
        try:
            big_client.get("/api/summary")  # open connections, warm the page cache like a running server
            small_client.get("/api/summary")
            results_big = measure(big_client, args.reps, args.calls)
            results_small = measure(small_client, args.reps, args.calls)
            status_big = measure_status(big_outbox, args.reps, max(3, args.calls // 2))
        finally:
            big_outbox.close()
            small_outbox.close()
    rows = []
    for name in results_big:
        b, s = results_big[name], results_small[name]
        lo, hi = b.spread(50)
        rows.append(
            [
                name,
                fmt_ms(b.p(50)),
                f"{fmt_ms(lo)}-{fmt_ms(hi)}",
                fmt_ms(b.p(99)),
                fmt_ms(s.p(50)),
                fmt_ratio(b.p(50) / s.p(50)),
            ]
        )
    print()
    print(
        table(
            ["call", "1.1 M items p50 ms", "p50 range", "p99 ms", "1,100 items p50 ms", "big / small"],
            rows,
        )
    )
    summary_p50 = results_big["summary (counts per target)"].p(50)
    print()
    print(
        f"baseline Outbox.status() (astro-xdeps outbox status) on 1.1 M items: p50 {fmt_ms(status_big.p(50))} ms "
        f"(range {fmt_ms(status_big.spread(50)[0])}-{fmt_ms(status_big.spread(50)[1])}); "
        f"page summary / status = {fmt_ratio(summary_p50 / status_big.p(50))}"
    )
    figures = {f"{name} p50": runs.p(50) for name, runs in results_big.items()}
    figures["Outbox.status() p50"] = status_big.p(50)
    return harness.finish(args, started, [], figures)


if __name__ == "__main__":
    sys.exit(main())

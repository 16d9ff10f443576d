"""``outbox status`` and the relay's ``/metrics`` with 1,000,000 delivered + 100,000 pending items.

Target (issue 11): each < 50 ms at that size. What is timed, as users run them:

- **CLI**: ``astro_xdeps.cli.main.main(["outbox", "status"], freeze_heap=True)`` (what the
  installed command runs) and with ``--json``, in process,
  with ``AIRFLOW__ASTRO_XDEPS__OUTBOX_URL`` set to the outbox, output to a buffer. Before every
  call ``runtime.reset()`` drops the process's outbox, so each call opens it as a fresh
  ``astro-xdeps`` process does (engine, schema check); what a new process adds on top (the
  interpreter, ``import airflow``: seconds) is not the command's work and is not timed.
- **Outbox.status()**: the call both of them make, on an open outbox.
- **GET /metrics**: the relay app (``create_app`` over a ``RelayRuntime`` on the same outbox, as
  mounted: monitoring needs its token) called in process through ASGI with
  ``Authorization: Bearer <relay_metrics_token>``, after one ``/health`` (the app counts the
  outbox in ``/metrics`` only once its runtime is loaded, by ``/health`` or a first event).

Baseline in the same run: the same calls on a 1,100-item outbox (1,000 delivered + 100
pending). Data: ``bench.ui_page``'s builder (forwarded asset events over 3 targets, 50 dead
items, 1,000 relay journal rows), written in bulk into the real schema. On SQLite the build takes
~1 min; ``--keep DIR`` keeps it for the next run. ``--pg-url`` runs the same on PostgreSQL (an
empty database of its own, filled with ``COPY``).

    .venv/bin/python -m bench.status [--reps 3] [--calls 20] [--keep DIR] [--pg-url URL] [--smoke]
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import harness
from bench.common import LatencyRuns, env_vars, fmt_ms, fmt_ratio, table, temp_dir
from bench.ui_page import build, build_pg

TARGET_S = 0.050
METRICS_TOKEN = "bench-metrics-token-0123456789"
URL_ENV = "AIRFLOW__ASTRO_XDEPS__OUTBOX_URL"
RULES = {
    "sources": [
        {
            "name": "bench",
            "auth": "standard-webhooks",
            "secrets_env": ["XDEPS_BENCH_SECRET"],
            "deployment": "up",
        }
    ],
    "rules": [
        {
            "name": "recover",
            "when": {"type": "dag_run.failed", "dag_id": "bench_*"},
            "then": [{"trigger_dag": {"target": "xdeps_finance", "dag_id": "recovery_dag"}}],
        }
    ],
}


def cli_call(args: list[str]) -> Callable[[], None]:
    """One ``astro-xdeps`` call in process, the outbox opened afresh as by a new process."""
    from astro_xdeps import runtime
    from astro_xdeps.cli.main import main

    def call() -> None:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(args, freeze_heap=True)
        if code != 0 or "delivered" not in out.getvalue():
            raise SystemExit(f"astro-xdeps {' '.join(args)}: exit {code}: {out.getvalue()[-500:]}")

    call.before = runtime.reset  # type: ignore[attr-defined]  # untimed: a new process has no outbox yet
    return call


def metrics_call(outbox: Any) -> tuple[Callable[[], None], Any]:
    """GET /metrics of the relay app on ``outbox`` (in process, ASGI, with the token); and the client."""
    from astro_xdeps.relay.app import RelayRuntime, create_app
    from astro_xdeps.relay.config import parse_config
    from astro_xdeps.relay.engine import RelayEngine

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    runtime = RelayRuntime(RelayEngine(parse_config(RULES), outbox))
    client = TestClient(create_app(lambda: runtime))
    headers = {"authorization": f"Bearer {METRICS_TOKEN}"}
    # /metrics counts the outbox only once the runtime is loaded (by /health or a first event),
    # as in a relay that a load balancer health-checks.
    if client.get("/health").status_code != 200:
        raise SystemExit("relay /health is not ok")

    def call() -> None:
        r = client.get("/metrics", headers=headers)
        if r.status_code != 200 or 'state="delivered"' not in r.text:
            raise SystemExit(f"/metrics: HTTP {r.status_code} {r.text[:300]}")

    return call, client


def time_calls(fn: Callable[[], Any], calls: int) -> list[float]:
    before = getattr(fn, "before", None)
    fn()  # warm: first-use imports, page cache
    samples = []
    for _ in range(calls):
        if before:
            before()
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return samples


def measure(url: str, reps: int, calls: int) -> dict[str, LatencyRuns]:
    """Each call ``calls`` times per repetition on the outbox at ``url``."""
    from astro_xdeps import runtime
    from astro_xdeps.outbox import Outbox

    out: dict[str, LatencyRuns] = {}
    with env_vars({URL_ENV: url}), Outbox.from_url(url) as outbox:
        metrics, client = metrics_call(outbox)
        fns = {
            "astro-xdeps outbox status": cli_call(["outbox", "status"]),
            "astro-xdeps outbox status --json": cli_call(["outbox", "status", "--json"]),
            "Outbox.status()": outbox.status,
            "GET /metrics (relay, with token)": metrics,
        }
        try:
            for rep in range(reps):
                print(f"  {url.split('://')[0]} repetition {rep + 1}/{reps}", flush=True)
                for name, fn in fns.items():
                    out.setdefault(name, LatencyRuns([])).samples_per_rep.append(time_calls(fn, calls))
        finally:
            client.close()
            runtime.reset()
    return out


def pg_database(base_url: str, name: str) -> str:
    """A fresh, empty database ``name`` next to ``base_url``'s (dropped and created); its URL."""
    import sqlalchemy as sa

    engine = sa.create_engine(base_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        engine.dispose()
    return sa.make_url(base_url).set(database=name).render_as_string(hide_password=False)


SMOKE = {"reps": 1, "calls": 3, "delivered": 3000, "pending": 300, "keep": None}


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__, reps=3)
    parser.add_argument("--calls", type=int, default=20, help="calls of each per repetition")
    parser.add_argument("--delivered", type=int, default=1_000_000)
    parser.add_argument("--pending", type=int, default=100_000)
    parser.add_argument(
        "--keep", type=Path, default=None, help="reuse/keep the big SQLite outbox in this folder"
    )
    parser.add_argument(
        "--pg-url",
        default=None,
        help="also on PostgreSQL: a server URL whose user may create databases (e.g. "
        "postgresql+psycopg2://postgres@127.0.0.1:5432/test); the benchmark (re)creates --pg-db there",
    )
    parser.add_argument(
        "--pg-db", default="h8_bench", help="the database it creates for itself (dropped first)"
    )
    args = harness.parse(parser, argv, SMOKE)
    started = time.monotonic()
    harness.header("outbox status / relay /metrics on a big outbox vs a small one", args)
    with (
        env_vars({"AIRFLOW__ASTRO_XDEPS__RELAY_METRICS_TOKEN": METRICS_TOKEN}),
        temp_dir("xdeps-status-") as tmp,
    ):
        folder = args.keep or tmp
        folder.mkdir(parents=True, exist_ok=True)
        big = folder / f"status_{args.delivered}_{args.pending}.db"
        if not big.exists():
            print(
                f"building {args.delivered:,} delivered + {args.pending:,} pending items (SQLite) ...",
                flush=True,
            )
            print(
                f"  {build(big, args.delivered, args.pending, 50, 1000):.0f} s, {big.stat().st_size / 1e6:.0f} MB"
            )
        small = tmp / "small.db"
        build(small, 1000, 100, 5, 1000)
        dbs = {"SQLite": (f"sqlite:///{big}", f"sqlite:///{small}")}
        if args.pg_url:
            big_pg = pg_database(args.pg_url, args.pg_db)
            small_pg = pg_database(args.pg_url, f"{args.pg_db}_small")
            print(
                f"building {args.delivered:,} delivered + {args.pending:,} pending items (PostgreSQL, COPY) ..."
            )
            print(f"  {build_pg(big_pg, args.delivered, args.pending, 50, 1000):.0f} s", flush=True)
            build_pg(small_pg, 1000, 100, 5, 1000)
            dbs["PostgreSQL"] = (big_pg, small_pg)
        results = {
            db: (measure(b, args.reps, args.calls), measure(s, args.reps, args.calls))
            for db, (b, s) in dbs.items()
        }
    rows, verdicts, figures = [], [], {}
    size = f"{args.delivered + args.pending + 50:,}"
    for db, (res_big, res_small) in results.items():
        for name, b in res_big.items():
            s = res_small[name]
            lo, hi = b.spread(99)
            rows.append(
                [
                    db,
                    name,
                    fmt_ms(b.p(50)),
                    fmt_ms(b.p(99)),
                    f"{fmt_ms(lo)}-{fmt_ms(hi)}",
                    fmt_ms(s.p(50)),
                    fmt_ms(s.p(99)),
                    fmt_ratio(b.p(50) / s.p(50)),
                ]
            )
            figures[f"{db} {name} p99"] = b.p(99)
            if name != "Outbox.status()":
                verdicts.append(
                    (
                        f"{db}: {name} < 50 ms at {size} items (p99)",
                        b.p(99) < TARGET_S,
                        f"p50 {fmt_ms(b.p(50))} ms, p99 {fmt_ms(b.p(99))} ms",
                    )
                )
    print()
    print(
        table(
            [
                "db",
                "call",
                f"{size} p50 ms",
                "p99 ms",
                "p99 range",
                "1,100 p50 ms",
                "1,100 p99 ms",
                "big/small p50",
            ],
            rows,
        )
    )
    print(f"\n{args.reps} repetitions x {args.calls} calls each; p50/p99: median over repetitions.")
    return harness.finish(args, started, verdicts, figures)


if __name__ == "__main__":
    sys.exit(main())

"""Footprint: what installing astro-xdeps costs each Airflow process, and how the outbox and
routing scale.

Run: ``.venv/bin/python -m bench.footprint`` (``--help`` for options; ``--only import|outbox|routes``;
``--smoke``: seconds, with three of the import contexts).

1. **Plugin import** — in fresh subprocesses, the wall time and RSS (``VmRSS``) that
   ``import astro_xdeps.plugins.xdeps`` adds *after* a context is already imported:
   ``import airflow`` (the target's definition), Airflow's plugin machinery
   (``airflow.plugins_manager`` + ``airflow.listeners``: what every process that loads plugins
   has), and the modules of a scheduler, an api-server app and a task runner. Bytecode is warm
   (``PYTHONPYCACHEPREFIX`` in a temp dir, written by an untimed first run), as in a deployed
   image; one row shows the cold case (no ``.pyc`` at all: this dev box sets
   ``PYTHONDONTWRITEBYTECODE=1``). One row imports ``requests`` into the context first, which
   shows the package's own share. ``python -X importtime`` lists the top contributors.
2. **Outbox at 100k pending** — 100,000 listener payloads enqueued into a SQLite outbox (batches
   of 1,000): fill rate, file size and bytes per item; then, side by side with a small outbox
   (only the batch being claimed is pending), single-item ``enqueue`` latency, ``claim(limit=200)``
   latency (the worker's batch), ``mark_delivered`` latency, claim+mark throughput, and
   ``status()`` (what ``/metrics`` and ``astro-xdeps outbox status`` run).
3. **Routes and targets** — per event: ``plan_items`` (pure) and ``forward()`` (plan + one
   outbox transaction) with 1/10/100 routes and 1/5 targets per route, when one route matches
   (the others are scanned) and when all match (fan-out: routes x targets items); and the
   delivery rate to a local stub with the same items spread over 1 or 5 targets.

Every figure is a median over repetitions; ratios are against a baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench import harness
from bench.common import (
    REPO,
    LatencyRuns,
    fmt_ms,
    fmt_ratio,
    median,
    prepare_airflow_env,
    stub_server,
    table,
    temp_dir,
)

IMPORT_TARGET_MS = 50.0
PLUGIN = "astro_xdeps.plugins.xdeps"
CONTEXTS = [
    ("airflow", "import airflow", "`import airflow` (the target's baseline)"),
    (
        "machinery",
        "import airflow, airflow.plugins_manager, airflow.listeners",
        "+ airflow.plugins_manager, airflow.listeners",
    ),
    ("scheduler", "import airflow.jobs.scheduler_job_runner", "scheduler modules"),
    ("api", "import airflow.api_fastapi.app", "api-server app modules"),
    ("task", "import airflow.sdk.execution_time.task_runner", "task runner modules"),
    ("requests", "import airflow, requests", "`requests` already imported (the package's own share)"),
]
CHILD = """
import json, sys, time
def rss():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
t0 = time.perf_counter()
{context}
t1 = time.perf_counter()
r0 = rss()
sys.stderr.write('---XDEPS-MARK---\\n')
import astro_xdeps.plugins.xdeps
t2 = time.perf_counter()
r1 = rss()
print(json.dumps({{"context_s": t1 - t0, "plugin_s": t2 - t1, "rss0_kb": r0, "rss1_kb": r1}}))
"""
ROUTE_COUNTS = (1, 10, 100)
TARGET_COUNTS = (1, 5)
URI = "s3://warehouse/orders"


SMOKE = {
    "import_reps": 1,
    "import_reps_other": 1,
    "cold_reps": 0,
    "items": 2000,
    "reps": 1,
    "enqueue_samples": 20,
    "claim_cycles": 2,
    "route_samples": 20,
    "delivery_items": 100,
}
SMOKE_CONTEXTS = ("airflow", "machinery", "requests")  # the ones the verdicts read


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__, reps=3)
    parser.add_argument("--only", choices=("import", "outbox", "routes"), action="append")
    parser.add_argument(
        "--import-reps",
        type=int,
        default=10,
        help="subprocesses per context for `import airflow` and with `requests` already imported",
    )
    parser.add_argument("--import-reps-other", type=int, default=5, help="subprocesses per other context")
    parser.add_argument("--cold-reps", type=int, default=3, help="subprocesses without bytecode")
    parser.add_argument("--items", type=int, default=100_000, help="pending items in the big outbox")
    parser.add_argument("--enqueue-samples", type=int, default=300, help="single-item enqueues per rep")
    parser.add_argument("--claim-cycles", type=int, default=10, help="claim(200)+marks cycles per rep")
    parser.add_argument("--route-samples", type=int, default=500, help="events per route case and rep")
    parser.add_argument("--delivery-items", type=int, default=2000)
    args = harness.parse(parser, argv, SMOKE)
    parts = args.only or ["import", "outbox", "routes"]
    started = time.monotonic()
    with temp_dir("xdeps-bench-footprint-") as tmp:
        home = tmp / "airflow_home"
        home.mkdir()
        prepare_airflow_env(home)
        harness.header("Footprint benchmark: plugin import, outbox at 100k pending, routes and targets", args)
        verdicts: list[harness.Verdict] = []
        figures: dict[str, float] = {}
        if "import" in parts:
            verdicts += import_section(tmp, args, figures)
        if "outbox" in parts or "routes" in parts:
            import airflow  # noqa: F401  (listeners.assets needs it; imported here, untimed)

            harness.quiet_package_logs()
        if "outbox" in parts:
            verdicts += outbox_section(tmp, args, figures)
        if "routes" in parts:
            verdicts += routes_section(tmp, args, figures)
    return harness.finish(args, started, verdicts, figures)


# -- 1. plugin import -----------------------------------------------------------------------------


def child_env(pycache: Path, *, bytecode: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    if bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_child(context: str, env: dict[str, str], *, importtime: bool = False) -> tuple[dict, str]:
    cmd = (
        [sys.executable]
        + (["-X", "importtime"] if importtime else [])
        + ["-c", CHILD.format(context=context)]
    )
    r = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"import child failed ({context}):\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr


def import_section(tmp: Path, args: argparse.Namespace, figures: dict[str, float]) -> list[harness.Verdict]:
    print("\n## 1. Plugin import: time and RSS added to an Airflow process\n", flush=True)
    warm_cache = tmp / "pycache-warm"
    warm = child_env(warm_cache, bytecode=True)
    contexts = [c for c in CONTEXTS if c[0] in SMOKE_CONTEXTS] if args.smoke else CONTEXTS
    for _, context, _ in [] if args.smoke else contexts:  # writes the bytecode these imports touch
        run_child(context, warm)
    samples: dict[str, list[dict]] = defaultdict(list)
    keys = [c[0] for c in contexts]
    stmts = {c[0]: c[1] for c in contexts}
    main_keys = ("airflow", "requests")
    for rep in range(max(args.import_reps, args.import_reps_other)):
        rotated = keys[rep % len(keys) :] + keys[: rep % len(keys)]
        for key in rotated:
            if rep < (args.import_reps if key in main_keys else args.import_reps_other):
                samples[key].append(run_child(stmts[key], warm)[0])
    cold = [
        run_child("import airflow", child_env(tmp / f"pycache-cold-{i}", bytecode=False))[0]
        for i in range(args.cold_reps)
    ]
    rows = []

    def row(label: str, runs: list[dict]) -> list[str]:
        plugin = [r["plugin_s"] for r in runs]
        rss = [(r["rss1_kb"] - r["rss0_kb"]) / 1024 for r in runs]
        return [
            label,
            str(len(runs)),
            f"{median([r['context_s'] for r in runs]) * 1000:,.0f}",
            f"{median(plugin) * 1000:.1f}",
            f"{min(plugin) * 1000:.1f}-{max(plugin) * 1000:.1f}",
            f"{median(rss):.1f}",
            f"{median([r['rss0_kb'] for r in runs]) / 1024:.0f}",
        ]

    for key, _, label in contexts:
        rows.append(row(label, samples[key]))
    if cold:
        rows.append(row("cold: `import airflow`, no bytecode cache (compiles every module)", cold))
    print(
        table(
            [
                "context imported first (warm bytecode)",
                "runs",
                "context ms",
                "plugin import ms (median)",
                "range",
                "RSS added MiB",
                "RSS before MiB",
            ],
            rows,
        )
    )
    # Where the time goes: one warm -X importtime run after `import airflow`.
    _, stderr = run_child("import airflow", warm, importtime=True)
    top, by_package, total = parse_importtime(stderr)
    print(
        f"\n`python -X importtime`, warm, after `import airflow`: {total / 1000:.1f} ms in {len(top)} modules"
    )
    print()
    print(
        table(
            ["top-level package", "self ms", "share"],
            [[pkg, f"{us / 1000:.1f}", f"{us / total:.0%}"] for pkg, us in by_package[:8]],
        )
    )
    print()
    print(
        table(
            ["module (top 12 by self time)", "self ms", "cumulative ms"],
            [[name, f"{s / 1000:.1f}", f"{c / 1000:.1f}"] for name, s, c in top[:12]],
        )
    )
    chain = [
        m
        for m in ("astro_xdeps.runtime", "astro_xdeps.outbox.worker", "astro_xdeps.client.http")
        if any(t[0] == m for t in top)
    ]
    cumulative = {name: c for name, _, c in top}
    if chain:
        print(
            "\nImport chain to the HTTP stack: "
            + " -> ".join(f"{m} ({cumulative[m] / 1000:.0f} ms cumulative)" for m in chain)
            + " -> requests"
        )
    base = median([r["plugin_s"] for r in samples["airflow"]]) * 1000
    machinery = median([r["plugin_s"] for r in samples["machinery"]]) * 1000
    own = median([r["plugin_s"] for r in samples["requests"]]) * 1000
    rss = median([(r["rss1_kb"] - r["rss0_kb"]) / 1024 for r in samples["airflow"]])
    figures.update(
        {
            "plugin import ms, after import airflow": base,
            "... after the plugin machinery": machinery,
            "... with requests": own,
        }
    )
    return [
        (
            f"plugin import after `import airflow` < {IMPORT_TARGET_MS:g} ms (warm bytecode)",
            base < IMPORT_TARGET_MS,
            f"{base:.1f} ms",
        ),
        (
            f"plugin import once Airflow's plugin machinery is loaded < {IMPORT_TARGET_MS:g} ms",
            machinery < IMPORT_TARGET_MS,
            f"{machinery:.1f} ms",
        ),
        ("with `requests` already imported (no target)", None, f"{own:.1f} ms"),
        ("RSS added per process (no target)", None, f"{rss:.1f} MiB"),
    ]


_IMPORTTIME = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)")


def parse_importtime(stderr: str) -> tuple[list[tuple[str, int, int]], list[tuple[str, int]], int]:
    """Modules imported after the marker: (name, self us, cumulative us), and self time by package."""
    lines = stderr.split("---XDEPS-MARK---", 1)[-1].splitlines()
    mods = []
    for line in lines:
        m = _IMPORTTIME.match(line)
        if m:
            mods.append((m.group(4), int(m.group(1)), int(m.group(2))))
    by_pkg: dict[str, int] = defaultdict(int)
    for name, self_us, _ in mods:
        by_pkg[name.split(".")[0]] += self_us
    total = sum(by_pkg.values()) or 1
    return (
        sorted(mods, key=lambda m: -m[1]),
        sorted(by_pkg.items(), key=lambda kv: -kv[1]),
        total,
    )


# -- 2. outbox at 100k pending --------------------------------------------------------------------


def listener_items(n: int, *, targets: int = 1, start: int = 0) -> list[Any]:
    """``n`` outbox items exactly as the asset listener writes them (default route)."""
    from astro_xdeps.forwarding.payload import new_event_id
    from astro_xdeps.forwarding.plan import ForwardingPlan, plan_items
    from astro_xdeps.forwarding.routes import Route

    plan = ForwardingPlan(
        enabled=True,
        routes=(Route("default", tuple(f"xdeps_t{k}" for k in range(targets))),),
        deployment="bench-upstream",
        max_hops=1,
        reason="bench",
    )
    items = []
    for i in range(start, start + n):
        event = source_event(i)
        items.extend(plan_items(event, plan, event_id=new_event_id()))
    return items


def source_event(i: int, uri: str = URI) -> Any:
    from astro_xdeps.forwarding.payload import SourceEvent

    return SourceEvent(
        uri=uri,
        name=uri.rsplit("/", 1)[-1],
        extra={"rows": 1000 + i, "partition": "2026-01-01"},
        dag_id="load_orders",
        task_id="load",
        run_id=f"scheduled__2026-01-01T00:00:00+00:00_{i}",
        map_index=-1,
    )


def db_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists())


def outbox_section(tmp: Path, args: argparse.Namespace, figures: dict[str, float]) -> list[harness.Verdict]:
    from astro_xdeps.outbox.store import Outbox

    print(f"\n## 2. Outbox with {args.items:,} pending items (SQLite)\n", flush=True)
    n = args.items
    big_path, small_path = tmp / "big.db", tmp / "small.db"
    big, small = Outbox.sqlite(big_path), Outbox.sqlite(small_path)
    try:
        t0 = time.perf_counter()
        items = listener_items(n)
        build_s = time.perf_counter() - t0
        payload_bytes = median([len(json.dumps(it.payload)) for it in items[:1000]])
        t0 = time.perf_counter()
        for i in range(0, n, 1000):
            big.enqueue(items[i : i + 1000])
        fill_s = time.perf_counter() - t0
        del items
        size_wal = db_bytes(big_path)
        with contextlib.closing(sqlite3.connect(big_path, isolation_level=None)) as raw:
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = db_bytes(big_path)
        print(
            f"Filled with {n:,} listener payloads (JSON payload ~{payload_bytes:.0f} bytes each; built in "
            f"{build_s:.1f} s) in batches of 1,000: {fill_s:.1f} s = {n / fill_s:,.0f} items/s.\n"
            f"File: {size / 1e6:.1f} MB after a checkpoint ({size_wal / 1e6:.1f} MB with the WAL before it) "
            f"= {size / n:,.0f} bytes per pending item ({size / n / payload_bytes:.1f}x the payload JSON).\n"
        )
        spare = listener_items(args.reps * (2 * args.enqueue_samples + args.claim_cycles * 200) + 10, start=n)
        spare_at = 0

        def take(k: int) -> list[Any]:
            nonlocal spare_at
            out = spare[spare_at : spare_at + k]
            spare_at += k
            return out

        res: dict[str, dict[str, list]] = {name: defaultdict(list) for name in ("small", "big")}
        owner = "bench-footprint"
        for rep in range(args.reps):
            order = [("small", small), ("big", big)] if rep % 2 == 0 else [("big", big), ("small", small)]
            for name, ob in order:
                r = res[name]
                lat = []
                for it in take(args.enqueue_samples):
                    t = time.perf_counter()
                    ob.enqueue([it])
                    lat.append(time.perf_counter() - t)
                r["enqueue"].append(lat)
                if name == "small":  # the single enqueues are the only pending items: claim them away
                    while ob.claim(owner, limit=1000, lease_seconds=3600):
                        pass
                claims, marks, cycle_s = [], [], []
                for _ in range(args.claim_cycles):
                    if name == "small":
                        ob.enqueue(take(200))  # exactly one batch pending (untimed)
                    t = time.perf_counter()
                    got = ob.claim(owner, limit=200, lease_seconds=600)
                    claims.append(time.perf_counter() - t)
                    for item in got:
                        tm = time.perf_counter()
                        ob.mark_delivered(item.id, owner, {"event_id": item.id})
                        marks.append(time.perf_counter() - tm)
                    cycle_s.append((time.perf_counter() - t) / max(1, len(got)))
                    if len(got) != 200:
                        raise RuntimeError(f"{name}: claimed {len(got)} of 200")
                r["claim"].append(claims)
                r["mark"].append(marks)
                r["per_item"].append(cycle_s)
                st = []
                for _ in range(3):
                    t = time.perf_counter()
                    ob.status()
                    st.append(time.perf_counter() - t)
                r["status"].append(st)
                nd = []
                for _ in range(20):
                    t = time.perf_counter()
                    ob.next_due_at()
                    nd.append(time.perf_counter() - t)
                r["next_due"].append(nd)
        pending_big = sum(row.count for row in big.status() if row.state == "pending")
    finally:
        big.close()
        small.close()

    rows = []
    ratios = {}
    for key, label in (
        ("enqueue", "enqueue(1 item) (the listener's write)"),
        ("claim", "claim(limit=200) (the worker's batch)"),
        ("mark", "mark_delivered(1 item)"),
        ("next_due", "next_due_at() (idle worker poll)"),
        ("status", "status() (/metrics, `outbox status`)"),
    ):
        s, b = LatencyRuns(res["small"][key]), LatencyRuns(res["big"][key])
        ratios[key] = b.p(50) / s.p(50)
        rows.append(
            [
                label,
                fmt_ms(s.p(50)),
                fmt_ms(s.p(99)),
                fmt_ms(b.p(50)),
                fmt_ms(b.p(99)),
                fmt_ratio(b.p(50) / s.p(50)),
                fmt_ratio(b.p(99) / s.p(99)),
            ]
        )
    tp_small = median([1 / median(x) for x in res["small"]["per_item"]])
    tp_big = median([1 / median(x) for x in res["big"]["per_item"]])
    rows.append(
        [
            "claim + mark throughput, items/s",
            f"{tp_small:,.0f}",
            "",
            f"{tp_big:,.0f}",
            "",
            fmt_ratio(tp_big / tp_small),
            "",
        ]
    )
    print(
        f"{args.reps} repetitions, side by side; 'small' = a fresh outbox holding only the batch being "
        f"claimed (0 backlog), 'big' = {pending_big:,} pending at the end. Milliseconds.\n"
    )
    print(
        table(
            ["operation", "small p50", "small p99", "100k p50", "100k p99", "p50 ratio", "p99 ratio"],
            rows,
        )
    )
    figures.update(
        {
            "enqueue big/small": ratios["enqueue"],
            "claim big/small": ratios["claim"],
            "claim+mark items/s": tp_big,
        }
    )
    return [
        ("enqueue p50 at 100k pending vs empty (no target)", None, f"{fmt_ratio(ratios['enqueue'])}"),
        (
            "claim(200) p50 at 100k pending vs one batch pending (no target)",
            None,
            f"{fmt_ratio(ratios['claim'])}",
        ),
        (
            "claim+mark throughput at 100k pending (no target)",
            None,
            f"{tp_big:,.0f} items/s ({fmt_ratio(tp_big / tp_small)} of small)",
        ),
    ]


# -- 3. routes and targets ------------------------------------------------------------------------


def make_routes(n_routes: int, n_targets: int, *, all_match: bool) -> list[Any]:
    """``n_routes`` routes with ``n_targets`` targets each.

    one matches: route i matches ``s3://bucket_i/*``; the event's uri matches only the last one,
    so every route is tested. all match: every route matches the uri and rewrites it to its own
    downstream uri, so the event fans out to routes x targets items.
    """
    from astro_xdeps.forwarding.routes import Route

    routes = []
    for i in range(n_routes):
        targets = tuple(f"xdeps_t{k}" for k in range(n_targets))
        if all_match:
            routes.append(
                Route(name=f"r{i}", targets=targets, uri_glob="s3://warehouse/*", uri=f"s3://copy_{i}/orders")
            )
        else:
            glob = "s3://warehouse/*" if i == n_routes - 1 else f"s3://bucket_{i}/*"
            routes.append(Route(name=f"r{i}", targets=targets, uri_glob=glob))
    return routes


def routes_json(routes: list[Any]) -> str:
    return json.dumps(
        [
            {
                "name": r.name,
                "match": {"uri": r.uri_glob},
                "targets": list(r.targets),
                **({"uri": r.uri} if r.uri else {}),
            }
            for r in routes
        ]
    )


def routes_section(tmp: Path, args: argparse.Namespace, figures: dict[str, float]) -> list[harness.Verdict]:
    from astro_xdeps import runtime
    from astro_xdeps.forwarding.payload import new_event_id
    from astro_xdeps.forwarding.plan import ForwardingPlan, plan_items
    from astro_xdeps.listeners.assets import forward

    print("\n## 3. Routes and targets: per-event cost of planning and of forward()\n", flush=True)
    cases = [(r, t, am) for am in (False, True) for r in ROUTE_COUNTS for t in TARGET_COUNTS]
    plan_lat: dict[tuple, list[list[float]]] = defaultdict(list)
    fwd_lat: dict[tuple, list[list[float]]] = defaultdict(list)
    n_items: dict[tuple, int] = {}
    events = [source_event(i) for i in range(args.route_samples)]
    os.environ["AIRFLOW__ASTRO_XDEPS__DELIVERY_WORKER"] = "false"
    os.environ["AIRFLOW__ASTRO_XDEPS__FORWARD_ASSETS"] = "true"
    os.environ["AIRFLOW__ASTRO_XDEPS__DEPLOYMENT_NAME"] = "bench-upstream"
    for rep in range(args.reps):
        rotated = cases[rep % len(cases) :] + cases[: rep % len(cases)]
        for case in rotated:
            n_routes, n_targets, all_match = case
            routes = make_routes(n_routes, n_targets, all_match=all_match)
            plan = ForwardingPlan(True, tuple(routes), "bench-upstream", 1, "bench")
            fan = n_routes * n_targets if all_match else n_targets
            few = max(min(50, args.route_samples // 4), args.route_samples // 10)  # 50 at the default 500
            samples = args.route_samples if fan <= 50 else few
            lat = []
            for ev in events[:samples]:
                eid = new_event_id()
                t = time.perf_counter()
                out = plan_items(ev, plan, event_id=eid)
                lat.append(time.perf_counter() - t)
            n_items[case] = len(out)
            if len(out) != fan:
                raise RuntimeError(f"{case}: planned {len(out)} items, expected {fan}")
            plan_lat[case].append(lat)
            # forward(): the plan from settings (cached after the first call), one outbox transaction
            db = tmp / f"routes-{n_routes}-{n_targets}-{int(all_match)}-{rep}.db"
            os.environ["AIRFLOW__ASTRO_XDEPS__OUTBOX_URL"] = f"sqlite:///{db}"
            os.environ["AIRFLOW__ASTRO_XDEPS__ROUTES"] = routes_json(routes)
            runtime.reset()
            forward(events[0])  # opens the outbox, builds the plan: first-call cost, untimed
            lat = []
            fwd_samples = samples if fan <= 50 else max(min(30, samples), samples // 2)
            for ev in events[1 : 1 + fwd_samples]:
                t = time.perf_counter()
                written = forward(ev)
                lat.append(time.perf_counter() - t)
                if written != fan:
                    raise RuntimeError(f"{case}: forward() wrote {written} items, expected {fan}")
            fwd_lat[case].append(lat)
            runtime.reset()
            with contextlib.suppress(OSError):
                for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
                    p.unlink()
    base = (1, 1, False)
    rows = []
    for case in cases:
        n_routes, n_targets, all_match = case
        pl, fw = LatencyRuns(plan_lat[case]), LatencyRuns(fwd_lat[case])
        rows.append(
            [
                "all match (fan-out)" if all_match else "1 matches",
                n_routes,
                n_targets,
                n_items[case],
                fmt_ms(pl.p(50)),
                fmt_ms(pl.p(99)),
                fmt_ms(fw.p(50)),
                fmt_ms(fw.p(99)),
                f"{1 / fw.p(50):,.0f}",
                fmt_ratio(fw.p(50) / LatencyRuns(fwd_lat[base]).p(50)),
            ]
        )
    print(
        f"{args.reps} repetitions, medians of each repetition's p50/p99 (up to {args.route_samples} events per "
        "case and repetition). Milliseconds per event; forward() = plan + one outbox transaction "
        "(delivery worker off), items/event = outbox rows written.\n"
    )
    print(
        table(
            [
                "routes",
                "n routes",
                "targets/route",
                "items/event",
                "plan p50",
                "plan p99",
                "forward p50",
                "forward p99",
                "events/s (1/p50)",
                "forward p50 vs 1x1",
            ],
            rows,
        )
    )
    r1, r5 = delivery_by_targets(tmp, args)
    one_of_100 = LatencyRuns(fwd_lat[(100, 1, False)]).p(50) / LatencyRuns(fwd_lat[base]).p(50)
    figures.update(
        {
            "forward 1 of 100 routes / 1 route": one_of_100,
            "delivery 1 target events/s": r1,
            "... 5 targets": r5,
        }
    )
    return [
        ("forward() p50, 1 of 100 routes matching vs 1 route (no target)", None, fmt_ratio(one_of_100)),
        (
            "delivery events/s, 5 targets vs 1 target (no target)",
            None,
            f"{r5:,.0f} vs {r1:,.0f} events/s ({fmt_ratio(r5 / r1)})",
        ),
    ]


def delivery_by_targets(tmp: Path, args: argparse.Namespace) -> tuple[float, float]:
    """The same number of items drained to 1 target and to 5 targets (one stub serves them all)."""
    from astro_xdeps.client import DeploymentClient
    from astro_xdeps.client.config import DeploymentConfig
    from astro_xdeps.outbox.store import Outbox
    from astro_xdeps.outbox.worker import ClientPool, DeliveryWorker

    n = args.delivery_items
    rates: dict[int, list[float]] = defaultdict(list)
    with stub_server(0) as stub:

        def factory(target: str) -> DeploymentClient:
            return DeploymentClient(
                DeploymentConfig(name=target, base_url=stub.url, token="bench", api_version="v2", retries=0)
            )

        for rep in range(args.reps):
            for n_targets in (1, 5) if rep % 2 == 0 else (5, 1):
                items = listener_items(n // n_targets, targets=n_targets)
                db = tmp / f"deliver-{n_targets}-{rep}.db"
                with Outbox.sqlite(db) as ob:
                    for i in range(0, len(items), 500):
                        ob.enqueue(items[i : i + 500])
                    worker = DeliveryWorker(ob, clients=ClientPool(factory))
                    for k in range(n_targets):  # connect + version detection + asset id: untimed
                        worker.clients.get(f"xdeps_t{k}").resolve_asset(URI)
                    t = time.perf_counter()
                    stats = worker.drain(timeout=120)
                    elapsed = time.perf_counter() - t
                    worker.stop(timeout=5)
                    worker.clients.close()
                if stats.delivered != len(items):
                    raise RuntimeError(f"{n_targets} targets: delivered {stats.delivered} of {len(items)}")
                rates[n_targets].append(len(items) / elapsed)
    r1, r5 = median(rates[1]), median(rates[5])
    print(
        f"\nDelivery, {n:,} items to a local stub (0 ms), DeliveryWorker default concurrency 4, "
        f"{args.reps} repetitions:\n"
    )
    print(
        table(
            ["targets", "events/s (median)", "range", "vs 1 target"],
            [
                [k, f"{median(v):,.0f}", f"{min(v):,.0f}-{max(v):,.0f}", fmt_ratio(median(v) / r1)]
                for k, v in sorted(rates.items())
            ],
        )
    )
    return r1, r5


if __name__ == "__main__":
    sys.exit(main())

"""Against a real Airflow 3 downstream: our delivery rate vs the raw client's, and end-to-end latency.

Run: ``.venv/bin/python -m bench.real_airflow`` (``--help`` for options). Starts two real Airflow 3
deployments on 127.0.0.1 with ``LocalDeployment`` (api-server, scheduler, dag-processor each;
SQLite metadata DB, LocalExecutor) and stops every process group at the end, also on failure.

1. **Latency** (upstream ``producer_dag`` -> downstream ``consumer_dag``, real schedulers). The
   upstream has astro-xdeps installed and ``AIRFLOW_CONN_XDEPS_DEFAULT`` pointing at the
   downstream, as in ``tests/integration/conftest.py``. ``producer_dag`` is triggered N times, one
   after the other; for each run the hops are read from the two metadata DBs (as ``./dev demo``
   does): upstream ``get_bear`` end_date -> downstream asset event ``timestamp`` (our path:
   listener in the api-server, outbox, delivery worker, REST call) -> ``consumer_dag`` run
   ``queued_at`` (the downstream scheduler). Medians (p50) over the runs.
2. **Delivery rate** (then the upstream is stopped and ``consumer_dag`` paused, so no task
   processes compete for the 2 cores). Side by side, order alternating per repetition:

   - ours: ``--events`` asset_event items (the listener's payloads for ``file://include/bears``)
     in a temp SQLite outbox, drained by ``DeliveryWorker`` (``ClientPool`` with a
     ``DeploymentClient`` from ``DeploymentConfig(username="admin", password=..., api_version="v2",
     retries=0)``: JWT login, the worker owns retries), at each ``--concurrency``. The first
     ``drain()`` is one pass: every item is sent once; a failed item is rescheduled with backoff,
     not retried in the pass. Rate = items confirmed in that pass / its wall time. Then the worker
     keeps draining (default backoff) until every item is delivered: "time to all delivered".
   - raw: the same number of bodies (``{"asset_id", "extra"}``, asset id resolved once, JWT fetched
     once) POSTed to ``/api/v2/assets/events`` by the same number of threads sharing one keep-alive
     ``requests.Session``. **No retry**: rate = successful answers / wall time; failures are lost.

   Concurrency 1 (``--events``, ``--reps``) and 4, the worker's default (``--events-concurrent``,
   ``--reps-concurrent``: few, because the SQLite downstream turns concurrent writes into
   5 s lock waits and 500 answers, "database is locked": each such pass takes about a minute).
   Both sides' failures are counted, and the "database is locked" lines the downstream
   api-server logged. Afterwards every event id of ours is looked up downstream: each must be
   there exactly once (retries after an ambiguous 500 check before resending).

``--smoke``: one latency run and a few events per side. Starting two deployments takes a minute
or more on a small machine, so CI's benchmark smoke leaves this one out (its code paths are the
integration tests' ``LocalDeployment`` and the worker's); run it by hand after changing it.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from bench import harness
from bench.common import cpu_seconds, median, prepare_airflow_env, table, temp_dir

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "dags" / "examples"
BEARS = "file://include/bears"
TARGET = "xdeps_downstream"
TARGET_RATIO = 0.9  # issue 11: to a real Airflow 3 downstream, >= 0.9 of the raw client


def ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


SMOKE = {
    "reps": 1,
    "reps_concurrent": 1,
    "events": 10,
    "events_concurrent": 4,
    "latency_runs": 1,
    "complete_seconds": 20.0,
}


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__, reps=3)
    parser.add_argument(
        "--events", type=int, default=200, help="items per repetition and side, concurrency 1"
    )
    parser.add_argument(
        "--events-concurrent", type=int, default=20, help="items per repetition and side, concurrency > 1"
    )
    parser.add_argument("--reps-concurrent", type=int, default=1, help="rate repetitions at concurrency > 1")
    parser.add_argument(
        "--concurrency",
        default="1,4",
        help="comma-separated; 4 is the worker's default target_concurrency, 1 is what a SQLite downstream takes",
    )
    parser.add_argument("--latency-runs", type=int, default=5, help="producer_dag runs (0: skip latency)")
    parser.add_argument(
        "--complete-seconds", type=float, default=45.0, help="how long ours may retry to deliver everything"
    )
    parser.add_argument(
        "--max-seconds", type=float, default=270.0, help="start no further run or repetition after this"
    )
    args = harness.parse(parser, argv, SMOKE)
    with temp_dir("xdeps-bench-real-") as tmp:
        home = tmp / "bench_home"
        home.mkdir()
        prepare_airflow_env(home)
        return run(args, tmp)


def run(args: argparse.Namespace, tmp: Path) -> int:
    from astro_xdeps.testing.local_deployment import COMPONENTS, LocalDeployment

    started = time.monotonic()
    harness.quiet_package_logs()
    harness.header("Real Airflow 3 benchmark: delivery rate vs raw client, and end-to-end latency", args)
    # Bytecode cached in the temp dir (this box sets PYTHONDONTWRITEBYTECODE=1): every Airflow
    # process and task process would otherwise compile Airflow from source, as no deployment does.
    pyc = {"PYTHONPYCACHEPREFIX": str(tmp / "pycache"), "PYTHONDONTWRITEBYTECODE": ""}
    down = LocalDeployment(
        "downstream",
        tmp / "downstream",
        dags=[EXAMPLES / "consumer_dag.py"],
        extra_env={**pyc, "AIRFLOW__ASTRO_XDEPS__DEPLOYMENT_NAME": "bench-downstream"},
    )
    up = LocalDeployment("upstream", tmp / "upstream", dags=[EXAMPLES / "producer_dag.py"])
    up.extra_env.update(
        pyc,
        AIRFLOW_CONN_XDEPS_DEFAULT=down.connection_json(),
        AIRFLOW__ASTRO_XDEPS__DEPLOYMENT_NAME="bench-upstream",
        AIRFLOW__ASTRO_XDEPS__RETRY_MAX_DELAY="2",
    )
    deployments = [down] + ([up] if args.latency_runs > 0 else [])
    latency: list[dict[str, float | None]] = []
    rate: dict[str, Any] = {}
    try:
        t = time.monotonic()
        threads = [threading.Thread(target=d.prepare) for d in deployments]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        for d in deployments:
            if not (d.home / "airflow.db").exists():
                raise RuntimeError(f"{d.name}: db migrate failed; see {d.home}")
        for d in deployments:
            for component in COMPONENTS:
                d.start_component(component)
        for d in deployments:
            d.wait_ready(timeout=240)
        down.wait_for_dag("consumer_dag", timeout=180)
        if up in deployments:
            up.wait_for_dag("producer_dag", timeout=180)
        print(
            f"\n{len(deployments)} deployment(s) migrated, started and parsed in {time.monotonic() - t:.0f} s: "
            + ", ".join(f"{d.name} {d.url}" for d in deployments),
            flush=True,
        )
        if args.latency_runs > 0:
            latency = latency_phase(up, down, args, started)
            up.stop()
        rate = rate_phase(down, args, tmp, started)
    finally:
        for d in deployments:
            with contextlib.suppress(Exception):
                d.stop()
    verdicts, figures = report(latency, rate)
    print(f"\n{sum(len(d.started_groups) for d in deployments)} process groups started and stopped.")
    broken = [name for name, ok, _ in verdicts if name.startswith("every event") and not ok]
    return harness.finish(args, started, verdicts, figures, broken)


# -- 1. latency ---------------------------------------------------------------------------------


def latency_phase(
    up: Any, down: Any, args: argparse.Namespace, started: float
) -> list[dict[str, float | None]]:
    print(f"\nLatency: {args.latency_runs} producer_dag runs upstream, one after the other", flush=True)
    seen_runs: set[str] = {r["dag_run_id"] for r in down.dag_runs("consumer_dag")}
    out = []
    for i in range(args.latency_runs):
        if time.monotonic() - started > args.max_seconds * 0.55 and i >= 3:
            print(f"  stopping after {i} runs (time budget)")
            break
        run_id = up.trigger("producer_dag", run_id=f"bench_{i}_{uuid.uuid4().hex[:6]}")
        up.wait_for_run("producer_dag", run_id, timeout=180)
        ti = up.api("GET", f"/dags/producer_dag/dagRuns/{run_id}/taskInstances/get_bear").json()
        task_done = ts(ti.get("end_date"))
        event = wait_for(partial(event_of, down, run_id), 90)
        arrived = ts(event["timestamp"]) if event else None
        consumer = wait_for(partial(consumer_run_after, down, arrived, seen_runs), 90) if arrived else None
        queued = ts(consumer.get("queued_at")) if consumer else None
        if consumer:
            seen_runs.add(consumer["dag_run_id"])
            with contextlib.suppress(TimeoutError):
                down.wait_for_run(
                    "consumer_dag", consumer["dag_run_id"], timeout=120
                )  # quiet box for the next
        row = {
            "task_to_event": None if task_done is None or arrived is None else arrived - task_done,
            "event_to_queued": None if arrived is None or queued is None else queued - arrived,
            "task_to_queued": None if task_done is None or queued is None else queued - task_done,
        }
        out.append(row)
        print(
            "  run {}: task -> event {} ms, event -> consumer queued {} ms, task -> consumer queued {} ms".format(
                i + 1, *(f"{v * 1000:,.0f}" if v is not None else "n/a" for v in row.values())
            ),
            flush=True,
        )
    return out


def wait_for(fn: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.3)
    return None


def event_of(down: Any, run_id: str) -> dict | None:
    for event in down.asset_events(BEARS, limit=50):
        if ((event.get("extra") or {}).get("xdeps") or {}).get("source", {}).get("run_id") == run_id:
            return event
    return None


def consumer_run_after(down: Any, since: float, seen: set[str]) -> dict | None:
    runs = [
        r
        for r in down.dag_runs("consumer_dag")
        if r["dag_run_id"] not in seen and (ts(r.get("queued_at")) or 0) >= since - 1
    ]
    return min(runs, key=lambda r: ts(r["queued_at"]) or 0) if runs else None


# -- 2. rate --------------------------------------------------------------------------------------


def make_items(n: int) -> list[Any]:
    """``n`` asset_event items as the upstream listener writes them (via forwarding.payload.outbox_item)."""
    from astro_xdeps.forwarding.payload import SourceEvent, new_event_id
    from astro_xdeps.forwarding.plan import ForwardingPlan, plan_items
    from astro_xdeps.forwarding.routes import Route

    plan = ForwardingPlan(True, (Route("default", (TARGET,)),), "bench-upstream", 1, "bench")
    items = []
    for i in range(n):
        event = SourceEvent(
            uri=BEARS,
            name=BEARS,
            extra={"batch": i},
            dag_id="producer_dag",
            task_id="get_bear",
            run_id=f"bench_rate_{i}",
            map_index=-1,
        )
        items.extend(plan_items(event, plan, event_id=new_event_id()))
    return items


def client_factory(down: Any) -> Callable[[str], Any]:
    from astro_xdeps.client import DeploymentClient
    from astro_xdeps.client.config import DeploymentConfig

    def factory(target: str) -> Any:
        return DeploymentClient(
            DeploymentConfig(
                name=target,
                base_url=down.url,
                username="admin",
                password=down.password,
                api_version="v2",
                retries=0,  # as the worker's own clients: the outbox owns retries
            )
        )

    return factory


def ours_once(
    down: Any, items: list[Any], db: Path, args: argparse.Namespace, concurrency: int
) -> dict[str, Any]:
    from astro_xdeps.outbox.store import Outbox
    from astro_xdeps.outbox.worker import ClientPool, DeliveryWorker

    with Outbox.sqlite(db) as outbox:
        outbox.enqueue(items)
        worker = DeliveryWorker(outbox, clients=ClientPool(client_factory(down)), concurrency=concurrency)
        try:
            client = worker.clients.get(TARGET)
            client.resolve_asset(BEARS)  # login, version, asset id: untimed, as raw's
            c0, t0 = cpu_seconds(), time.perf_counter()
            first = worker.drain(timeout=120)
            elapsed = time.perf_counter() - t0
            cpu = cpu_seconds() - c0
            errors = Counter(
                classify(it.last_error) for it in outbox.list_items(state="pending", limit=len(items) + 1)
            )
            deadline = time.monotonic() + args.complete_seconds
            total = first.delivered
            while total < len(items) and time.monotonic() < deadline:
                due = outbox.next_due_at()
                if due is None:
                    break
                time.sleep(min(max(0.0, due - time.time()), max(0.0, deadline - time.monotonic())))
                total += worker.drain(timeout=60).delivered
            complete_s = time.perf_counter() - t0
            done = outbox.list_items(state="delivered", limit=len(items) + 1)
            dead = outbox.list_items(state="dead", limit=len(items) + 1)
        finally:
            worker.stop(timeout=5)
            worker.clients.close()
    return {
        "n": len(items),
        "first_delivered": first.delivered,
        "first_retried": first.retried,
        "elapsed": elapsed,
        "rate": first.delivered / elapsed,
        "cpu_per_event": cpu / max(1, first.delivered + first.retried),
        "errors": errors,
        "all_delivered": len(done) == len(items),
        "delivered": len(done),
        "dead": len(dead),
        "complete_s": complete_s,
        "attempts": sum(it.attempts for it in done),
        "found_existing": sum(1 for it in done if (it.result or {}).get("found_existing")),
        "event_ids": [it.payload["event_id"] for it in items],
    }


def log_summary(side: list[dict[str, Any]]) -> str:
    total: Counter[str] = Counter()
    for x in side:
        total.update(x["locked_in_log"])
    return f"{total['posts']} / {total['500']} / {total['slow']} / {total['locked']}"


def classify(error: str | None) -> str:
    if not error:
        return "none"
    text = error.lower()
    if "database is locked" in text:
        return "500 database is locked"
    if "500" in text:
        return "500 other"
    return error[:60]


def raw_once(down: Any, items: list[Any], asset_id: int, token: str, threads: int) -> dict[str, Any]:
    """The seed's approach at its best: keep-alive Session, JWT once, asset id once, no retry."""
    import requests

    bodies = [{"asset_id": asset_id, "extra": it.payload["extra"]} for it in items]
    session = requests.Session()
    headers = {"Authorization": f"Bearer {token}"}
    endpoint = f"{down.url}/api/v2/assets/events"
    statuses: Counter[str] = Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + 120

    def post_all(part: list[dict[str, Any]]) -> None:
        for body in part:
            if time.monotonic() > deadline:
                return
            try:
                r = session.post(endpoint, json=body, headers=headers, timeout=(5, 30))
                key = str(r.status_code)
                if r.status_code >= 500 and "locked" in r.text:
                    key += " database is locked"
            except requests.RequestException as exc:
                key = type(exc).__name__
            with lock:
                statuses[key] += 1

    workers = [threading.Thread(target=post_all, args=(bodies[k::threads],)) for k in range(threads)]
    c0 = cpu_seconds()
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join(130)
    elapsed = time.perf_counter() - t0
    cpu = cpu_seconds() - c0
    session.close()
    ok = statuses.get("200", 0)
    return {
        "n": len(items),
        "ok": ok,
        "elapsed": elapsed,
        "rate": ok / elapsed,
        "cpu_per_event": cpu / len(items),
        "statuses": statuses,
        "event_ids": [it.payload["event_id"] for it in items],
    }


def rate_phase(down: Any, args: argparse.Namespace, tmp: Path, started: float) -> dict[str, Any]:
    r = down.api("PATCH", "/dags/consumer_dag", json={"is_paused": True})
    if r.status_code != 200:
        raise RuntimeError(f"could not pause consumer_dag: HTTP {r.status_code} {r.text[:200]}")
    assets = down.api("GET", "/assets", params={"uri_pattern": BEARS, "limit": 100}).json()["assets"]
    asset_id = next(a["id"] for a in assets if a["uri"] == BEARS)
    token = down.token()
    api_log = down.home / "logs" / "api-server.out"
    results: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for c in [int(x) for x in args.concurrency.split(",")]:
        n = args.events if c == 1 else args.events_concurrent
        reps = args.reps if c == 1 else args.reps_concurrent
        print(
            f"\nRate at concurrency {c}: {n} events per side and repetition; consumer_dag paused, upstream stopped",
            flush=True,
        )
        ours: list[dict[str, Any]] = []
        raw: list[dict[str, Any]] = []
        for rep in range(reps):
            if rep >= 1 and time.monotonic() - started > args.max_seconds - 30:
                print(f"  stopping after {rep} repetitions (time budget)")
                break
            sides = ["ours", "raw"]
            for side in sides[rep % len(sides) :] + sides[: rep % len(sides)]:
                items = make_items(n)
                log_at = api_log.stat().st_size
                if side == "ours":
                    res = ours_once(down, items, tmp / f"rate-{c}-{rep}.db", args, c)
                    ours.append(res)
                else:
                    res = raw_once(down, items, asset_id, token, c)
                    raw.append(res)
                res["locked_in_log"] = locked_lines(api_log, log_at)
                if side == "ours":
                    print(
                        f"  rep {rep + 1} ours: {res['rate']:,.1f} events/s in the first pass "
                        f"({res['first_delivered']}/{res['n']} confirmed in {res['elapsed']:.1f} s, "
                        f"{res['first_retried']} rescheduled, still pending after it: {dict(res['errors'])}); "
                        f"all {res['delivered']}/{res['n']} delivered after {res['complete_s']:.1f} s; "
                        f"downstream log: {res['locked_in_log']}",
                        flush=True,
                    )
                else:
                    print(
                        f"  rep {rep + 1} raw:  {res['rate']:,.1f} events/s ({res['ok']}/{res['n']} succeeded in "
                        f"{res['elapsed']:.1f} s; answers {dict(res['statuses'])}); downstream log: {res['locked_in_log']}",
                        flush=True,
                    )
        results[c] = {"ours": ours, "raw": raw}
    counts = downstream_counts(down, asset_id)
    return {"by_concurrency": results, "counts": counts}


_ACCESS = re.compile(rb"duration_us=(\d+) .*?method=(\w+) path=(\S+) .*?status_code=(\d+)")


def locked_lines(log: Path, offset: int) -> dict[str, int]:
    """What the downstream api-server logged since ``offset``: 'database is locked' errors, and its
    POST /api/v2/assets/events answers by status and duration (from its access log)."""
    with log.open("rb") as f:
        f.seek(offset)
        text = f.read()
    out = {"locked": text.count(b"database is locked"), "posts": 0, "500": 0, "slow": 0}
    for m in _ACCESS.finditer(text):
        if m.group(2) == b"POST" and m.group(3) == b"/api/v2/assets/events":
            out["posts"] += 1
            out["500"] += m.group(4) == b"500"
            out["slow"] += int(m.group(1)) >= 4_900_000
    return out


def downstream_counts(down: Any, asset_id: int) -> Counter[str]:
    """How many events of the asset carry each xdeps_event_id (every page)."""
    counts: Counter[str] = Counter()
    offset = 0
    while True:
        for _ in range(20):
            r = down.api(
                "GET",
                "/assets/events",
                params={"asset_id": asset_id, "order_by": "timestamp", "limit": 100, "offset": offset},
            )
            if r.status_code == 200:
                break
            time.sleep(0.5)
        r.raise_for_status()
        page = r.json()["asset_events"]
        for event in page:
            eid = (event.get("extra") or {}).get("xdeps_event_id")
            if eid:
                counts[eid] += 1
        offset += len(page)
        if not page:
            return counts


# -- report ---------------------------------------------------------------------------------------


def report(
    latency: list[dict[str, float | None]], rate: dict[str, Any]
) -> tuple[list[harness.Verdict], dict[str, float]]:
    """Print the tables; return the verdicts and the headline figures (hop p50s, rates, ratios)."""
    figures: dict[str, float] = {}
    if latency:
        print(
            f"\n## Latency, upstream task success -> downstream consumer run queued ({len(latency)} runs)\n"
        )
        rows = []
        for key, label in (
            ("task_to_event", "upstream get_bear end_date -> downstream asset event timestamp (astro-xdeps)"),
            ("event_to_queued", "downstream asset event -> consumer_dag run queued_at (Airflow's scheduler)"),
            ("task_to_queued", "end to end: upstream task done -> consumer run queued"),
        ):
            vals = [v for r in latency if (v := r[key]) is not None]
            figures[f"latency {key} p50"] = median(vals) if vals else float("nan")
            rows.append(
                [
                    label,
                    len(vals),
                    f"{median(vals) * 1000:,.0f}" if vals else "n/a",
                    f"{min(vals) * 1000:,.0f}-{max(vals) * 1000:,.0f}" if vals else "n/a",
                ]
            )
        print(table(["hop", "runs", "p50 ms", "range ms"], rows))
    verdicts: list[harness.Verdict] = []
    if not rate:
        return verdicts, figures
    counts = rate["counts"]
    for c, sides in rate["by_concurrency"].items():
        ours, raw = sides["ours"], sides["raw"]
        if not ours or not raw:
            continue
        r_ours, r_raw = median([x["rate"] for x in ours]), median([x["rate"] for x in raw])
        print(
            f"\n## Delivery rate to the real downstream, concurrency {c} ({len(ours)} repetitions x "
            f"{ours[0]['n']} events per side)\n"
        )
        ours_errors: Counter[str] = sum((x["errors"] for x in ours), Counter())
        raw_fail: Counter[str] = sum((x["statuses"] for x in raw), Counter())
        raw_fail.pop("200", None)
        rows = [
            [
                "ours: DeliveryWorker.drain(), first pass",
                f"{r_ours:,.1f}",
                f"{min(x['rate'] for x in ours):,.1f}-{max(x['rate'] for x in ours):,.1f}",
                f"{sum(x['first_delivered'] for x in ours)}/{sum(x['n'] for x in ours)}",
                f"{sum(x['first_retried'] for x in ours)} rescheduled"
                + (
                    f" ({', '.join(f'{k}: {v}' for k, v in ours_errors.items())} still pending)"
                    if ours_errors
                    else ""
                ),
                log_summary(ours),
                f"{median([x['complete_s'] for x in ours]):.1f} s ({sum(x['delivered'] for x in ours)}/"
                f"{sum(x['n'] for x in ours)})",
            ],
            [
                "raw: requests, keep-alive Session, no retry",
                f"{r_raw:,.1f}",
                f"{min(x['rate'] for x in raw):,.1f}-{max(x['rate'] for x in raw):,.1f}",
                f"{sum(x['ok'] for x in raw)}/{sum(x['n'] for x in raw)}",
                ", ".join(f"HTTP {k}: {v}" for k, v in raw_fail.items()) or "none",
                log_summary(raw),
                "never: failures are lost",
            ],
        ]
        print(
            table(
                [
                    "side",
                    "events/s (median)",
                    "range",
                    "succeeded in the pass",
                    "failures in the pass",
                    "downstream api-server: POSTs / 500s / >= 5 s / 'database is locked'",
                    "all delivered after",
                ],
                rows,
            )
        )
        ratio = r_ours / r_raw if r_raw else float("nan")
        figures[f"ours c={c} events/s"] = r_ours  # raw's may be 0: it loses what a SQLite downstream refuses
        our_ids = [eid for x in ours for eid in x["event_ids"]]
        missing = sum(1 for eid in our_ids if counts.get(eid, 0) == 0)
        dupes = sum(counts[eid] - 1 for eid in our_ids if counts.get(eid, 0) > 1)
        attempts = sum(x["attempts"] for x in ours)
        found = sum(x["found_existing"] for x in ours)
        print(
            f"\nRatio ours/raw (medians, same run): {ratio:.3f}. Rates count successes only; raw's failures "
            f"are never retried. Ours: {attempts} attempts for {len(our_ids)} events ({found} settled by finding "
            f"the event already downstream after an ambiguous failure); downstream check of its event ids: "
            f"{len(our_ids) - missing} present, {missing} missing, {dupes} duplicates."
        )

        verdicts.append(
            (
                f"ours >= {TARGET_RATIO} of the raw client's rate at concurrency {c}",
                ratio >= TARGET_RATIO,
                f"{ratio:.3f}",
            )
        )
        verdicts.append(
            (
                f"every event of ours delivered exactly once at concurrency {c}",
                missing == 0 and dupes == 0,
                f"{missing} missing, {dupes} duplicates",
            )
        )
    return verdicts, figures


if __name__ == "__main__":
    import sys

    sys.exit(main())

"""Delivery throughput and latency: outbox -> DeliveryWorker -> a local stub downstream (2xx).

Run: ``.venv/bin/python -m bench.delivery`` (``--help`` for options; ``--smoke``: seconds).

Each repetition runs, side by side (order rotated from one repetition to the next):

- ours, drain: ``DeliveryWorker.drain()`` of N pre-enqueued items (the listener's real payloads,
  10 assets) with the default concurrency (``target_concurrency`` = 4) and with concurrency 1;
- raw, the ceiling of this HTTP stack: the same N request bodies the client sends
  (``{"asset_id": ..., "extra": ...}`` with the same bearer header) POSTed with ``requests``
  over keep-alive — one Session sequentially, and 4 threads sharing one Session (as the
  worker's client does) for the same concurrency as the worker. At concurrency 4 twice: a
  default Session (``trust_env`` on: requests looks proxies/CA up in the environment on every
  request) and one with ``trust_env = False`` (no per-request lookup). The package's client
  resolves proxies/CA once per session with ``trust_env`` off, so the ``trust_env = False``
  loop is the like-for-like ceiling and the headline ratio; the default Session's ratio is
  shown beside it;
- ours, streaming: the worker thread running while items are enqueued one at a time at a
  fixed rate (``--stream-rate``), waking it as the listener does; enqueue -> confirmed latency is
  each item's ``delivered_at - created_at`` in the outbox (set when the 2xx was recorded).

The stub is a bare ASGI app under uvicorn in a subprocess (see ``bench/common.py``); its CPU
per request gives its capacity, and its CPU over wall time shows how busy it was.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import harness
from bench.common import (
    LatencyRuns,
    cpu_seconds,
    fmt_ms,
    median,
    prepare_airflow_env,
    stub_server,
    table,
    temp_dir,
)

TOKEN = "bench-token"
TARGET = "xdeps_default"
N_ASSETS = 10
# Issue 11: >= 1,200 events/s and >= 0.9 of a raw keep-alive requests loop at the same concurrency.
TARGET_RATE = 1200.0
TARGET_RATIO = 0.9


@dataclass
class Variant:
    key: str
    label: str
    concurrency: int
    rates: list[float] = field(default_factory=list)  # events/s per repetition
    cpu_per_event: list[float] = field(default_factory=list)  # this process, all threads
    stub_cpu_per_req: list[float] = field(default_factory=list)
    stub_busy: list[float] = field(default_factory=list)
    latencies: list[list[float]] = field(default_factory=list)


SMOKE = {"reps": 1, "min_reps": 1, "items": 150, "stream_items": 20, "stream_rate": 200.0}


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__, max_seconds=185.0)
    parser.add_argument("-n", "--items", type=int, default=5000, help="items per drain / raw loop")
    parser.add_argument("--stream-items", type=int, default=500)
    parser.add_argument("--stream-rate", type=float, default=100.0, help="events/s enqueued while streaming")
    parser.add_argument("--concurrency", type=int, default=4, help="the worker's default: target_concurrency")
    args = harness.parse(parser, argv, SMOKE)
    with temp_dir("xdeps-bench-delivery-") as tmp:
        home = tmp / "airflow_home"
        home.mkdir()
        prepare_airflow_env(home)
        return run(args, tmp)


# -- payloads -------------------------------------------------------------------------------------


def make_items(n: int) -> list[Any]:
    """N outbox items exactly as the asset listener writes them (default route, real provenance)."""
    from astro_xdeps.forwarding.payload import SourceEvent, new_event_id
    from astro_xdeps.forwarding.plan import build_forwarding_plan, plan_items

    plan = build_forwarding_plan()
    if not plan.enabled:
        raise RuntimeError(f"forwarding is off in the benchmark environment: {plan.reason}")
    items = []
    for i in range(n):
        k = i % N_ASSETS
        event = SourceEvent(
            uri=f"s3://warehouse/table_{k}",
            name=f"table_{k}",
            extra={"rows": 1000 + i, "partition": "2026-01-01"},
            dag_id="producer",
            task_id=f"load_{k}",
            run_id="scheduled__2026-01-01T00:00:00+00:00",
            map_index=-1,
        )
        items.extend(plan_items(event, plan, event_id=new_event_id()))
    return items


def raw_bodies(items: list[Any], base_url: str) -> list[dict[str, Any]]:
    """The request bodies the client would send for ``items`` (asset ids looked up once)."""
    import requests

    ids: dict[str, int] = {}
    with requests.Session() as s:
        for uri in {item.payload["uri"] for item in items}:
            r = s.get(
                f"{base_url}/api/v2/assets",
                params={"uri_pattern": uri, "limit": 100, "offset": 0, "order_by": "id"},
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=10,
            )
            r.raise_for_status()
            ids[uri] = next(a["id"] for a in r.json()["assets"] if a["uri"] == uri)
    return [{"asset_id": ids[item.payload["uri"]], "extra": item.payload["extra"]} for item in items]


# -- the measured loops ---------------------------------------------------------------------------


def raw_loop(
    url: str, bodies: list[dict[str, Any]], threads: int, deadline: float, *, trust_env: bool = True
) -> tuple[float, list[float]]:
    """POST every body over keep-alive; return the elapsed seconds and each request's latency."""
    import requests

    session = requests.Session()
    session.trust_env = trust_env
    headers = {"Authorization": f"Bearer {TOKEN}"}
    endpoint = f"{url}/api/v2/assets/events"
    lat: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def post_all(part: list[dict[str, Any]], out: list[float]) -> None:
        try:
            for body in part:
                if time.monotonic() > deadline:
                    raise TimeoutError("raw loop ran out of time")
                t0 = time.perf_counter()
                r = session.post(endpoint, json=body, headers=headers, timeout=(5, 30))
                if r.status_code != 200:
                    raise RuntimeError(f"stub answered {r.status_code}")
                out.append(time.perf_counter() - t0)
        except BaseException as exc:
            errors.append(exc)

    start = time.perf_counter()
    if threads == 1:
        post_all(bodies, lat[0])
    else:
        workers = [
            threading.Thread(target=post_all, args=(bodies[k::threads], lat[k]), daemon=True)
            for k in range(threads)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join(max(0.0, deadline - time.monotonic()) + 5)
    elapsed = time.perf_counter() - start
    session.close()
    if errors:
        raise RuntimeError(f"raw loop failed: {errors[0]!r}")
    return elapsed, [x for part in lat for x in part]


def new_worker(outbox: Any, concurrency: int) -> Any:
    """The package's DeliveryWorker, its client created (Airflow's connection lookup: not timed)."""
    from astro_xdeps.outbox.worker import DeliveryWorker

    worker = DeliveryWorker(outbox, concurrency=concurrency)
    worker.clients.get(TARGET)
    return worker


def drain_loop(db: Path, items: list[Any], concurrency: int, timeout: float) -> float:
    """Enqueue ``items`` (not timed), then time ``DeliveryWorker.drain()`` until all are delivered."""
    from astro_xdeps.outbox.store import Outbox

    with Outbox.sqlite(db) as outbox:
        for i in range(0, len(items), 500):
            outbox.enqueue(items[i : i + 500])
        worker = new_worker(outbox, concurrency)
        try:
            start = time.perf_counter()
            stats = worker.drain(timeout=timeout)
            elapsed = time.perf_counter() - start
        finally:
            worker.stop(timeout=5)
            worker.clients.close()
        if stats.delivered != len(items):
            raise RuntimeError(f"drain delivered {stats.delivered} of {len(items)} ({stats})")
    return elapsed


def stream_loop(
    db: Path, items: list[Any], concurrency: int, rate: float, timeout: float
) -> tuple[float, list[float]]:
    """Worker thread running; enqueue one item at a time at ``rate``; latencies enqueue -> confirmed."""
    from astro_xdeps.outbox.store import Outbox

    with Outbox.sqlite(db) as outbox:
        worker = new_worker(outbox, concurrency)
        worker.start()
        try:
            start = time.perf_counter()
            deadline = time.monotonic() + timeout
            for i, item in enumerate(items):
                wait = start + i / rate - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                outbox.enqueue([item])
                worker.wake()  # what runtime.ensure_worker() does after the listener's enqueue
                if time.monotonic() > deadline:
                    raise RuntimeError("streaming enqueue ran out of time")
            while time.monotonic() < deadline:
                delivered = sum(r.count for r in outbox.status() if r.state == "delivered")
                if delivered >= len(items):
                    break
                time.sleep(0.02)
            elapsed = time.perf_counter() - start
        finally:
            worker.stop(timeout=5)
            worker.clients.close()
        done = outbox.list_items(state="delivered", limit=len(items) + 1)
        if len(done) != len(items):
            raise RuntimeError(f"streaming delivered {len(done)} of {len(items)}")
        return elapsed, [it.delivered_at - it.created_at for it in done]


# -- the run --------------------------------------------------------------------------------------


def run(args: argparse.Namespace, tmp: Path) -> int:
    t_start = time.monotonic()
    harness.quiet_package_logs()
    harness.header("Delivery benchmark: outbox -> DeliveryWorker -> stub downstream", args)

    with stub_server(0) as stub:
        os.environ["DEPLOYMENT_URL"] = stub.url
        os.environ["API_TOKEN"] = TOKEN
        os.environ["AIRFLOW__ASTRO_XDEPS__FORWARD_ASSETS"] = "true"
        from astro_xdeps.hooks.deployment import DeploymentHook

        # The first connection lookup imports and initialises Airflow: not timed.
        DeploymentHook(TARGET, retries=0).get_conn().close()

        items = make_items(args.items)
        stream_items = make_items(args.stream_items)
        bodies = raw_bodies(items, stub.url)
        c = args.concurrency
        variants = {
            "ours_c": Variant("ours_c", f"ours: DeliveryWorker.drain(), concurrency {c} (default)", c),
            "raw_c": Variant("raw_c", f"raw: requests, {c} threads, 1 keep-alive Session (default)", c),
            "raw_c_noenv": Variant(
                "raw_c_noenv", f"raw: requests, {c} threads, 1 keep-alive Session, trust_env=False", c
            ),
            "ours_1": Variant("ours_1", "ours: DeliveryWorker.drain(), concurrency 1", 1),
            "raw_1": Variant("raw_1", "raw: requests, sequential, 1 keep-alive Session", 1),
            "stream": Variant(
                "stream", f"ours: worker thread, enqueue at {args.stream_rate:g}/s, concurrency {c}", c
            ),
        }
        order = list(variants)
        budget = 120.0
        for rep in harness.repetitions(args, t_start):
            rotated = order[rep % len(order) :] + order[: rep % len(order)]
            for key in rotated:
                v = variants[key]
                db = tmp / f"{key}-{rep}.db"
                s0, c0 = stub.stats(), cpu_seconds()
                w0 = time.perf_counter()
                if key.startswith("raw"):
                    elapsed, lat = raw_loop(
                        stub.url,
                        bodies,
                        v.concurrency,
                        time.monotonic() + budget,
                        trust_env=not key.endswith("_noenv"),
                    )
                    v.latencies.append(lat)
                    n = len(bodies)
                elif key == "stream":
                    elapsed, lat = stream_loop(db, stream_items, c, args.stream_rate, budget)
                    v.latencies.append(lat)
                    n = len(stream_items)
                else:
                    elapsed = drain_loop(db, items, v.concurrency, budget)
                    n = len(items)
                wall = time.perf_counter() - w0
                s1, c1 = stub.stats(), cpu_seconds()
                v.rates.append(n / elapsed)
                v.cpu_per_event.append((c1 - c0) / n)
                served = s1["requests"] - s0["requests"]
                v.stub_cpu_per_req.append((s1["cpu"] - s0["cpu"]) / max(1, served))
                v.stub_busy.append((s1["cpu"] - s0["cpu"]) / wall)
                print(f"  {v.label}: {n / elapsed:,.0f} events/s", flush=True)
                if key != "stream" and s1["events"] - s0["events"] != n:
                    raise RuntimeError(f"{v.label}: the stub received {s1['events'] - s0['events']} of {n}")
                with contextlib.suppress(OSError):
                    db.unlink()

        verdicts, figures = report(variants, args)
    return harness.finish(args, t_start, verdicts, figures)


def report(
    variants: dict[str, Variant], args: argparse.Namespace
) -> tuple[list[harness.Verdict], dict[str, float]]:
    """Print the table; return the verdicts and the headline figures (events/s, latencies)."""

    def rate(key: str) -> float:
        return median(variants[key].rates)

    rows = []
    baseline_of = {"ours_c": "raw_c_noenv", "ours_1": "raw_1"}
    for key in ("ours_c", "raw_c_noenv", "raw_c", "ours_1", "raw_1", "stream"):
        v = variants[key]
        lo, hi = min(v.rates), max(v.rates)
        ratio = ""
        if key in baseline_of:
            base = variants[baseline_of[key]]
            ratio = f"{rate(key) / rate(base.key):.2f} of raw c={base.concurrency}"
            if key == "ours_c":
                ratio = (
                    f"{rate(key) / rate('raw_c_noenv'):.2f} of raw c={base.concurrency} trust_env=False; "
                    f"{rate(key) / rate('raw_c'):.2f} of raw c={base.concurrency} default; "
                    f"{rate(key) / rate('raw_1'):.2f} of raw c=1"
                )
        lat = LatencyRuns(v.latencies)
        p50 = fmt_ms(lat.p(50)) if v.latencies else ""
        p99 = fmt_ms(lat.p(99)) if v.latencies else ""
        rows.append(
            [
                v.label,
                f"{rate(key):,.0f}" if key != "stream" else f"({rate(key):,.0f})",
                f"{lo:,.0f}-{hi:,.0f}",
                ratio,
                p50,
                p99,
                f"{median(v.cpu_per_event) * 1e6:,.0f}",
                f"{median(v.stub_busy) * 100:.0f}%",
            ]
        )
    print()
    print(
        f"{len(variants['raw_1'].rates)} repetitions, medians; N = {args.items} per drain/raw loop, "
        f"{args.stream_items} streamed at {args.stream_rate:g}/s. "
        "Latency: raw = one request; streaming = enqueue -> confirmed (delivered_at - created_at)."
    )
    print()
    print(
        table(
            [
                "variant",
                "events/s",
                "range over reps",
                "ratio (same run)",
                "latency p50 ms",
                "latency p99 ms",
                "client CPU us/event",
                "stub busy",
            ],
            rows,
        )
    )
    stub_cpu = median([x for v in variants.values() for x in v.stub_cpu_per_req])
    print(
        f"\nStub: {stub_cpu * 1e6:.0f} us of CPU per request -> about {1 / stub_cpu:,.0f} requests/s on one core; "
        "'stub busy' is its CPU time over the variant's wall time (100% = one core saturated)."
    )
    c = args.concurrency
    headline, default = rate("ours_c") / rate("raw_c_noenv"), rate("ours_c") / rate("raw_c")
    verdicts: list[harness.Verdict] = [
        (
            f"delivery >= {TARGET_RATE:,.0f} events/s (default concurrency {c})",
            rate("ours_c") >= TARGET_RATE,
            f"{rate('ours_c'):,.0f} events/s",
        ),
        (
            f"delivery >= {TARGET_RATIO} of the raw keep-alive loop at concurrency {c} "
            "(headline: raw Session with trust_env=False, like ours)",
            headline >= TARGET_RATIO,
            f"{headline:.2f}",
        ),
        (
            f"delivery >= {TARGET_RATIO} of the raw loop at concurrency {c}, raw = default Session "
            "(trust_env on: environment looked up per request)",
            default >= TARGET_RATIO,
            f"{default:.2f}",
        ),
        (
            "(context) ours / raw, both sequential (concurrency 1, default Session)",
            None,
            f"{rate('ours_1') / rate('raw_1'):.2f}",
        ),
        (
            f"(context) the raw loop's own rate (c=1 / c={c} default / c={c} trust_env=False)",
            None,
            f"{rate('raw_1'):,.0f} / {rate('raw_c'):,.0f} / {rate('raw_c_noenv'):,.0f} events/s",
        ),
    ]
    figures = {f"{v.label} events/s": rate(k) for k, v in variants.items()}
    figures["streaming latency p50"] = LatencyRuns(variants["stream"].latencies).p(50)
    return verdicts, figures


if __name__ == "__main__":
    sys.exit(main())

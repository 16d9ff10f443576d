"""Delivery throughput and latency: outbox -> DeliveryWorker -> a local stub downstream (2xx).

Run: ``.venv/bin/python -m bench.delivery`` (``--help`` for options; ``--profile`` adds a
per-event breakdown and a cProfile of the worker's per-item path).

Each repetition runs, side by side (order rotated from one repetition to the next):

- ours, drain: ``DeliveryWorker.drain()`` of N pre-enqueued items (the listener's real payloads,
  10 assets) with the default concurrency (``target_concurrency`` = 4) and with concurrency 1;
- raw, the ceiling of this HTTP stack: the same N request bodies the client sends
  (``{"asset_id": ..., "extra": ...}`` with the same bearer header) POSTed with ``requests``
  over keep-alive — one Session sequentially, and 4 threads sharing one Session (as the
  worker's client does) for the same concurrency as the worker;
- ours, streaming: the worker thread running while items are enqueued one at a time at a
  fixed rate (``--stream-rate``), waking it as the listener does; enqueue -> confirmed latency is
  each item's ``delivered_at - created_at`` in the outbox (set when the 2xx was recorded).

The stub is a bare ASGI app under uvicorn in a subprocess (see ``bench/common.py``); its CPU
per request gives its capacity, and its CPU over wall time shows how busy it was.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    LatencyRuns,
    batched_marks_worker_class,
    fmt_ms,
    machine_notes,
    median,
    prepare_airflow_env,
    print_notes,
    stub_server,
    table,
    temp_dir,
)

TOKEN = "bench-token"
TARGET = "xdeps_default"
N_ASSETS = 10
TARGET_RATE = 1000.0
TARGET_RATIO = 0.8


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("-n", "--items", type=int, default=5000, help="items per drain / raw loop")
    parser.add_argument("--stream-items", type=int, default=500)
    parser.add_argument("--stream-rate", type=float, default=100.0, help="events/s enqueued while streaming")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=185.0,
        help="stop when the next repetition would end later (after --min-reps)",
    )
    parser.add_argument("--min-reps", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4, help="the worker's default: target_concurrency")
    parser.add_argument("--profile", action="store_true", help="also profile, and measure what-ifs")
    parser.add_argument("--profile-only", action="store_true", help="only the profiles and what-ifs")
    args = parser.parse_args(argv)
    with temp_dir("xdeps-bench-delivery-") as tmp:
        home = tmp / "airflow_home"
        home.mkdir()
        prepare_airflow_env(home)
        return run(args, tmp)


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# -- payloads -------------------------------------------------------------------------------------


def make_items(n: int) -> list[Any]:
    """N outbox items exactly as the asset listener writes them (default route, real provenance)."""
    from astro_xdeps import runtime
    from astro_xdeps.forwarding.payload import SourceEvent, new_event_id
    from astro_xdeps.listeners.assets import plan_items

    plan = runtime.build_forwarding_plan()
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


def new_worker(outbox: Any, concurrency: int, *, batched: bool = False, trust_env: bool = True) -> Any:
    """The package's DeliveryWorker; ``batched``/``trust_env=False`` are what-ifs (see --profile)."""
    from astro_xdeps.outbox.worker import DeliveryWorker

    cls = batched_marks_worker_class(outbox) if batched else DeliveryWorker
    worker = cls(outbox, concurrency=concurrency)
    client = worker.clients.get(TARGET)  # Airflow's connection lookup: once per process, not per event
    if not trust_env:  # the package's own session already resolves the environment once
        client.transport.session.trust_env = False
    return worker


def drain_loop(db: Path, items: list[Any], concurrency: int, timeout: float, **what_if: bool) -> float:
    """Enqueue ``items`` (not timed), then time ``DeliveryWorker.drain()`` until all are delivered."""
    from astro_xdeps.outbox.store import Outbox

    with Outbox.sqlite(db) as outbox:
        for i in range(0, len(items), 500):
            outbox.enqueue(items[i : i + 500])
        worker = new_worker(outbox, concurrency, **what_if)
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
    pkg = logging.getLogger("astro_xdeps")
    pkg.handlers[:] = [logging.NullHandler()]
    pkg.propagate = False

    notes = machine_notes()
    print("Delivery benchmark: outbox -> DeliveryWorker -> stub downstream\n")
    print_notes(notes)

    with stub_server(0) as stub:
        os.environ["DEPLOYMENT_URL"] = stub.url
        os.environ["API_TOKEN"] = TOKEN
        os.environ["AIRFLOW__ASTRO_XDEPS__FORWARD_ASSETS"] = "true"
        from astro_xdeps.outbox.sending import _client_from_connection

        _client_from_connection(TARGET)  # first lookup imports and initialises Airflow: not timed

        items = make_items(args.items)
        if args.profile_only:
            profile(tmp, items[:2000], stub.url, args.concurrency)
            return 0
        stream_items = make_items(args.stream_items)
        bodies = raw_bodies(items, stub.url)
        c = args.concurrency
        variants = {
            "ours_c": Variant("ours_c", f"ours: DeliveryWorker.drain(), concurrency {c} (default)", c),
            "raw_c": Variant("raw_c", f"raw: requests, {c} threads, 1 keep-alive Session", c),
            "ours_1": Variant("ours_1", "ours: DeliveryWorker.drain(), concurrency 1", 1),
            "raw_1": Variant("raw_1", "raw: requests, sequential, 1 keep-alive Session", 1),
            "stream": Variant(
                "stream", f"ours: worker thread, enqueue at {args.stream_rate:g}/s, concurrency {c}", c
            ),
        }
        order = list(variants)
        budget = 120.0
        for rep in range(args.reps):
            spent = time.monotonic() - t_start
            if rep >= args.min_reps and spent + spent / rep > args.max_seconds:
                print(f"\nstopping after {rep} repetitions: the next would end past {args.max_seconds:g} s")
                break
            print(f"\nrepetition {rep + 1}/{args.reps} ...", flush=True)
            rotated = order[rep % len(order) :] + order[: rep % len(order)]
            for key in rotated:
                v = variants[key]
                db = tmp / f"{key}-{rep}.db"
                s0, c0 = stub.stats(), cpu_seconds()
                w0 = time.perf_counter()
                if key.startswith("raw"):
                    elapsed, lat = raw_loop(stub.url, bodies, v.concurrency, time.monotonic() + budget)
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

        report(variants, args, time.monotonic() - t_start)
        if args.profile:
            profile(tmp, items[:2000], stub.url, args.concurrency)
    return 0


def report(variants: dict[str, Variant], args: argparse.Namespace, elapsed: float) -> None:
    def rate(key: str) -> float:
        return median(variants[key].rates)

    rows = []
    baseline_of = {"ours_c": "raw_c", "ours_1": "raw_1"}
    for key in ("ours_c", "raw_c", "ours_1", "raw_1", "stream"):
        v = variants[key]
        lo, hi = min(v.rates), max(v.rates)
        ratio = ""
        if key in baseline_of:
            base = variants[baseline_of[key]]
            ratio = f"{rate(key) / rate(base.key):.2f} of raw c={base.concurrency}"
            ratio += f"; {rate(key) / rate('raw_1'):.2f} of raw c=1" if key == "ours_c" else ""
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
    print("\nTargets")
    verdicts = [
        (
            f"ours >= {TARGET_RATE:,.0f} events/s (default concurrency)",
            rate("ours_c") >= TARGET_RATE,
            f"{rate('ours_c'):,.0f} events/s",
        ),
        (
            f"ours >= {TARGET_RATIO} of the raw loop at the same concurrency ({args.concurrency})",
            rate("ours_c") / rate("raw_c") >= TARGET_RATIO,
            f"{rate('ours_c') / rate('raw_c'):.2f}",
        ),
        (
            f"ours >= {TARGET_RATIO} of the raw loop, both sequential (concurrency 1)",
            rate("ours_1") / rate("raw_1") >= TARGET_RATIO,
            f"{rate('ours_1') / rate('raw_1'):.2f}",
        ),
        (
            "(context) the raw loop itself reaches 1,000 events/s (c=1 / c=4)",
            max(rate("raw_1"), rate("raw_c")) >= TARGET_RATE,
            f"{rate('raw_1'):,.0f} / {rate('raw_c'):,.0f} events/s",
        ),
    ]
    for name, ok, value in verdicts:
        print(f"  [{'met' if ok else 'MISSED'}] {name}: {value}")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nTotal time {elapsed:.0f} s; load average (1/5/15 min) at the end: {load}.")


# -- profiling ------------------------------------------------------------------------------------


def profile(tmp: Path, items: list[Any], url: str, concurrency: int) -> None:
    """Where a delivered event's CPU goes, layer by layer, all in this one thread.

    Each row runs the same events through one more layer of the worker's path; CPU time
    (``time.thread_time``) rather than wall time, so other load on the machine does not count.
    """
    import cProfile
    import io
    import pstats

    import requests

    from astro_xdeps.outbox.store import Outbox

    n = len(items)
    bodies = raw_bodies(items, url)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    endpoint = f"{url}/api/v2/assets/events"

    def cpu_per_event(fn: Callable[[int], Any], count: int = n) -> float:
        fn(0)  # warm
        t0 = time.thread_time()
        for i in range(1, count):
            fn(i)
        return (time.thread_time() - t0) / (count - 1)

    rows: list[list[str]] = []

    def row(label: str, seconds: float, base: float | None) -> None:
        extra = "" if base is None else f"{(seconds - base) * 1e6:+,.0f}"
        rows.append([label, f"{seconds * 1e6:,.0f}", extra])

    session = requests.Session()
    raw = cpu_per_event(lambda i: session.post(endpoint, json=bodies[i], headers=headers, timeout=(5, 30)))
    row("raw: Session.post(json=body)", raw, None)
    session.trust_env = False
    no_env = cpu_per_event(lambda i: session.post(endpoint, json=bodies[i], headers=headers, timeout=(5, 30)))
    row("raw, Session.trust_env = False (no proxy/netrc lookup per request)", no_env, raw)
    session.close()

    with Outbox.sqlite(tmp / "profile-steps.db") as outbox:
        outbox.enqueue(items)
        worker = new_worker(outbox, 1)
        client = worker.clients.get(TARGET)
        transport = client.transport
        t_req = cpu_per_event(
            lambda i: transport.request("POST", "/api/v2/assets/events", json=bodies[i], retries=0).json()
        )
        row("Transport.request(POST).json()  (auth headers, tenacity, errors)", t_req, raw)
        t_client = cpu_per_event(
            lambda i: client.create_asset_event(
                items[i].payload["uri"],
                items[i].payload["extra"],
                dedupe=("xdeps_event_id", items[i].payload["event_id"]),
            )
        )
        row("DeploymentClient.create_asset_event  (+ 2nd tenacity loop, asset cache)", t_client, t_req)
        claimed: list[Any] = []
        t_claim = (
            cpu_per_event(
                lambda i: claimed.extend(
                    outbox.claim(worker.owner, limit=worker.batch_size, lease_seconds=600)
                ),
                count=n // worker.batch_size,
            )
            / worker.batch_size
        )
        row(f"Outbox.claim, per item (batches of {worker.batch_size})", t_claim, None)
        lock = threading.Lock()
        t_one = cpu_per_event(lambda i: worker._deliver_one(claimed[i], set(), lock), count=len(claimed))
        row("DeliveryWorker._deliver_one  (send + mark_delivered)", t_one, t_client)
        worker.stop()
    rows.append(
        [
            "ours per event: claim + _deliver_one",
            f"{(t_claim + t_one) * 1e6:,.0f}",
            f"{(t_claim + t_one) / raw:.2f}x raw",
        ]
    )
    print(
        f"\nProfile 1: CPU per event by layer, one thread, {n} events (us; + = over the row it builds on)\n"
    )
    print(table(["layer", "CPU us/event", "added"], rows))

    # cProfile of the worker's per-item path (claim + _deliver_one), in this thread.
    with Outbox.sqlite(tmp / "profile-cprofile.db") as outbox:
        outbox.enqueue(items)
        worker = new_worker(outbox, 1)
        lock = threading.Lock()
        prof = cProfile.Profile()
        prof.enable()
        while batch := outbox.claim(worker.owner, limit=worker.batch_size, lease_seconds=600):
            for item in batch:
                worker._deliver_one(item, set(), lock)
        prof.disable()
        worker.stop()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(20)
    print(f"\nProfile 2: cProfile of claim + _deliver_one, {n} events, own time (top 20)\n")
    print("\n".join(out.getvalue().splitlines()[4:]))
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(
        r"worker.py.*(_deliver_one|_send)|api.py.*create_asset_event|http.py.*request|"
        r"store.py.*(mark_delivered|claim|_transaction)|sessions.py:\d+\((request|merge_environment_settings)\)|"
        r"connectionpool.py:\d+\(urlopen\)|tenacity/__init__.py:\d+\(__call__\)"
    )
    print("Profile 3: cProfile, cumulative time of the main frames\n")
    print("\n".join(out.getvalue().splitlines()[4:]))

    what_ifs(tmp, items, url, concurrency, reps=3)


def what_ifs(tmp: Path, items: list[Any], url: str, concurrency: int, reps: int) -> None:
    """Drain throughput if the package changed (simulated in bench code), side by side with raw."""
    bodies = raw_bodies(items, url)
    n = len(items)
    runs: dict[str, list[float]] = {}
    labels = {
        "ours": "ours, as is",
        "batched": "ours + one write transaction per batch for its outcomes",
        "batched+noenv": "ours + that + Session.trust_env = False",
        "raw": "raw, default Session",
        "raw+noenv": "raw, Session.trust_env = False",
    }
    for rep in range(reps):
        for key in labels:
            deadline = time.monotonic() + 120
            if key.startswith("raw"):
                elapsed, _ = raw_loop(url, bodies, concurrency, deadline, trust_env=key == "raw")
            else:
                elapsed = drain_loop(
                    tmp / f"whatif-{key}-{rep}.db",
                    items,
                    concurrency,
                    120,
                    batched=key != "ours",
                    trust_env=key != "batched+noenv",
                )
            runs.setdefault(key, []).append(n / elapsed)
    raw = median(runs["raw"])
    rows = [[labels[k], f"{median(v):,.0f}", f"{median(v) / raw:.2f}"] for k, v in runs.items()]
    print(f"\nProfile 4: what-ifs, drain of {n} items at concurrency {concurrency}, median of {reps}\n")
    print(table(["variant", "events/s", "ratio to raw, default Session"], rows))


if __name__ == "__main__":
    sys.exit(main())

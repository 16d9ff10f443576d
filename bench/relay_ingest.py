"""Relay ingest: signed webhooks per second and latency, vs a bare FastAPI endpoint.

Run: ``.venv/bin/python -m bench.relay_ingest`` (``--help`` for options; needs ``wrk``:
``apt-get update && apt-get install -y wrk``). ``--profile`` adds a breakdown of one request's CPU
(layer by layer, and a cProfile of ``RelayEngine.ingest``); ``--what-if`` adds relays patched *in
the benchmark's server process only* to measure what a package change would give: ingest under
one process lock, secrets resolved without a thread hop, the outbox INSERT via the sqlite3 driver,
and all of these together (``.venv/bin/python -m bench.relay_ingest --what-if --profile --reps 3
--seconds 5`` runs in about 4.5 minutes).

Two servers, each uvicorn with one worker in its own subprocess on 127.0.0.1 with the settings
``astro-xdeps relay serve`` uses (``uvicorn.run`` defaults: uvloop + httptools when installed,
``log_level="warning"``):

- **relay**: ``create_app`` over a ``RelayRuntime`` whose engine writes a fresh SQLite outbox;
  the rules file has one source (Standard Webhooks, secret from an env var) and one one-to-one
  rule (``dag_run.failed`` of ``bench_*`` -> trigger a DAG) that every posted event matches.
  No delivery worker runs (ingest only: verify, parse, evaluate, enqueue, answer 202).
- **bare**: a FastAPI ``POST /events/{source}`` that reads the body and answers 202.

Load: ``wrk`` (C, one thread, N keep-alive connections, fixed duration; it takes ~a tenth of a
core here). Every request is a valid Standard Webhooks request with its own ``webhook-id``, signed
beforehand in this process (the timestamp tolerance is 300 s; each file is used at once) and
replayed in order by a Lua ``request()``; the bare server gets the same requests. Repetitions
alternate the two servers; the table shows medians over repetitions of wrk's req/s and latency
p50/p99, the ratio relay/bare, and each server's CPU per request (from ``/proc``).

Correctness under load: after the runs, the relay's 202 count (its ``/metrics``) must equal the
outbox's rows, with one row per distinct webhook-id; then 500 already accepted requests are
posted again (re-signed, same ids, concurrently) and must answer 202 with ``new_actions: 0``
and leave the outbox unchanged.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.requests import Request  # module level: FastAPI resolves the string annotation here

from bench.common import (
    LOCALHOST,
    REPO,
    fmt_ratio,
    machine_notes,
    median,
    print_notes,
    readline_with_timeout,
    table,
    temp_dir,
)

SECRET_ENV = "XDEPS_BENCH_RELAY_SECRET"
SECRET = "whsec_" + base64.b64encode(b"bench-relay-ingest-secret-32-byt").decode()
SOURCE = "bench"
TARGET_RATE = 1500.0
TARGET_RATIO = 0.5
RULES = f"""\
sources:
  - name: {SOURCE}
    auth: standard-webhooks
    secrets_env: [{SECRET_ENV}]
    deployment: bench-upstream
rules:
  - name: recover-bench
    when: {{type: dag_run.failed, dag_id: "bench_*"}}
    then:
      - trigger_dag:
          target: xdeps_downstream
          dag_id: recovery_dag
          conf: {{failed_dag: "{{dag_id}}", failed_run: "{{run_id}}"}}
          note: "{{dag_id}} failed in {{deployment}}"
"""
WRK_SCRIPT = r"""
-- Replays pre-signed requests from the file in XDEPS_WRK_REQUESTS, in order, one thread.
local reqs = {}
local n = 0
local i = 0
local wrapped = 0
local path = os.getenv("XDEPS_WRK_PATH")

function init(args)
  for line in io.lines(os.getenv("XDEPS_WRK_REQUESTS")) do
    local id, ts, sig, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
    n = n + 1
    reqs[n] = wrk.format("POST", path, {
      ["Content-Type"] = "application/json",
      ["webhook-id"] = id,
      ["webhook-timestamp"] = ts,
      ["webhook-signature"] = sig,
    }, body)
  end
end

function request()
  i = i + 1
  if i > n then
    i = 1
    wrapped = wrapped + 1
  end
  return reqs[i]
end

function done(summary, latency, requests)
  io.write(string.format(
    "XDEPS_JSON {\"requests\": %d, \"duration_us\": %d, \"p50_us\": %d, \"p90_us\": %d, \"p99_us\": %d, " ..
    "\"max_us\": %d, \"connect\": %d, \"read\": %d, \"write\": %d, \"status\": %d, \"timeout\": %d}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout))
end
"""


# -- the servers (child processes) ----------------------------------------------------------------


def relay_app(
    outbox_path: str, rules_path: str, *, locked: bool = False, one_hop: bool = False, lean: bool = False
) -> Any:
    from astro_xdeps.outbox.store import Outbox
    from astro_xdeps.relay.app import RelayRuntime, create_app
    from astro_xdeps.relay.config import load_config
    from astro_xdeps.relay.engine import RelayEngine

    config = load_config(rules_path)
    engine = RelayEngine(config, Outbox.sqlite(outbox_path))
    if locked:
        # What-if (not the package): one process-wide lock around ingest, so the threadpool's
        # writers queue on a Python lock (woken at once) instead of in SQLite's busy handler,
        # which sleeps 1, 2, 5, 10 ... ms between tries.
        lock = threading.Lock()
        ingest = engine.ingest

        def locked_ingest(event: Any, now: float | None = None) -> Any:
            with lock:
                return ingest(event, now)

        engine.ingest = locked_ingest  # type: ignore[method-assign]
    if lean:
        one_hop = True
        engine.outbox.enqueue = driver_enqueue(outbox_path)  # type: ignore[method-assign]
    if one_hop:
        # What-if (not the package): resolve env-var secrets inline instead of in the threadpool,
        # leaving one thread hop per request (the outbox write).
        import astro_xdeps.relay.app as app_module

        pooled = app_module.run_in_threadpool

        async def run_in_threadpool(fn: Any, *a: Any, **kw: Any) -> Any:
            if isinstance(fn, app_module.SecretResolver):
                return fn(*a, **kw)
            return await pooled(fn, *a, **kw)

        app_module.run_in_threadpool = run_in_threadpool  # type: ignore[assignment]
    runtime = RelayRuntime(engine=engine, on_enqueue=None)
    return create_app(lambda: runtime, open_monitoring=True)  # loopback, as `relay serve` there


def driver_enqueue(outbox_path: str) -> Any:
    """What-if (not the package): ``Outbox.enqueue`` for one SQLite file written with the sqlite3
    driver directly (same table, columns, conflict rule and transaction per call), one connection
    per thread. Shows what the SQLAlchemy layers cost on the relay's hot path."""
    from astro_xdeps.outbox.models import PENDING, EnqueueResult

    local = threading.local()
    insert = (
        "INSERT INTO xdeps_outbox (kind, target, payload, idempotency_key, state, attempts, created_at,"
        " next_attempt_at, updated_at) VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?)"
        " ON CONFLICT (target, kind, idempotency_key) DO NOTHING RETURNING id"
    )
    find = "SELECT id FROM xdeps_outbox WHERE target = ? AND kind = ? AND idempotency_key = ?"

    def enqueue(items: list[Any]) -> list[Any]:
        con = getattr(local, "con", None)
        if con is None:
            con = local.con = sqlite3.connect(outbox_path, isolation_level=None, check_same_thread=False)
            con.execute("PRAGMA busy_timeout = 10000")
            con.execute("PRAGMA synchronous = NORMAL")
        now = time.time()
        out = []
        con.execute("BEGIN IMMEDIATE")
        try:
            for it in items:
                row = con.execute(
                    insert,
                    (it.kind, it.target, json.dumps(it.payload), it.idempotency_key, PENDING, now, now, now),
                ).fetchone()
                if row is None:
                    row = con.execute(find, (it.target, it.kind, it.idempotency_key)).fetchone()
                    out.append(EnqueueResult(id=row[0], created=False))
                else:
                    out.append(EnqueueResult(id=row[0], created=True))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return out

    return enqueue


def bare_app() -> Any:
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/events/{source_name}", status_code=202)
    async def post_event(source_name: str, request: Request):
        await request.body()
        return JSONResponse({"accepted": True}, status_code=202)

    return app


def serve(kind: str, outbox_path: str | None, rules_path: str | None) -> None:
    """Child: bind 127.0.0.1:0, print the port, serve until the parent closes stdin."""
    import logging

    import uvicorn

    logging.getLogger("astro_xdeps").setLevel(logging.WARNING)
    app = (
        bare_app()
        if kind == "bare"
        else relay_app(
            outbox_path or "relay-outbox.db",
            rules_path or "rules.yaml",
            locked=kind in ("relay_locked", "relay_lean_locked"),
            one_hop=kind == "relay_one_hop",
            lean=kind in ("relay_lean", "relay_lean_locked"),
        )
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOCALHOST, 0))
    # What `astro-xdeps relay serve` runs: uvicorn.run(app, host=..., port=..., log_level="warning").
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))

    def exit_with_parent() -> None:
        sys.stdin.read()
        server.should_exit = True
        time.sleep(3)
        os._exit(0)

    threading.Thread(target=exit_with_parent, daemon=True).start()
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    server.run(sockets=[sock])


@dataclass
class Server:
    kind: str
    proc: subprocess.Popen[str]
    port: int

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def cpu_seconds(self) -> float:
        """User + system CPU of the server process (all its threads), from /proc."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def server(kind: str, tmp: Path) -> Iterator[Server]:
    env = dict(os.environ, **{SECRET_ENV: SECRET})
    cmd = [sys.executable, "-m", "bench.relay_ingest", "--serve", kind]
    if kind != "bare":
        (tmp / "rules.yaml").write_text(RULES)
        cmd += ["--outbox", str(tmp / f"{kind}-outbox.db"), "--rules", str(tmp / "rules.yaml")]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = readline_with_timeout(proc, 60)
        if not line.startswith("PORT "):
            raise RuntimeError(f"the {kind} server did not start (said {line!r}, exit {proc.poll()})")
        srv = Server(kind, proc, int(line.split()[1]))
        wait_up(srv)
        yield srv
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()


def wait_up(srv: Server, timeout: float = 30) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    path = "/docs-none" if srv.kind == "bare" else "/health"
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            r = httpx.get(srv.url + path, timeout=2)
            if r.status_code in (200, 404):
                return
        time.sleep(0.1)
    raise RuntimeError(f"the {srv.kind} server on {srv.url} does not answer")


# -- requests and load ----------------------------------------------------------------------------


def event_body(prefix: str, i: int) -> bytes:
    return json.dumps(
        {
            "type": "dag_run.failed",
            "dag_id": f"bench_{i % 50}",
            "run_id": f"scheduled__2026-01-01T00:00:00+00:00_{prefix}_{i}",
            "occurred_at": "2026-01-01T00:05:00Z",
            "message": "bench_dag failed: task load exited with 1",
        },
        separators=(",", ":"),
    ).encode()


def write_requests(path: Path, prefix: str, n: int) -> None:
    """``n`` signed requests, one per line: webhook-id, timestamp, signature, body (tab-separated)."""
    from astro_xdeps.relay.signing import webhook_headers

    now = time.time()
    with path.open("w") as f:
        for i in range(n):
            body = event_body(prefix, i)
            h = webhook_headers(body, [SECRET], msg_id=f"msg_{prefix}_{i}", timestamp=now)
            f.write(
                f"{h['webhook-id']}\t{h['webhook-timestamp']}\t{h['webhook-signature']}\t{body.decode()}\n"
            )


def run_wrk(url: str, script: Path, requests_file: Path, connections: int, seconds: float) -> dict[str, Any]:
    env = dict(os.environ, XDEPS_WRK_REQUESTS=str(requests_file), XDEPS_WRK_PATH=f"/events/{SOURCE}")
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s", "-s", str(script), url]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60)
    line = next((x for x in r.stdout.splitlines() if x.startswith("XDEPS_JSON ")), None)
    if r.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    out = json.loads(line.split(" ", 1)[1])
    out["rate"] = out["requests"] / (out["duration_us"] / 1e6)
    return out


_METRIC = re.compile(r'^xdeps_relay_requests_total\{source="([^"]*)",status="(\d+)"\} (\d+)$', re.M)


def relay_counts(srv: Server) -> Counter[int]:
    import httpx

    text = httpx.get(srv.url + "/metrics", timeout=30).text
    return Counter({int(m.group(2)): int(m.group(3)) for m in _METRIC.finditer(text) if m.group(1) == SOURCE})


def outbox_rows(db: Path) -> tuple[int, int]:
    with contextlib.closing(sqlite3.connect(db)) as c:
        rows, keys = c.execute(
            "SELECT count(*), count(DISTINCT idempotency_key) FROM xdeps_outbox"
        ).fetchone()
    return int(rows), int(keys)


def replay(srv: Server, requests_file: Path, n: int, threads: int = 8) -> Counter[str]:
    """Post the first ``n`` requests of a file again, re-signed now (same ids and bodies)."""
    import httpx

    from astro_xdeps.relay.signing import webhook_headers

    # Line 0 is skipped: wrk calls request() once at start-up to inspect it and never sends that one.
    lines = requests_file.read_text().splitlines()[1 : n + 1]
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    with httpx.Client(base_url=srv.url, timeout=30) as client:

        def one(line: str) -> None:
            msg_id, _, _, body = line.split("\t", 3)
            h = webhook_headers(body.encode(), [SECRET], msg_id=msg_id)
            r = client.post(
                f"/events/{SOURCE}", content=body.encode(), headers={**h, "content-type": "application/json"}
            )
            key = f"{r.status_code} new_actions={r.json().get('new_actions')}"
            with lock:
                outcomes[key] += 1

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, lines))
    return outcomes


# -- the run --------------------------------------------------------------------------------------


@dataclass
class Row:
    kind: str
    connections: int
    runs: list[dict[str, Any]] = field(default_factory=list)

    def med(self, key: str) -> float:
        return median([r[key] for r in self.runs])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=6.0, help="wrk duration per run")
    parser.add_argument("--connections", default="4,16", help="comma-separated wrk connection counts")
    parser.add_argument(
        "--max-rate", type=float, default=8000.0, help="requests signed per run = max-rate x seconds"
    )
    parser.add_argument("--max-seconds", type=float, default=240.0, help="start no repetition after this")
    parser.add_argument("--min-reps", type=int, default=3)
    parser.add_argument("--replay", type=int, default=500, help="accepted requests posted again at the end")
    parser.add_argument("--profile", action="store_true", help="also break down one request's CPU")
    parser.add_argument(
        "--what-if",
        action="store_true",
        help="also run four what-if relays (not the package): ingest under one process lock; secrets "
        "resolved inline (one thread hop per request instead of two); that plus the outbox INSERT "
        "written with the sqlite3 driver instead of SQLAlchemy; and all three together",
    )
    parser.add_argument(
        "--serve",
        choices=("relay", "bare", "relay_locked", "relay_one_hop", "relay_lean", "relay_lean_locked"),
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--outbox", help=argparse.SUPPRESS)
    parser.add_argument("--rules", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.outbox, args.rules)
        return 0
    if shutil.which("wrk") is None:
        sys.stderr.write("wrk is not installed: apt-get update && apt-get install -y wrk\n")
        return 2
    with temp_dir("xdeps-bench-relay-") as tmp:
        return run(args, tmp)


LABELS = {
    "relay": "relay (signed webhook -> outbox)",
    "bare": "bare FastAPI 202",
    "relay_locked": "what-if: relay, ingest under one process lock",
    "relay_one_hop": "what-if: relay, secrets resolved inline (1 thread hop)",
    "relay_lean": "what-if: 1 thread hop + enqueue via the sqlite3 driver",
    "relay_lean_locked": "what-if: 1 hop + sqlite3 driver + process lock",
}


def run(args: argparse.Namespace, tmp: Path) -> int:
    started = time.monotonic()
    conns = [int(c) for c in args.connections.split(",")]
    kinds = ["relay", "bare"] + (
        ["relay_locked", "relay_one_hop", "relay_lean", "relay_lean_locked"] if args.what_if else []
    )
    print("Relay ingest benchmark: signed webhooks -> relay (verify, rules, outbox) vs bare FastAPI 202\n")
    notes = machine_notes()
    notes["wrk"] = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0].strip()
    import fastapi

    notes["fastapi"] = fastapi.__version__
    print_notes(notes)
    script = tmp / "signed.lua"
    script.write_text(WRK_SCRIPT)
    n_signed = int(args.max_rate * args.seconds)
    bare_file = tmp / "bare.tsv"
    write_requests(bare_file, "bare", n_signed)
    rows = {(k, c): Row(k, c) for c in conns for k in kinds}
    relay_files: list[Path] = []
    wrapped_runs = 0
    with contextlib.ExitStack() as stack:
        servers = {kind: stack.enter_context(server(kind, tmp)) for kind in kinds}
        relay = servers["relay"]
        # Warm-up (untimed): first requests import and compile lazily on every server.
        warm = tmp / "warm.tsv"
        for kind, srv in servers.items():
            write_requests(warm, f"warm{kind}", 2000)
            run_wrk(srv.url, script, warm, 4, 1)
        base_counts = relay_counts(relay)
        base_rows = outbox_rows(tmp / "relay-outbox.db")[0]
        for rep in range(args.reps):
            spent = time.monotonic() - started
            if rep >= args.min_reps and spent + spent / rep > args.max_seconds:
                print(f"\nstopping after {rep} repetitions: the next would end past {args.max_seconds:g} s")
                break
            print(f"\nrepetition {rep + 1}/{args.reps}", flush=True)
            order = kinds[rep % len(kinds) :] + kinds[: rep % len(kinds)]
            for c in conns:
                for kind in order:
                    srv = servers[kind]
                    if kind == "bare":
                        f = bare_file
                    else:
                        f = tmp / f"{kind}-{rep}-{c}.tsv"
                        write_requests(f, f"{kind}{rep}c{c}", n_signed)
                    cpu0 = srv.cpu_seconds()
                    out = run_wrk(srv.url, script, f, c, args.seconds)
                    cpu = srv.cpu_seconds() - cpu0
                    out["cpu_per_req"] = cpu / max(1, out["requests"])
                    out["busy"] = cpu / (out["duration_us"] / 1e6)
                    if kind != "bare" and out["requests"] + c > n_signed:
                        wrapped_runs += 1
                    rows[(kind, c)].runs.append(out)
                    errors = sum(out[k] for k in ("connect", "read", "write", "status", "timeout"))
                    print(
                        f"  {kind:<12} c={c:<3} {out['rate']:,.0f} req/s  p50 {out['p50_us'] / 1000:.2f} ms  "
                        f"p99 {out['p99_us'] / 1000:.2f} ms  errors {errors}  server CPU "
                        f"{out['cpu_per_req'] * 1e6:,.0f} us/req",
                        flush=True,
                    )
                    if kind == "relay":
                        for old in relay_files:
                            with contextlib.suppress(OSError):
                                old.unlink()
                        relay_files = [f]
                    elif kind != "bare":
                        with contextlib.suppress(OSError):
                            f.unlink()
        time.sleep(1.0)  # requests in flight when wrk stopped finish on the server
        counts = relay_counts(relay)
        rows_now, keys_now = outbox_rows(tmp / "relay-outbox.db")
        accepted = counts[202] - base_counts[202]
        new_rows = rows_now - base_rows
        other = {
            s: n - base_counts.get(s, 0) for s, n in counts.items() if s != 202 and n - base_counts.get(s, 0)
        }
        replayed = replay(relay, relay_files[-1], args.replay) if relay_files else Counter()
        rows_after, keys_after = outbox_rows(tmp / "relay-outbox.db")
    profile_lines = profile(tmp) if args.profile else []
    report(rows, conns, kinds, args, n_signed)
    print("\nCorrectness under load (relay)")
    ok_count = accepted == new_rows and rows_now == keys_now and not other and wrapped_runs == 0
    print(
        f"  [{'ok' if ok_count else 'FAILED'}] {accepted:,} requests answered 202 during the timed runs; "
        f"{new_rows:,} outbox rows were written; distinct idempotency keys {keys_now:,} of {rows_now:,} rows "
        f"(warm-up included); other statuses: {other or 'none'}; runs that ran out of signed requests: "
        f"{wrapped_runs}"
    )
    ok_replay = set(replayed) == {"202 new_actions=0"} and rows_after == rows_now and keys_after == keys_now
    print(
        f"  [{'ok' if ok_replay else 'FAILED'}] {sum(replayed.values())} accepted requests posted again "
        f"(re-signed, same webhook-ids, 8 threads): {dict(replayed)}; outbox rows {rows_now:,} -> {rows_after:,}"
    )
    for line in profile_lines:
        print(line)
    best = max(conns, key=lambda c: rows[("relay", c)].med("rate"))
    relay_rate = rows[("relay", best)].med("rate")
    print("\nTargets")
    print(
        f"  [{'met' if relay_rate >= TARGET_RATE else 'MISSED'}] relay >= {TARGET_RATE:,.0f} signed webhooks/s: "
        f"{relay_rate:,.0f} req/s at c={best} ("
        + ", ".join(f"c={c}: {rows[('relay', c)].med('rate'):,.0f}" for c in conns)
        + ")"
    )
    for c in conns:
        r = rows[("relay", c)].med("rate") / rows[("bare", c)].med("rate")
        print(
            f"  [{'met' if r >= TARGET_RATIO else 'MISSED'}] relay >= {TARGET_RATIO} of bare at c={c}: {r:.2f}"
        )
    print(f"  [{'met' if ok_count and ok_replay else 'MISSED'}] exactly one outbox item per distinct event")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nTotal time {time.monotonic() - started:.0f} s; load average at the end: {load}.")
    return 0


def report(
    rows: dict[tuple[str, int], Row],
    conns: list[int],
    kinds: list[str],
    args: argparse.Namespace,
    n_signed: int,
) -> None:
    reps = len(rows[("relay", conns[0])].runs)
    print(
        f"\n{reps} repetitions x {args.seconds:g} s per server and connection count; wrk 1 thread, keep-alive; "
        f"medians over repetitions [range of req/s]. Every relay request is a distinct, validly signed "
        f"event ({n_signed:,} signed per run)."
    )
    print()
    out = []
    for c in conns:
        bare = rows[("bare", c)]
        for kind in kinds:
            row = rows[(kind, c)]
            rates = [r["rate"] for r in row.runs]
            errs = sum(sum(r[k] for k in ("connect", "read", "write", "status", "timeout")) for r in row.runs)
            out.append(
                [
                    LABELS[kind],
                    c,
                    f"{row.med('rate'):,.0f} [{min(rates):,.0f}-{max(rates):,.0f}]",
                    f"{row.med('p50_us') / 1000:.2f}",
                    f"{row.med('p99_us') / 1000:.2f}",
                    f"{row.med('max_us') / 1000:.0f}",
                    f"{row.med('cpu_per_req') * 1e6:,.0f}",
                    f"{row.med('busy') * 100:.0f}%",
                    errs,
                    "" if kind == "bare" else fmt_ratio(row.med("rate") / bare.med("rate")),
                ]
            )
    print(
        table(
            [
                "server",
                "conns",
                "req/s",
                "p50 ms",
                "p99 ms",
                "max ms",
                "server CPU us/req",
                "server busy",
                "errors",
                "vs bare",
            ],
            out,
        )
    )
    print(
        "\n'server busy' = the server process's CPU time over the run's wall time (100% = one core; "
        "the relay's threadpool threads share one GIL). Latency is wrk's (closed loop: each connection "
        "waits for its answer). errors = wrk's connect/read/write/timeout errors and non-2xx answers."
    )


# -- where a request's time goes ------------------------------------------------------------------


def profile(tmp: Path) -> list[str]:
    """CPU of one relay request, layer by layer, in this process (sequential: no server, no threads)."""
    import asyncio
    import cProfile
    import io
    import pstats

    from astro_xdeps.outbox.models import NewItem
    from astro_xdeps.outbox.store import Outbox
    from astro_xdeps.relay.body import parse_json_body
    from astro_xdeps.relay.config import load_config
    from astro_xdeps.relay.engine import RelayEngine
    from astro_xdeps.relay.payloads import parse_event
    from astro_xdeps.relay.rules import matching_rules, plan_actions
    from astro_xdeps.relay.signing import verify_standard_webhook, webhook_headers

    os.environ[SECRET_ENV] = SECRET
    (tmp / "rules.yaml").write_text(RULES)
    config = load_config(tmp / "rules.yaml")
    n = 2000

    def signed(prefix: str) -> list[tuple[dict[str, str], bytes]]:
        out = []
        for i in range(n):
            body = event_body(prefix, i)
            out.append((webhook_headers(body, [SECRET], msg_id=f"msg_{prefix}_{i}"), body))
        return out

    def cpu_us(fn: Any) -> float:
        t = time.process_time()
        fn()
        return (time.process_time() - t) / n * 1e6

    reqs = signed("prof")
    verify = cpu_us(lambda: [verify_standard_webhook(h, b, [SECRET]) for h, b in reqs])
    parse = cpu_us(
        lambda: [
            parse_event(parse_json_body(b, max_bytes=65536), webhook_id=h["webhook-id"]) for h, b in reqs
        ]
    )
    events = [parse_event(parse_json_body(b, max_bytes=65536), webhook_id=h["webhook-id"]) for h, b in reqs]
    plan = cpu_us(lambda: [plan_actions(r, [e]) for e in events for r, _ in matching_rules(config, e)])
    planned = [plan_actions(r, [e])[0] for e in events for r, _ in matching_rules(config, e)]
    items = [
        NewItem(kind=p.kind, target=p.target, payload=p.payload, idempotency_key=p.idempotency_key)
        for p in planned
    ]
    with Outbox.sqlite(tmp / "prof-enqueue.db") as ob:
        enqueue = cpu_us(lambda: [ob.enqueue([it]) for it in items])
    raw = raw_sqlite_insert_us(tmp / "prof-raw.db", items)
    with Outbox.sqlite(tmp / "prof-engine.db") as ob:
        engine = RelayEngine(config, ob)
        ingest = cpu_us(lambda: [engine.ingest(e) for e in events])
        more = [
            parse_event(parse_json_body(b, max_bytes=65536), webhook_id=h["webhook-id"])
            for h, b in signed("cprof")
        ]
        prof = cProfile.Profile()
        prof.enable()
        for e in more[:1000]:
            engine.ingest(e)
        prof.disable()

    import astro_xdeps.relay.app as app_module

    def asgi_requests(prefix: str) -> list[tuple[list[tuple[bytes, bytes]], bytes]]:
        out = []
        for h, body in signed(prefix):
            raw_headers = [(k.encode(), v.encode()) for k, v in h.items()]
            raw_headers += [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ]
            out.append(([*raw_headers, (b"host", b"bench")], body))
        return out

    async def call_all(target: Any, batch: list[tuple[list[tuple[bytes, bytes]], bytes]]) -> None:
        """Call the ASGI app directly (no HTTP server, no client library): only the app's own cost."""
        for raw_headers, body in batch:
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "POST",
                "scheme": "http",
                "path": f"/events/{SOURCE}",
                "raw_path": f"/events/{SOURCE}".encode(),
                "query_string": b"",
                "root_path": "",
                "headers": raw_headers,
                "client": ("127.0.0.1", 1),
                "server": ("127.0.0.1", 80),
            }
            messages = [{"type": "http.request", "body": body, "more_body": False}]

            async def receive(messages: list[dict[str, Any]] = messages) -> dict[str, Any]:
                return messages.pop() if messages else {"type": "http.disconnect"}

            status: list[int] = []

            async def send(message: dict[str, Any], status: list[int] = status) -> None:
                if message["type"] == "http.response.start":
                    status.append(message["status"])

            await target(scope, receive, send)
            if status != [202]:
                raise RuntimeError(f"the app answered {status}")

    def app_cpu_us(target: Any, prefix: str) -> float:
        asyncio.run(call_all(target, asgi_requests(f"{prefix}warm")[:200]))
        batch = asgi_requests(prefix)
        return cpu_us(lambda: asyncio.run(call_all(target, batch)))

    whole = app_cpu_us(relay_app(str(tmp / "prof-app.db"), str(tmp / "rules.yaml")), "app")
    bare_us = app_cpu_us(bare_app(), "bare")
    pooled = app_module.run_in_threadpool

    async def inline(fn: Any, *a: Any, **kw: Any) -> Any:
        return fn(*a, **kw)

    app_module.run_in_threadpool = inline  # type: ignore[assignment]
    try:
        no_hops = app_cpu_us(relay_app(str(tmp / "prof-inline.db"), str(tmp / "rules.yaml")), "inline")
    finally:
        app_module.run_in_threadpool = pooled
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(12)
    table_lines = [x for x in buf.getvalue().splitlines() if x.strip()]
    head = next(i for i, x in enumerate(table_lines) if x.strip().startswith("ncalls"))
    return [
        "\nWhere a relay request's CPU goes (in this process, sequential, CPU us per request, median-free single pass)",
        f"  verify signature {verify:,.0f} | parse JSON + event {parse:,.0f} | match rules + plan {plan:,.0f} | "
        f"Outbox.enqueue of the planned item {enqueue:,.0f} (the same row with the sqlite3 driver directly: {raw:,.0f}) | "
        f"engine.ingest (plan + enqueue) {ingest:,.0f}",
        f"  whole app, called directly as ASGI: relay {whole:,.0f}, bare FastAPI app {bare_us:,.0f}; relay with both "
        f"run_in_threadpool hops made inline calls {no_hops:,.0f}, so the two thread hops cost {whole - no_hops:,.0f}",
        "  cProfile of 1,000 engine.ingest calls, top 12 by own time:",
        *["    " + x for x in table_lines[head : head + 13]],
    ]


def raw_sqlite_insert_us(db: Path, items: list[Any]) -> float:
    """CPU per item of the outbox's INSERT done with the sqlite3 driver: the floor under SQLAlchemy."""
    con = sqlite3.connect(db, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        con.execute(
            "CREATE TABLE o (id INTEGER PRIMARY KEY, kind TEXT, target TEXT, payload TEXT, idempotency_key TEXT,"
            " state TEXT, attempts INT, created_at REAL, next_attempt_at REAL, updated_at REAL,"
            " UNIQUE (target, kind, idempotency_key))"
        )
        con.execute("CREATE INDEX o_due ON o (state, next_attempt_at)")
        sql = (
            "INSERT INTO o (kind, target, payload, idempotency_key, state, attempts, created_at, next_attempt_at,"
            " updated_at) VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id"
        )
        t = time.process_time()
        for it in items:
            now = time.time()
            con.execute("BEGIN IMMEDIATE")
            con.execute(
                sql, (it.kind, it.target, json.dumps(it.payload), it.idempotency_key, now, now, now)
            ).fetchone()
            con.execute("COMMIT")
        return (time.process_time() - t) / len(items) * 1e6
    finally:
        con.close()


if __name__ == "__main__":
    sys.exit(main())

"""Relay ingest: signed webhooks per second and latency, vs a bare FastAPI endpoint.

Run: ``.venv/bin/python -m bench.relay_ingest`` (``--help`` for options; needs ``wrk``:
``apt-get update && apt-get install -y wrk``; ``--smoke``: seconds).

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

from bench import harness
from bench.common import (
    LOCALHOST,
    REPO,
    fmt_ratio,
    median,
    readline_with_timeout,
    table,
    temp_dir,
)

SECRET_ENV = "XDEPS_BENCH_RELAY_SECRET"
SECRET = "whsec_" + base64.b64encode(b"bench-relay-ingest-secret-32-byt").decode()
SOURCE = "bench"
# Issue 11: >= 2,000 signed webhooks/s with p99 <= 25 ms at 16 connections (and the ratio to bare).
TARGET_RATE = 2000.0
TARGET_P99_MS = 25.0
TARGET_CONNS = 16
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


def relay_app(outbox_path: str, rules_path: str) -> Any:
    from astro_xdeps.outbox.store import Outbox
    from astro_xdeps.relay.app import RelayRuntime, create_app
    from astro_xdeps.relay.config import load_config
    from astro_xdeps.relay.engine import RelayEngine

    config = load_config(rules_path)
    engine = RelayEngine(config, Outbox.sqlite(outbox_path))
    runtime = RelayRuntime(engine=engine, on_enqueue=None)
    # Loopback and a process of its own, as `relay serve` there.
    return create_app(lambda: runtime, open_monitoring=True, freeze_heap=True)


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
        else relay_app(outbox_path or "relay-outbox.db", rules_path or "rules.yaml")
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


SMOKE = {
    "reps": 1,
    "min_reps": 1,
    "seconds": 1.0,
    "connections": str(TARGET_CONNS),
    "max_rate": 10000.0,  # headroom: a run that runs out of signed requests fails the check
    "warmup": 200,
    "replay": 20,
}


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__, max_seconds=240.0)
    parser.add_argument("--seconds", type=float, default=6.0, help="wrk duration per run")
    parser.add_argument("--connections", default="4,16", help="comma-separated wrk connection counts")
    parser.add_argument(
        "--max-rate", type=float, default=8000.0, help="requests signed per run = max-rate x seconds"
    )
    parser.add_argument("--warmup", type=int, default=2000, help="untimed requests per server first")
    parser.add_argument("--replay", type=int, default=500, help="accepted requests posted again at the end")
    parser.add_argument("--serve", choices=("relay", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--outbox", help=argparse.SUPPRESS)
    parser.add_argument("--rules", help=argparse.SUPPRESS)
    args = harness.parse(parser, argv, SMOKE)
    if args.serve:
        serve(args.serve, args.outbox, args.rules)
        return 0
    if shutil.which("wrk") is None:
        sys.stderr.write("wrk is not installed: apt-get update && apt-get install -y wrk\n")
        return 2
    with temp_dir("xdeps-bench-relay-") as tmp:
        return run(args, tmp)


LABELS = {"relay": "relay (signed webhook -> outbox)", "bare": "bare FastAPI 202"}
KINDS = ["relay", "bare"]


def run(args: argparse.Namespace, tmp: Path) -> int:
    started = time.monotonic()
    conns = [int(c) for c in args.connections.split(",")]
    kinds = KINDS
    harness.header(
        "Relay ingest benchmark: signed webhooks -> relay (verify, rules, outbox) vs bare FastAPI 202", args
    )
    import fastapi

    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0].strip()
    print(f"  {wrk_version}; fastapi {fastapi.__version__}")
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
            write_requests(warm, f"warm{kind}", args.warmup)
            run_wrk(srv.url, script, warm, 4, 1)
        base_counts = relay_counts(relay)
        base_rows = outbox_rows(tmp / "relay-outbox.db")[0]
        for rep in harness.repetitions(args, started):
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
    # the target's connection count (or, when not measured, the largest one, said so)
    at = TARGET_CONNS if TARGET_CONNS in conns else max(conns)
    relay, bare = rows[("relay", at)], rows[("bare", at)]
    where = f"c={at}" + ("" if at == TARGET_CONNS else f" (c={TARGET_CONNS} not measured)")
    per_conns = ", ".join(f"c={c}: {rows[('relay', c)].med('rate'):,.0f}" for c in conns)
    verdicts: list[harness.Verdict] = [
        (
            f"relay >= {TARGET_RATE:,.0f} signed webhooks/s at {TARGET_CONNS} connections",
            at == TARGET_CONNS and relay.med("rate") >= TARGET_RATE,
            f"{relay.med('rate'):,.0f} req/s at {where} (all: {per_conns})",
        ),
        (
            f"relay p99 <= {TARGET_P99_MS:g} ms at {TARGET_CONNS} connections",
            at == TARGET_CONNS and relay.med("p99_us") / 1000 <= TARGET_P99_MS,
            f"p99 {relay.med('p99_us') / 1000:.2f} ms at {where}",
        ),
    ]
    for c in conns:
        r = rows[("relay", c)].med("rate") / rows[("bare", c)].med("rate")
        verdicts.append((f"(context) relay / bare FastAPI endpoint at c={c}", None, f"{r:.2f}"))
    verdicts.append(
        (
            f"(context) bare FastAPI endpoint at {where}",
            None,
            f"{bare.med('rate'):,.0f} req/s, p99 {bare.med('p99_us') / 1000:.2f} ms",
        )
    )
    verdicts.append(
        ("exactly one outbox item per distinct event", ok_count and ok_replay, f"{accepted:,} accepted")
    )
    figures = {f"{k} c={c} {m}": row.med(m) for (k, c), row in rows.items() for m in ("rate", "p50_us")}
    broken = [] if ok_count and ok_replay else ["the relay's outbox rows do not match its 202s (see above)"]
    return harness.finish(args, started, verdicts, figures, broken)


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


if __name__ == "__main__":
    sys.exit(main())

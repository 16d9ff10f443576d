"""Shared pieces of the benchmarks: stub downstream servers, environment, statistics, tables.

Stub servers (all on 127.0.0.1, on a port the kernel picks, stopped on exit and on failure):

- :func:`stub_server` — a minimal Airflow REST API (the calls the client makes for Airflow 3,
  plus the seed's Airflow 2 ``POST /api/v1/datasets/events``) served by uvicorn (httptools,
  uvloop when present) in a **subprocess**, so its CPU never competes with the measured code
  for the GIL. ``latency_ms`` delays every answer (``asyncio.sleep``: concurrent requests
  overlap). ``GET /_stats`` reports the requests served and the stub's own CPU seconds, from
  which the benchmarks compute the stub's capacity and how busy it was.
- :class:`HangingServer` — accepts connections and never answers (in-process: one thread that
  only blocks in ``accept``). :meth:`HangingServer.release` closes what it holds, so clients
  stuck on it fail at once instead of after their read timeout.
- :func:`refused_port` — a port with nothing listening: connecting is refused.

Run a stub by hand: ``.venv/bin/python -m bench.common --latency-ms 50`` (prints its port).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
LOCALHOST = "127.0.0.1"
# Seconds a child process may take to say it is ready. Generous: on a loaded 2-core machine
# importing uvicorn, or Airflow for a drainer, takes several times as long as when quiet.
STUB_START_TIMEOUT = 90.0


# -- environment ------------------------------------------------------------------------------


def prepare_airflow_env(home: Path) -> None:
    """Point Airflow at a throwaway home before anything imports it (no examples, quiet logs)."""
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")


def machine_notes() -> dict[str, str]:
    """What the results depend on: cores, CPU, load, and the versions of the stack."""
    notes = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()),
        "cpu": _cpu_model(),
        "loadavg (1/5/15 min) at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    for dist in ("apache-airflow", "sqlalchemy", "requests", "urllib3", "uvicorn"):
        notes[dist] = _version(dist)
    import sqlite3

    notes["sqlite"] = sqlite3.sqlite_version
    return notes


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def print_notes(notes: dict[str, str]) -> None:
    width = max(len(k) for k in notes)
    for key, value in notes.items():
        print(f"  {key:<{width}}  {value}")


@contextlib.contextmanager
def env_vars(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block; put back what was there (or nothing) after."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as name:
        yield Path(name)


# -- statistics -------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of ``values``: a value that was actually observed."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else math.nan


@dataclass
class LatencyRuns:
    """Per-repetition samples of one measured thing; reports the median over repetitions."""

    samples_per_rep: list[list[float]]

    def per_rep(self, p: float) -> list[float]:
        return [percentile(s, p) for s in self.samples_per_rep if s]

    def p(self, p: float) -> float:
        """The median over repetitions of each repetition's p-th percentile."""
        return median(self.per_rep(p))

    def spread(self, p: float) -> tuple[float, float]:
        vals = self.per_rep(p)
        return (min(vals), max(vals)) if vals else (math.nan, math.nan)

    @property
    def n(self) -> int:
        return sum(len(s) for s in self.samples_per_rep)

    @property
    def reps(self) -> int:
        return sum(1 for s in self.samples_per_rep if s)


def fmt_ms(seconds: float) -> str:
    """Seconds as milliseconds with useful precision (0.123, 12.3, 5000)."""
    if math.isnan(seconds):
        return "n/a"
    ms = seconds * 1000
    if ms < 1:
        return f"{ms:.3f}"
    if ms < 100:
        return f"{ms:.2f}"
    return f"{ms:.0f}"


def fmt_ratio(x: float) -> str:
    if math.isnan(x) or math.isinf(x):
        return "n/a"
    if x >= 100:
        return f"{x:,.0f}x"
    if x >= 10:
        return f"{x:.1f}x"
    return f"{x:.2f}x"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (pipes aligned), printable and pasteable into BENCHMARKS.md."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


# -- refused and hanging downstreams ----------------------------------------------------------


def refused_port() -> int:
    """A loopback port with nothing listening: connects are refused (RST) at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


class HangingServer:
    """Accepts TCP connections on 127.0.0.1 and never answers: a downstream that hangs."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((LOCALHOST, 0))
        self._sock.listen(128)
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="bench-hanging", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._held.append(conn)

    def release(self) -> int:
        """Close every held connection (clients waiting on them fail now); return how many."""
        with self._lock:
            held, self._held = self._held, []
        for conn in held:
            with contextlib.suppress(OSError):
                conn.close()
        return len(held)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()
        self.release()

    def __enter__(self) -> HangingServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the stub Airflow REST API ----------------------------------------------------------------


class Stub:
    """Handle on a running stub subprocess."""

    def __init__(self, proc: subprocess.Popen[str], port: int, latency_ms: float) -> None:
        self.proc = proc
        self.port = port
        self.latency_ms = latency_ms

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def stats(self) -> dict[str, float]:
        """``{"requests": n, "events": n, "cpu": seconds}`` since the stub started."""
        import urllib.request

        with urllib.request.urlopen(f"{self.url}/_stats", timeout=5) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        with contextlib.suppress(Exception):
            if self.proc.stdin:
                self.proc.stdin.close()
            if self.proc.stdout:
                self.proc.stdout.close()


@contextlib.contextmanager
def stub_server(latency_ms: float = 0.0) -> Iterator[Stub]:
    """Start the stub in a subprocess, wait until it answers, stop it on exit (also on failure)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.common", "--latency-ms", str(latency_ms)],
        cwd=REPO,
        stdin=subprocess.PIPE,  # the stub exits when this pipe closes: it never outlives us
        stdout=subprocess.PIPE,
        text=True,
    )
    stub: Stub | None = None
    try:
        line = readline_with_timeout(proc, STUB_START_TIMEOUT)
        if not line.startswith("PORT "):
            raise RuntimeError(f"The stub server did not start (said {line!r}, exit code {proc.poll()}).")
        stub = Stub(proc, int(line.split()[1]), latency_ms)
        _wait_until_up(stub, STUB_START_TIMEOUT)
        yield stub
    finally:
        if stub is not None:
            stub.stop()
        elif proc.poll() is None:
            proc.kill()
            proc.wait(5)


def stdout_to_devnull() -> None:
    """In a child whose stdout is a pipe nobody reads any more: send later output to /dev/null."""
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


def readline_with_timeout(proc: subprocess.Popen[str], timeout: float) -> str:
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline() if proc.stdout else ""))
    reader.daemon = True
    reader.start()
    reader.join(timeout)
    return box[0].strip() if box else ""


def _wait_until_up(stub: Stub, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            stub.stats()
            return
        except OSError:
            if time.monotonic() > deadline or stub.proc.poll() is not None:
                raise RuntimeError(f"The stub server on port {stub.port} does not answer.") from None
            time.sleep(0.05)


def cpu_seconds() -> float:
    """CPU time of this process, all threads, user + system."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def make_stub_app(latency_ms: float) -> Any:
    """The stub as a bare ASGI app (no framework: the less the stub costs, the less it distorts)."""
    delay = latency_ms / 1000.0
    counters = {"requests": 0, "events": 0}
    hdrs = [(b"content-type", b"application/json")]
    version = json.dumps({"version": "3.1.0", "git_version": None}).encode()
    no_events = json.dumps({"asset_events": [], "total_entries": 0}).encode()

    async def read_body(receive: Any) -> bytes:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                return b"".join(chunks)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        body = await read_body(receive)
        if path == "/_stats":
            payload = {**counters, "cpu": cpu_seconds()}
            await _answer(send, 200, json.dumps(payload).encode())
            return
        counters["requests"] += 1
        if delay:
            await asyncio.sleep(delay)
        status, out = 404, b'{"detail": "Not Found"}'
        if method == "GET" and path in ("/api/v2/version", "/api/v1/version"):
            status, out = 200, version
        elif method == "GET" and path == "/api/v2/assets":
            from urllib.parse import parse_qs

            uri = parse_qs(scope["query_string"].decode()).get("uri_pattern", [""])[0]
            asset = {"id": 1 + (hash(uri) & 0xFFFF), "uri": uri, "name": uri}
            status, out = 200, json.dumps({"assets": [asset], "total_entries": 1}).encode()
        elif method == "GET" and path == "/api/v2/assets/events":
            status, out = 200, no_events
        elif method == "POST" and path in ("/api/v2/assets/events", "/api/v1/datasets/events"):
            counters["events"] += 1
            sent = json.loads(body or b"{}")
            event = {
                "id": counters["events"],
                "asset_id": sent.get("asset_id"),
                "dataset_uri": sent.get("dataset_uri"),
                "extra": {**(sent.get("extra") or {}), "from_rest_api": True},
                "timestamp": "2026-01-01T00:00:00+00:00",
                "created_dagruns": [],
            }
            status, out = 200, json.dumps(event).encode()
        await _answer(send, status, out)

    async def _answer(send: Any, status: int, out: bytes) -> None:
        await send({"type": "http.response.start", "status": status, "headers": hdrs})
        await send({"type": "http.response.body", "body": out})

    return app


def _serve(latency_ms: float) -> None:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOCALHOST, 0))
    sock.listen(1024)
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    config = uvicorn.Config(
        make_stub_app(latency_ms),
        loop=loop,
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=60,
        backlog=1024,
    )
    server = uvicorn.Server(config)

    def exit_with_parent() -> None:
        sys.stdin.read()  # EOF when the parent closes the pipe or dies
        server.should_exit = True
        time.sleep(3)
        os._exit(0)

    threading.Thread(target=exit_with_parent, daemon=True).start()
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    stdout_to_devnull()
    server.run(sockets=[sock])


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Stub Airflow REST API for the benchmarks (127.0.0.1 only).")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    _serve(parser.parse_args().latency_ms)

"""Every benchmark runs end to end at its ``--smoke`` size, so a refactor cannot silently break one.

Each is ``python -m bench.<name> --smoke`` in a subprocess, as a person runs it: tiny sizes,
the same code paths, and the benchmark's own check that it measured something (finite figures
> 0, nothing lost or doubled). No performance is asserted. They run two at a time (the
machine's two cores; each is mostly one busy process), about a minute for all of them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[2]

# benchmark module -> what its output says when its smoke passed
SMOKES = {
    "hook_path": "smoke ok",
    "delivery": "smoke ok",
    "relay_ingest": "smoke ok",
    "footprint": "smoke ok",
    "ui_page": "smoke ok",
    "status": "smoke ok",
    "soak": "RESULT: PASS",
}
# Benchmarks with a --smoke that CI does not run, and why.
LEFT_OUT = {
    "real_airflow": "starts two real Airflow deployments: its smoke takes ~80 s (34 s of it starting "
    "them); the integration tests drive the same LocalDeployment and worker",
    "soak_relay": "its run() is the soak's relay_fuzz scenario, which `bench.soak --smoke` runs "
    "(and tests/soak/test_relay_fuzz_small.py at 5,000 requests)",
}
HELPERS = {"__init__", "common", "harness", "soak_procs"}  # not benchmarks: no --smoke of their own


def _unavailable(module: str) -> str | None:
    """Why ``module``'s smoke cannot run on this machine, or None."""
    if module == "relay_ingest" and shutil.which("wrk") is None:
        return "wrk is not installed (./dev test installs it as root: apt-get install wrk)"
    if module == "soak":
        from bench.soak import pg_url

        engine = sa.create_engine(pg_url(), connect_args={"connect_timeout": 3})
        try:
            with engine.connect():
                pass
        except Exception as exc:
            return f"PostgreSQL is unreachable ({type(exc).__name__}); start it or set XDEPS_SOAK_PG_URL"
        finally:
            engine.dispose()
    return None


def test_every_benchmark_is_smoked_or_left_out_with_a_reason() -> None:
    modules = {p.stem for p in (ROOT / "bench").glob("*.py")} - HELPERS
    assert modules == set(SMOKES) | set(LEFT_OUT)
    for module in LEFT_OUT:
        assert "--smoke" in (ROOT / "bench" / f"{module}.py").read_text()


@pytest.fixture(scope="module")
def smoke_runs() -> dict[str, subprocess.CompletedProcess[str] | str]:
    """Every available smoke's finished process (two at a time), or why it could not run."""

    def run(module: str) -> subprocess.CompletedProcess[str] | str:
        reason = _unavailable(module)
        if reason:
            return reason
        return subprocess.run(
            [sys.executable, "-m", f"bench.{module}", "--smoke"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(SMOKES, pool.map(run, SMOKES), strict=True))


@pytest.mark.parametrize("module", sorted(SMOKES))
@pytest.mark.timeout(600)  # the first one waits for all of them
def test_benchmark_smoke(module: str, smoke_runs: dict[str, subprocess.CompletedProcess[str] | str]) -> None:
    result = smoke_runs[module]
    if isinstance(result, str):
        if os.environ.get("CI"):
            pytest.fail(f"CI is set, so every benchmark's smoke must run: {result}")
        pytest.skip(result)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert SMOKES[module] in result.stdout, output[-6000:]

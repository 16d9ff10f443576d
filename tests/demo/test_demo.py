"""The README's main job, end to end: `./dev demo` with two real deployments (asserts on its outcome)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(800)  # the demo's own 600 s cap below, then its clean stop
def test_the_demo_tells_the_whole_story_and_leaves_no_process(tmp_path):
    summary = tmp_path / "summary.json"
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "astro_xdeps.demo", "--summary", str(summary)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        # Ctrl-C: the demo stops every deployment it started (a kill would leave them running).
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=150)
        pytest.fail(f"the demo did not finish in 600 s:\n{stdout[-4000:]}{stderr[-4000:]}")
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, stdout[-4000:] + stderr[-4000:]
    outcome = json.loads(summary.read_text())
    assert outcome["ok"] is True
    assert outcome["forwarding"]["event_arrived"] is True
    assert outcome["forwarding"]["consumer_state"] == "success"
    assert outcome["forwarding"]["task_to_event_ms"] is not None
    assert outcome["relay"]["upstream_state"] == "failed"
    assert outcome["relay"]["recovery_state"] == "success"
    assert outcome["outage"]["arrived"] == 2
    assert outcome["outage"]["per_run_counts"] == [1, 1]
    assert elapsed < 300, f"the demo took {elapsed:.0f}s; the README promises under 5 minutes"

    # Every process group the demo started (api-servers, schedulers, their workers) is gone.
    assert len(outcome["process_groups"]) >= 6
    alive = []
    for pgid in outcome["process_groups"]:
        try:
            os.killpg(pgid, 0)
            alive.append(pgid)
        except ProcessLookupError:
            pass
    assert alive == []

"""The README's main job, end to end: `./dev demo` with two real deployments (asserts on its outcome)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_tells_the_whole_story_and_leaves_no_process(tmp_path):
    summary = tmp_path / "summary.json"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "astro_xdeps.demo", "--summary", str(summary)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
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

"""Real Airflow for the integration tests: deployments shared by the whole session.

Starting a deployment takes ~30 s and ~1.2 GB, so each is started once per session and
stopped (by process group) when the session ends, also when tests fail.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from astro_xdeps.testing.local_deployment import COMPONENTS, LocalDeployment

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "dags" / "examples"
TEST_DAGS = Path(__file__).with_name("dags")
RELAY_SECRET = "whsec_" + base64.b64encode(b"integration-test-secret-32-bytes!").decode()
# The deadline rules' deadline: the first whole minute (a cron's unit) at least DEADLINE_LEAD
# after the deadline test rewrites the rules and restarts the upstream scheduler (the session's
# own start is too far from when the test is reached), so 100-160 s ahead, in Europe/Berlin;
# their window opens DEADLINE_WINDOW before it, after the new scheduler was started.
DEADLINE_LEAD = timedelta(seconds=100)
DEADLINE_WINDOW = timedelta(seconds=80)
DEADLINE_GRACE_SECONDS = 5
# Upstream's routes: the partition test's asset goes with a mapped partition key; the other
# file:// assets (every asset the push tests use) as they are. s3://upstream-only/* is not
# forwarded, so it reaches downstream only by pulling (tests/integration/test_pull_*.py).
UPSTREAM_ROUTES = json.dumps(
    [
        {
            "name": "partitions",
            "match": {"uri": "file://include/partitioned_*"},
            "targets": ["xdeps_default"],
            "partition_key": "eu-{partition_key}",
        },
        {"name": "default", "match": {"uri": "file://*"}, "targets": ["xdeps_default"]},
    ]
)
# The deadline instant (UTC) of the deadline rules now in force, and the rules file ("path").
DEADLINE: dict[str, Any] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@dataclass
class Pair:
    upstream: LocalDeployment
    downstream: LocalDeployment


def write_relay_config(path: Path, start: datetime) -> datetime:
    """relay.yaml plus two deadline rules whose daily deadline is the first whole minute at least
    ``DEADLINE_LEAD`` after ``start``.

    The cron is written in Europe/Berlin local time, so the test goes through the time zone.
    """
    earliest = start + DEADLINE_LEAD
    deadline = earliest.replace(second=0, microsecond=0)
    if deadline < earliest:
        deadline += timedelta(minutes=1)
    local = deadline.astimezone(ZoneInfo("Europe/Berlin"))
    cron = f"{local.minute} {local.hour} * * *"
    window = f"{int(DEADLINE_WINDOW.total_seconds())}s"

    def rule(name: str, dag_id: str, late: bool) -> str:
        text = f"""
  - name: {name}
    deadline:
      expect: {{type: dag_run.success, dag_id: {dag_id}}}
      cron: "{cron}"
      timezone: Europe/Berlin
      within: {window}
      grace: {DEADLINE_GRACE_SECONDS}s
    then:
      - trigger_dag:
          target: xdeps_default
          dag_id: recovery_dag
          conf: {{failed_dag: "{{dag_id}}", failed_run: "{{type}}", via: deadline, deadline: "{{occurred_at}}"}}
          note: "{{message}}"
"""
        if late:
            text += """    on_late:
      - trigger_dag:
          target: xdeps_default
          dag_id: recovery_dag
          conf: {failed_dag: "{dag_id}", failed_run: "{run_id}", via: late}
"""
        return text

    base = Path(__file__).with_name("relay.yaml").read_text()
    path.write_text(
        base
        + rule("deadline-missed", "deadline_watched", True)
        + rule("deadline-kept", "deadline_met", False)
    )
    return deadline


@pytest.fixture(scope="session")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Two real Airflow 3 deployments on loopback, both with astro-xdeps installed.

    upstream: the example producer; forwards every asset event to downstream (xdeps_default).
    downstream: the example consumer; routes every asset back to upstream, so the loop test
    can show that events it received over the REST API are not bounced back.
    """
    base = tmp_path_factory.mktemp("deployments")
    up = LocalDeployment(
        "upstream",
        base / "upstream",
        dags=[
            EXAMPLES / "producer_dag.py",
            EXAMPLES / "flaky_producer_dag.py",
            TEST_DAGS / "extract_a.py",
            TEST_DAGS / "extract_b.py",
            TEST_DAGS / "late_producer.py",
            TEST_DAGS / "time_and_recovery.py",
        ],
        users={"viewer": "viewer"},  # the page's test: a user who may look but not retry
    )
    down = LocalDeployment(
        "downstream",
        base / "downstream",
        dags=[
            EXAMPLES / "consumer_dag.py",
            EXAMPLES / "recovery_dag.py",
            TEST_DAGS / "report_dag.py",
            TEST_DAGS / "partition_sink.py",
        ],
    )
    fast_retries = {"AIRFLOW__ASTRO_XDEPS__RETRY_MAX_DELAY": "2"}
    up.extra_env.update(
        fast_retries,
        AIRFLOW_CONN_XDEPS_DEFAULT=down.connection_json(),
        AIRFLOW__ASTRO_XDEPS__DEPLOYMENT_NAME="upstream",
        AIRFLOW__ASTRO_XDEPS__RELAY_CONFIG=str(base / "relay.yaml"),
        AIRFLOW__ASTRO_XDEPS__DEADLINE_TICK_SECONDS="3",
        AIRFLOW__ASTRO_XDEPS__ROUTES=UPSTREAM_ROUTES,
        XDEPS_RELAY_SECRET=RELAY_SECRET,
    )
    down.extra_env.update(
        fast_retries,
        AIRFLOW_CONN_XDEPS_UPSTREAM=up.connection_json(),
        AIRFLOW__ASTRO_XDEPS__ROUTES='[{"name": "back", "targets": ["xdeps_upstream"]}]',
        AIRFLOW__ASTRO_XDEPS__DEPLOYMENT_NAME="downstream",
    )
    try:
        # Migrations and the FAB users are mostly waiting on SQLite and imports: overlap them.
        with ThreadPoolExecutor(max_workers=2) as pool:
            for done in [pool.submit(d.prepare) for d in (up, down)]:
                done.result()
        # Until the deadline test moves it, the deadline lies 12 h ahead: nothing fires before.
        DEADLINE["path"] = base / "relay.yaml"
        DEADLINE["at"] = write_relay_config(
            DEADLINE["path"], datetime.now(timezone.utc) + timedelta(hours=12)
        )
        for d in (up, down):
            for component in COMPONENTS:
                d.start_component(component)
        for d in (up, down):
            d.wait_ready()
        for dag_id in (
            "producer_dag",
            "flaky_producer_dag",
            "extract_a",
            "extract_b",
            "late_producer",
            "deadline_watched",
            "deadline_met",
            "count_failer",
            "partitioned_producer",
        ):
            up.wait_for_dag(dag_id)
        for dag_id in ("consumer_dag", "recovery_dag", "report_dag", "partition_sink"):
            down.wait_for_dag(dag_id)
        yield Pair(up, down)
    finally:
        with ThreadPoolExecutor(max_workers=2) as pool:  # each waits for its components to exit
            list(pool.map(lambda d: d.stop(), (up, down)))


@pytest.fixture(scope="session")
def downstream(pair: Pair) -> LocalDeployment:
    return pair.downstream


@pytest.fixture(scope="session")
def upstream(pair: Pair) -> LocalDeployment:
    return pair.upstream


def run_cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the installed ``astro-xdeps`` command as a user would."""
    exe = Path(sys.executable).with_name("astro-xdeps")
    full_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW_CONN_", "DEPLOYMENT_URL", "API_TOKEN"))
    }
    full_env.update(env)
    return subprocess.run([str(exe), *args], env=full_env, capture_output=True, text=True, timeout=timeout)

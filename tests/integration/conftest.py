"""Real Airflow for the integration tests: deployments shared by the whole session.

Starting a deployment takes ~30 s and ~1.2 GB, so each is started once per session and
stopped (by process group) when the session ends, also when tests fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from astro_xdeps.testing.local_deployment import LocalDeployment

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "dags" / "examples"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def downstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployment]:
    """A real Airflow 3 deployment with the example consumer DAG."""
    deployment = LocalDeployment(
        "downstream", tmp_path_factory.mktemp("downstream"), dags=[EXAMPLES / "consumer_dag.py"]
    )
    try:
        deployment.prepare()
        deployment.start()
        deployment.wait_for_dag("consumer_dag")
        yield deployment
    finally:
        deployment.stop()


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

"""Mixed-version links: one real Airflow 2.11 deployment and one real Airflow 3.3 deployment.

The 2.11 deployment runs from ``.venv-af2/`` (``./dev setup`` installs it from
``envs/airflow2/uv.lock``), the 3.3 one from this interpreter's environment; astro-xdeps is
installed in both. Each forwards every asset event to the other, and the 2.11 deployment's
relay rule triggers a 3.3 DAG when a 2.11 DAG fails.

Shared by every test of the (single) mixed module and stopped when it ends: module scope, not
session, so that in a session that also runs the 3.3 ``pair`` (``./dev test``) the two pairs
never run at the same time — this directory is collected before the ``pair`` tests.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from astro_xdeps.testing.airflow2_deployment import COMPONENTS_V2, Airflow2Deployment
from astro_xdeps.testing.local_deployment import COMPONENTS, LocalDeployment

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).parent
AF2_AIRFLOW = ROOT / ".venv-af2" / "bin" / "airflow"
FAST_RETRIES = {"AIRFLOW__ASTRO_XDEPS__RETRY_MAX_DELAY": "2"}


@dataclass
class Mixed:
    af2: Airflow2Deployment
    af3: LocalDeployment


def cli_of(
    deployment: LocalDeployment, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run ``astro-xdeps`` from the deployment's own environment (2.11 or 3.3) against its home."""
    exe = Path(deployment._airflow_bin()).with_name("astro-xdeps")
    skip = ("AIRFLOW", "DEPLOYMENT_URL", "API_TOKEN")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    full_env["AIRFLOW_HOME"] = str(deployment.home)
    full_env.update(env or {})
    return subprocess.run([str(exe), *args], env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mixed]:
    if not AF2_AIRFLOW.exists():
        pytest.fail(f"{AF2_AIRFLOW} is missing: run `./dev setup` to install the Airflow 2.11 environment.")
    base = tmp_path_factory.mktemp("mixed")
    af2 = Airflow2Deployment(
        "af2", base / "af2", dags=[HERE / "dags_af2" / "mixed_af2_dags.py"], airflow_bin=AF2_AIRFLOW
    )
    af3 = LocalDeployment("af3", base / "af3", dags=[HERE / "dags_af3" / "mixed_af3_dags.py"])
    af2.extra_env.update(
        FAST_RETRIES,
        AIRFLOW_CONN_XDEPS_DEFAULT=af3.connection_json(),
        AIRFLOW__ASTRO_XDEPS__DEPLOYMENT_NAME="af2",
        AIRFLOW__ASTRO_XDEPS__RELAY_CONFIG=str(HERE / "relay_af2.yaml"),
    )
    af3.extra_env.update(
        FAST_RETRIES,
        AIRFLOW_CONN_XDEPS_DEFAULT=af2.connection_json(),
        AIRFLOW__ASTRO_XDEPS__DEPLOYMENT_NAME="af3",
    )
    try:
        # Migrations and the FAB user are mostly waiting on SQLite and imports: overlap them.
        with ThreadPoolExecutor(max_workers=2) as pool:
            for done in [pool.submit(d.prepare) for d in (af2, af3)]:
                done.result()
        for component in COMPONENTS_V2:
            af2.start_component(component)
        for component in COMPONENTS:
            af3.start_component(component)
        af2.wait_ready()
        af3.wait_ready()
        for dag_id in ("af2_producer", "af2_consumer", "af2_fails"):
            af2.wait_for_dag(dag_id, timeout=180)
        for dag_id in ("af3_producer", "af3_consumer", "af3_recovery"):
            af3.wait_for_dag(dag_id, timeout=180)
        yield Mixed(af2, af3)
    finally:
        with ThreadPoolExecutor(max_workers=2) as pool:  # each waits for its components to exit
            list(pool.map(lambda d: d.stop(), (af2, af3)))

"""A real Airflow 2.10/2.11 deployment on loopback: webserver and scheduler, SQLite.

The Airflow 2 sibling of :class:`~astro_xdeps.testing.local_deployment.LocalDeployment`, with the
same helpers (``trigger``, ``wait_for_run``, ``asset_events``, ``connection_json``) so a test can
treat a 2.x and a 3.x deployment alike. What differs on 2.x:

- it runs from its own environment (``airflow_bin``; ``./dev setup`` installs ``.venv-af2/``);
- the webserver is the gunicorn server ``airflow webserver`` starts, without its monitor;
- SQLite needs the SequentialExecutor, which runs each task as an ``airflow tasks run`` process
  from the scheduler, one at a time;
- the REST API is ``/api/v1`` with basic auth (``[api] auth_backends``), users come from
  ``airflow users create`` (FAB auth manager), and new DAG files are listed by the scheduler
  every ``dag_dir_list_interval`` seconds (5 here, 300 by default).
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import requests

from astro_xdeps.testing.local_deployment import USERNAME, LocalDeployment

COMPONENTS_V2 = ("webserver", "scheduler")


@dataclass
class Airflow2Deployment(LocalDeployment):
    """One Airflow 2 deployment under ``home``, run by ``airflow_bin``."""

    airflow_bin: Path = Path("airflow")
    _secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    def _version_env(self) -> dict[str, str]:
        return {
            "AIRFLOW__CORE__EXECUTOR": "SequentialExecutor",
            "AIRFLOW__DATABASE__LOAD_DEFAULT_CONNECTIONS": "False",
            "AIRFLOW__API__AUTH_BACKENDS": "airflow.api.auth.backend.basic_auth,airflow.api.auth.backend.session",
            "AIRFLOW__WEBSERVER__WEB_SERVER_HOST": "127.0.0.1",
            "AIRFLOW__WEBSERVER__WEB_SERVER_PORT": str(self.port),
            "AIRFLOW__WEBSERVER__BASE_URL": self.url,
            "AIRFLOW__WEBSERVER__WORKERS": "1",
            "AIRFLOW__WEBSERVER__SECRET_KEY": self._secret_key,
            "AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "3",
            "AIRFLOW__SCHEDULER__PARSING_PROCESSES": "1",
            # The SequentialExecutor runs `airflow tasks run` through PATH: this environment's.
            "PATH": f"{Path(self.airflow_bin).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def _airflow_bin(self) -> str:  # type: ignore[override]
        return str(self.airflow_bin)

    def prepare(self) -> None:
        """Create the home, copy DAG files in, migrate the DB and create the admin user."""
        self._make_home()
        for path in self.dags:
            self.add_dag(path)
        if not (self.home / "airflow.db").exists():
            self.airflow("db", "migrate", timeout=300)
            try:
                self.airflow(
                    "users", "create", "--username", USERNAME, f"--password={self.password}",
                    "--firstname", "X", "--lastname", "Deps", "--role", "Admin", "--email", "admin@example.com",
                    timeout=180,
                )  # fmt: skip
            except RuntimeError as exc:  # its message repeats the command line: hide the password
                raise RuntimeError(str(exc).replace(self.password, "***")) from None

    def start(self, components=COMPONENTS_V2, timeout: float = 180) -> None:
        super().start(components, timeout=timeout)

    def start_component(self, component: str) -> None:
        """Start ``component``; the webserver as the gunicorn server ``airflow webserver`` runs.

        ``airflow webserver`` wraps gunicorn in a monitor that, on a loaded machine, can signal
        the gunicorn master before it is up and then shut the whole webserver down after
        ``web_server_master_timeout`` ("No response from gunicorn master"). The app, its config
        and its plugins are the same without the monitor.
        """
        if component != "webserver":
            super().start_component(component)
            return
        if component in self.procs and self.procs[component].poll() is None:
            return
        gunicorn = str(Path(self.airflow_bin).with_name("gunicorn"))
        args = ["--workers", "1", "--worker-class", "sync", "--timeout", "300", "--name", "airflow-webserver"]
        args += ["--bind", f"127.0.0.1:{self.port}", "--access-logfile", "-", "airflow.www.app:cached_app()"]
        self._spawn(component, [gunicorn, *args])

    def wait_ready(self, timeout: float = 180) -> None:
        """Wait until the webserver answers /health with a healthy metadatabase and the API accepts us."""

        def probe() -> str | None:
            r = requests.get(f"{self.url}/health", timeout=5)
            if r.status_code == 200 and r.json()["metadatabase"]["status"] == "healthy":
                return (
                    None if self.api("GET", "/version").status_code == 200 else "API refused the admin user"
                )
            return f"HTTP {r.status_code}"

        self._poll_ready(probe, "webserver", timeout=timeout, interval=1)

    # -- API helpers (v1, basic auth) -----------------------------------------------------------
    def token(self) -> str:  # pragma: no cover - Airflow 2 has no /auth/token
        raise NotImplementedError("Airflow 2 deployments use basic auth; call api()")

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        """Call the deployment's ``/api/v1`` as admin; a loaded 2-core box gets a few tries."""
        for attempt in range(4):
            try:
                return requests.request(
                    method,
                    f"{self.url}/api/v1{path}",
                    auth=(USERNAME, self.password),
                    timeout=30,
                    **kwargs,
                )
            except (requests.ConnectionError, requests.Timeout):
                if attempt == 3:
                    raise
                time.sleep(1 + attempt)
        raise AssertionError("unreachable")

    _runs_order = "-execution_date"

    @staticmethod
    def _trigger_body(conf: dict | None) -> dict:
        return {"conf": conf or {}}  # 2.x: no logical_date means now

    def asset_events(self, uri: str, limit: int = 100, timeout: float = 30) -> list[dict]:
        """Recent events of dataset ``uri``, newest first ([] while the dataset does not exist)."""
        r = self.api("GET", f"/datasets/{quote(uri, safe='')}")
        if r.status_code == 404:
            return []
        r.raise_for_status()
        params = {"dataset_id": r.json()["id"], "order_by": "-timestamp", "limit": limit}
        deadline = time.monotonic() + timeout
        while True:
            r = self.api("GET", "/datasets/events", params=params)
            if r.status_code == 200 or time.monotonic() > deadline:
                r.raise_for_status()
                return r.json()["dataset_events"]
            time.sleep(0.5)

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

import json
import os
import secrets
import subprocess
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

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__EXECUTOR": "SequentialExecutor",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
                "AIRFLOW__DATABASE__LOAD_DEFAULT_CONNECTIONS": "False",
                "AIRFLOW__API__AUTH_BACKENDS": (
                    "airflow.api.auth.backend.basic_auth,airflow.api.auth.backend.session"
                ),
                "AIRFLOW__WEBSERVER__WEB_SERVER_HOST": "127.0.0.1",
                "AIRFLOW__WEBSERVER__WEB_SERVER_PORT": str(self.port),
                "AIRFLOW__WEBSERVER__BASE_URL": self.url,
                "AIRFLOW__WEBSERVER__WORKERS": "1",
                "AIRFLOW__WEBSERVER__SECRET_KEY": self._secret_key,
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self._log_ports[0]),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self._log_ports[1]),
                "AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL": "5",
                "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "3",
                "AIRFLOW__SCHEDULER__PARSING_PROCESSES": "1",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                # The SequentialExecutor runs `airflow tasks run` through PATH: this environment's.
                "PATH": f"{Path(self.airflow_bin).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def _airflow_bin(self) -> str:  # type: ignore[override]
        return str(self.airflow_bin)

    def prepare(self) -> None:
        """Create the home, copy DAG files in, migrate the DB and create the admin user."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.dags_folder.mkdir(exist_ok=True)
        (self.home / "logs").mkdir(exist_ok=True)
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
        log = open(self.home / "logs" / "webserver.out", "ab")  # noqa: SIM115 - owned by the child
        gunicorn = str(Path(self.airflow_bin).with_name("gunicorn"))
        args = ["--workers", "1", "--worker-class", "sync", "--timeout", "300", "--name", "airflow-webserver"]
        args += ["--bind", f"127.0.0.1:{self.port}", "--access-logfile", "-", "airflow.www.app:cached_app()"]
        self.procs[component] = subprocess.Popen(
            [gunicorn, *args],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.started_groups.append(self.procs[component].pid)
        log.close()

    def wait_ready(self, timeout: float = 180) -> None:
        """Wait until the webserver answers /health with a healthy metadatabase and the API accepts us."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            self._raise_if_died()
            try:
                r = requests.get(f"{self.url}/health", timeout=5)
                if r.status_code == 200 and r.json()["metadatabase"]["status"] == "healthy":
                    if self.api("GET", "/version").status_code == 200:
                        return
                    last = "API refused the admin user"
                else:
                    last = f"HTTP {r.status_code}"
            except (requests.RequestException, ValueError, KeyError) as exc:
                last = type(exc).__name__
            time.sleep(1)
        raise TimeoutError(
            f"[{self.name}] webserver not ready after {timeout:.0f}s ({last}); see {self.home}/logs"
        )

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

    def trigger(self, dag_id: str, run_id: str | None = None, conf: dict | None = None) -> str:
        """Start a run of ``dag_id`` now (2.x: no logical_date means now); return its run id."""
        body: dict = {"conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        r = self.api("POST", f"/dags/{dag_id}/dagRuns", json=body)
        if r.status_code != 200:
            raise RuntimeError(f"[{self.name}] trigger {dag_id} failed: HTTP {r.status_code} {r.text[:300]}")
        return r.json()["dag_run_id"]

    def dag_runs(self, dag_id: str, limit: int = 100) -> list[dict]:
        r = self.api("GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "-execution_date", "limit": limit})
        r.raise_for_status()
        return r.json()["dag_runs"]

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

    def connection_json(self) -> str:
        """This deployment as an ``AIRFLOW_CONN_*`` value: login and password mean basic auth on v1."""
        return json.dumps(
            {"conn_type": "xdeps_deployment", "host": self.url, "login": USERNAME, "password": self.password}
        )

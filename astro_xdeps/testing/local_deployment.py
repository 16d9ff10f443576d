"""A real Airflow 3 deployment on loopback: api-server, scheduler, dag-processor, triggerer, SQLite.

Used by the integration tests (one pair per session) and by the demo. Every component runs
in its own process session and is stopped by process group, so nothing outlives ``stop()``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import requests

# The triggerer runs deferred tasks and asset watchers (the pull side); its log server port is
# set per deployment (trigger_log_server_port) but not served: logs are read from files here.
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
_NO_LOG_SERVER = ("scheduler", "triggerer")
USERNAME = "admin"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalDeployment:
    """One Airflow deployment under ``home``. ``start()`` returns once the API answers."""

    name: str
    home: Path
    dags: Iterable[Path] = ()
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    started_groups: list[int] = field(default_factory=list)  # every process group ever started
    # More SimpleAuthManager users beside admin, name -> role (viewer, user, op, admin).
    users: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.home = Path(self.home)
        self.port = self.port or free_port()
        self._log_ports = (free_port(), free_port())
        self._jwt_secret = secrets.token_urlsafe(24)
        self._token: str | None = None
        self.passwords = {USERNAME: self.password} | {u: secrets.token_urlsafe(12) for u in self.users}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dags_folder(self) -> Path:
        return self.home / "dags"

    def env(self) -> dict[str, str]:
        """The environment every component and CLI call of this deployment runs with."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self._log_ports[0]),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self._log_ports[1]),
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self._version_env())
        env.update(self.extra_env)
        return env

    def _version_env(self) -> dict[str, str]:
        """The settings only Airflow 3 has: executor, SimpleAuthManager users, api-server, dag-processor."""
        return {
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
                [f"{USERNAME}:admin"] + [f"{u}:{role}" for u, role in self.users.items()]
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "passwords.json"),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": self._jwt_secret,
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "3",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "3",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        }

    # -- lifecycle ----------------------------------------------------------------------------
    def prepare(self) -> None:
        """Create the home, copy DAG files in, write the password, migrate the DB (~10 s)."""
        self._make_home()
        (self.home / "passwords.json").write_text(json.dumps(self.passwords))
        for path in self.dags:
            self.add_dag(path)
        if not (self.home / "airflow.db").exists():
            self.airflow("db", "migrate", timeout=300)

    def _make_home(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.dags_folder.mkdir(exist_ok=True)
        (self.home / "logs").mkdir(exist_ok=True)

    def add_dag(self, path: Path) -> None:
        shutil.copy(path, self.dags_folder / Path(path).name)

    def airflow(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run an ``airflow`` CLI command against this deployment; raise with its output on failure."""
        result = subprocess.run(
            [self._airflow_bin(), *args], env=self.env(), capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"[{self.name}] airflow {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
            )
        return result

    @staticmethod
    def _airflow_bin() -> str:
        candidate = Path(sys.executable).with_name("airflow")
        return str(candidate) if candidate.exists() else "airflow"

    def start(self, components: Iterable[str] = COMPONENTS, timeout: float = 120) -> None:
        for component in components:
            self.start_component(component)
        self.wait_ready(timeout=timeout)

    def start_component(self, component: str) -> None:
        if component in self.procs and self.procs[component].poll() is None:
            return
        args = [component] + (["--skip-serve-logs"] if component in _NO_LOG_SERVER else [])
        self._spawn(component, [self._airflow_bin(), *args])

    def _spawn(self, component: str, argv: list[str]) -> None:
        """Run ``argv`` as ``component`` in its own process session, output to its log file."""
        log = open(self.home / "logs" / f"{component}.out", "ab")  # noqa: SIM115 - owned by the child
        self.procs[component] = subprocess.Popen(
            argv,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.started_groups.append(self.procs[component].pid)
        log.close()

    def wait_ready(self, timeout: float = 120) -> None:
        """Wait until the api-server answers health with a healthy metadatabase."""

        def probe() -> str | None:
            r = requests.get(f"{self.url}/api/v2/monitor/health", timeout=2)
            if r.status_code == 200 and r.json()["metadatabase"]["status"] == "healthy":
                return None
            return f"HTTP {r.status_code}"

        self._poll_ready(probe, "api-server", timeout=timeout, interval=0.5)

    def _poll_ready(
        self, probe: Callable[[], str | None], server: str, *, timeout: float, interval: float
    ) -> None:
        """Call ``probe`` (None = ready, else why not) until it says ready; fail if a component died."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            self._raise_if_died()
            try:
                reason = probe()
                if reason is None:
                    return
                last = reason
            except (requests.RequestException, ValueError, KeyError) as exc:
                last = type(exc).__name__
            time.sleep(interval)
        raise TimeoutError(
            f"[{self.name}] {server} not ready after {timeout:.0f}s ({last}); see {self.home}/logs"
        )

    def _raise_if_died(self) -> None:
        for component, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.home / "logs" / f"{component}.out").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"[{self.name}] {component} exited with {proc.returncode}:\n{tail}")

    def stop_component(self, component: str, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        proc = self.procs.pop(component, None)
        if proc is None:
            return
        _stop_group(proc, sig, timeout)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        for component in list(self.procs):
            self.stop_component(component, sig)

    def kill(self) -> None:
        """SIGKILL every component: a crash, not a shutdown."""
        self.stop(signal.SIGKILL)

    # -- API helpers --------------------------------------------------------------------------
    _runs_order = "-run_after"  # newest first

    def token(self) -> str:
        """A JWT for the admin user, reused until the deployment refuses it."""
        if self._token is None:
            r = requests.post(
                f"{self.url}/auth/token", json={"username": USERNAME, "password": self.password}, timeout=30
            )
            r.raise_for_status()
            self._token = r.json()["access_token"]
        return self._token

    def login(self, username: str) -> str:
        """A fresh JWT for ``username`` (admin or one of ``users``), as ``POST /auth/token`` gives it."""
        r = requests.post(
            f"{self.url}/auth/token",
            json={"username": username, "password": self.passwords[username]},
            timeout=30,
        )
        r.raise_for_status()
        return r.json()["access_token"]

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        """Call the deployment's REST API as admin; a loaded 2-core box gets a few tries."""
        for attempt in range(4):
            try:
                headers = {"Authorization": f"Bearer {self.token()}"}
                r = requests.request(
                    method, f"{self.url}/api/v2{path}", headers=headers, timeout=30, **kwargs
                )
            except (requests.ConnectionError, requests.Timeout):
                if attempt == 3:
                    raise
                time.sleep(1 + attempt)
                continue
            if r.status_code == 401:
                self._token = None
                continue
            return r
        return r

    def wait_for_dag(self, dag_id: str, timeout: float = 90) -> dict:
        """Wait until the dag-processor has parsed ``dag_id`` and the API serves it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._raise_if_died()
            r = self.api("GET", f"/dags/{dag_id}")
            if r.status_code == 200:
                return r.json()
            time.sleep(1)
        raise TimeoutError(
            f"[{self.name}] DAG {dag_id} not parsed after {timeout:.0f}s; see {self.home}/logs"
        )

    def trigger(self, dag_id: str, run_id: str | None = None, conf: dict | None = None) -> str:
        """Start a run of ``dag_id`` now; return its run id."""
        body = self._trigger_body(conf)
        if run_id:
            body["dag_run_id"] = run_id
        r = self.api("POST", f"/dags/{dag_id}/dagRuns", json=body)
        if r.status_code != 200:
            raise RuntimeError(f"[{self.name}] trigger {dag_id} failed: HTTP {r.status_code} {r.text[:300]}")
        return r.json()["dag_run_id"]

    @staticmethod
    def _trigger_body(conf: dict | None) -> dict:
        return {"logical_date": None, "conf": conf or {}}

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 120) -> dict:
        """Wait until the run finished (success or failed); return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._raise_if_died()
            r = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
            if r.status_code == 200 and r.json()["state"] in ("success", "failed"):
                return r.json()
            time.sleep(0.5)
        raise TimeoutError(f"[{self.name}] run {dag_id}/{run_id} not finished after {timeout:.0f}s")

    def dag_runs(self, dag_id: str, limit: int = 100) -> list[dict]:
        r = self.api("GET", f"/dags/{dag_id}/dagRuns", params={"order_by": self._runs_order, "limit": limit})
        r.raise_for_status()
        return r.json()["dag_runs"]

    def asset_events(self, uri: str, limit: int = 100, timeout: float = 30) -> list[dict]:
        """Recent events of ``uri``, newest first.

        Airflow 3.3.2 answers 500 while any listed event's created run is still queued with no
        start_date (apache/airflow#71360); that lasts milliseconds, so ask again until it passes.
        """
        asset_id = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if asset_id is None:
                assets = self.api("GET", "/assets", params={"uri_pattern": uri, "limit": 100}).json()[
                    "assets"
                ]
                asset_id = next((a["id"] for a in assets if a["uri"] == uri), None)
                if asset_id is None:
                    return []
            r = self.api(
                "GET",
                "/assets/events",
                params={"asset_id": asset_id, "order_by": "-timestamp", "limit": limit},
            )
            if r.status_code == 200:
                return r.json()["asset_events"]
            time.sleep(0.5)
        raise TimeoutError(f"[{self.name}] could not list events of {uri} (last HTTP {r.status_code})")

    def connection_json(self) -> str:
        """This deployment as an ``AIRFLOW_CONN_*`` value for another deployment or the CLI."""
        return json.dumps(
            {"conn_type": "xdeps_deployment", "host": self.url, "login": USERNAME, "password": self.password}
        )


def _stop_group(proc: subprocess.Popen, sig: int, timeout: float) -> None:
    """Signal the process group, wait, then SIGKILL whatever is left of the group."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        proc.wait()
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)  # children (LocalExecutor workers, uvicorn) too
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    # Return only once every member of the group is gone, not just its leader.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)

"""``TriggerDeploymentDagRunOperator``: a remote ``TriggerDagRunOperator`` that can wait (deferred).

The remote run id is derived from this task instance (dag, run, task, map index), so a retry of
this task finds its earlier run (HTTP 409) instead of starting a second one. The run id and the
remote run's URL go to XCom; the "Remote DAG run" extra link opens that run in the other
deployment's UI. Works on Airflow 2.10+ and 3.x.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Sequence
from typing import Any

from astro_xdeps.client.common import ui_run_url
from astro_xdeps.exceptions import ConfigError, DeploymentError, NotFoundError, TransientError
from astro_xdeps.sensors.deployment import check_sync
from astro_xdeps.triggers.deployment import (
    DEFAULT_CONN_ID,
    DeploymentDagRunTrigger,
    state_list,
    validate_states,
)
from astro_xdeps.version_compat import AirflowException, BaseOperator, BaseOperatorLink, XCom

XCOM_RUN_ID = "trigger_run_id"
XCOM_RUN_URL = "trigger_run_url"
_RUN_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.~:+-]")


def deterministic_run_id(dag_id: str, run_id: str, task_id: str, map_index: int | None) -> str:
    """The remote run id for one task instance: readable, valid as a run id, the same on every try."""
    index = -1 if map_index is None else int(map_index)
    digest = hashlib.sha256(f"{dag_id}\x00{run_id}\x00{task_id}\x00{index}".encode()).hexdigest()[:12]
    readable = _RUN_ID_UNSAFE.sub("_", f"xdeps__{dag_id}__{task_id}{'' if index < 0 else f'_{index}'}")
    return f"{readable[:200]}__{digest}"


class DeploymentDagRunLink(BaseOperatorLink):
    """Opens the triggered run in the other deployment's UI (URL recorded at trigger time)."""

    name = "Remote DAG run"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return XCom.get_value(ti_key=ti_key, key=XCOM_RUN_URL) or ""


class TriggerDeploymentDagRunOperator(BaseOperator):
    """Trigger a DAG in another deployment; optionally wait for it (deferred) and report its outcome.

    :param trigger_dag_id: the DAG in the other deployment (templated).
    :param xdeps_conn_id: connection to the other deployment.
    :param conf: the run's conf, a JSON-serialisable dict (templated).
    :param note: the run's note (templated).
    :param trigger_run_id: the remote run id (templated); default: derived from this task
        instance, so retries reuse the run.
    :param reset_dag_run: when that run id already exists, clear the existing run so it runs
        again (as Airflow's own operator does); default False: adopt it, start nothing new.
    :param wait_for_completion: wait until the remote run is in allowed or failed states.
    :param poke_interval: seconds between checks while waiting.
    :param allowed_states: remote run states that count as success (default ``["success"]``).
    :param failed_states: remote run states that fail this task (default ``["failed"]``).
    :param deferrable: wait in the triggerer (default True); else poll from the worker.
    """

    template_fields: Sequence[str] = ("trigger_dag_id", "trigger_run_id", "conf", "note")
    template_fields_renderers = {"conf": "py"}
    operator_extra_links = (DeploymentDagRunLink(),)
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        trigger_dag_id: str,
        xdeps_conn_id: str = DEFAULT_CONN_ID,
        conf: dict[str, Any] | None = None,
        note: str | None = None,
        trigger_run_id: str | None = None,
        reset_dag_run: bool = False,
        wait_for_completion: bool = False,
        poke_interval: float = 30.0,
        allowed_states: Sequence[str] | None = None,
        failed_states: Sequence[str] | None = None,
        deferrable: bool = True,
        missing_dag_timeout: float = 600.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        who = f"TriggerDeploymentDagRunOperator(task_id={self.task_id!r})"
        if not isinstance(trigger_dag_id, str) or not trigger_dag_id:
            raise ConfigError(f"{who}: trigger_dag_id must be the DAG id in the other deployment.")
        if conf is not None and not isinstance(conf, dict):
            raise ConfigError(f"{who}: conf must be a dict (JSON object), got {type(conf).__name__}.")
        if conf is not None:
            try:
                json.dumps(conf)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{who}: conf must be JSON-serialisable ({exc}).") from None
        if note is not None and not isinstance(note, str):
            raise ConfigError(f"{who}: note must be a string.")
        if not isinstance(poke_interval, (int, float)) or poke_interval <= 0:
            raise ConfigError(f"{who}: poke_interval must be a positive number of seconds.")
        if not isinstance(missing_dag_timeout, (int, float)) or missing_dag_timeout < 0:
            raise ConfigError(f"{who}: missing_dag_timeout must be zero or more seconds.")
        allowed = state_list(allowed_states, ["success"], "allowed_states", who)
        failed = state_list(failed_states, ["failed"], "failed_states", who)
        validate_states(allowed, failed, task_level=False, who=who)
        self.trigger_dag_id = trigger_dag_id
        self.xdeps_conn_id = xdeps_conn_id
        self.conf = conf
        self.note = note
        self.trigger_run_id = trigger_run_id
        self.reset_dag_run = reset_dag_run
        self.wait_for_completion = wait_for_completion
        self.poke_interval = float(poke_interval)
        self.allowed_states = allowed
        self.failed_states = failed
        self.deferrable = deferrable
        self.missing_dag_timeout = float(missing_dag_timeout)

    def execute(self, context: Any) -> str:
        from astro_xdeps.hooks.deployment import DeploymentHook

        ti = context["ti"]
        run_id = self.trigger_run_id or deterministic_run_id(
            ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", -1)
        )
        conf = self.conf or {}
        if not isinstance(conf, dict):
            raise AirflowException(f"conf rendered to {type(conf).__name__}; it must be a dict.")
        client = DeploymentHook(self.xdeps_conn_id).get_conn()
        try:
            result = client.trigger_dag_run(self.trigger_dag_id, run_id, conf=conf, note=self.note)
            if result.created:
                self.log.info("Triggered %s/%s in %s", self.trigger_dag_id, run_id, client.name)
            elif self.reset_dag_run:
                client.clear_dag_run(self.trigger_dag_id, run_id)
                self.log.info(
                    "Run %s/%s existed in %s; cleared it to run again",
                    self.trigger_dag_id,
                    run_id,
                    client.name,
                )
            else:
                self.log.info(
                    "Run %s/%s already exists in %s (an earlier try of this task started it); "
                    "not starting another",
                    self.trigger_dag_id,
                    run_id,
                    client.name,
                )
            url = ui_run_url(client.config.base_url, client.api_version, self.trigger_dag_id, run_id)
        except DeploymentError as exc:
            raise AirflowException(str(exc)) from None
        finally:
            client.close()
        ti.xcom_push(key=XCOM_RUN_ID, value=run_id)
        ti.xcom_push(key=XCOM_RUN_URL, value=url)
        self.log.info("Remote run: %s", url)
        if not self.wait_for_completion:
            return run_id
        if self.deferrable:
            self.defer(
                trigger=DeploymentDagRunTrigger(
                    dag_id=self.trigger_dag_id,
                    xdeps_conn_id=self.xdeps_conn_id,
                    run_id=run_id,
                    allowed_states=self.allowed_states,
                    failed_states=self.failed_states,
                    poll_interval=self.poke_interval,
                    missing_dag_timeout=self.missing_dag_timeout,
                ),
                method_name="execute_complete",
            )
        return self._wait_here(run_id)

    def _wait_here(self, run_id: str) -> str:
        """``deferrable=False``: poll from the worker until the remote run ends."""
        from astro_xdeps.hooks.deployment import DeploymentHook

        client = DeploymentHook(self.xdeps_conn_id).get_conn()
        try:
            while True:
                try:
                    result = check_sync(
                        client,
                        self.trigger_dag_id,
                        {"run_id": run_id},
                        task_id=None,
                        map_index=None,
                        allowed=self.allowed_states,
                        failed=self.failed_states,
                    )
                except (TransientError, NotFoundError) as exc:
                    self.log.warning("Still waiting on %s: %s", run_id, exc)
                    result = None
                except DeploymentError as exc:
                    raise AirflowException(str(exc)) from None
                if result is not None:
                    return self._finish(result)
                time.sleep(self.poke_interval)
        finally:
            client.close()

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> str:
        return self._finish(event or {})

    def _finish(self, result: dict[str, Any]) -> str:
        if result.get("status") == "success":
            self.log.info("%s", result.get("message"))
            return result["run_id"]
        raise AirflowException(result.get("message") or f"The trigger ended without an answer: {result!r}")

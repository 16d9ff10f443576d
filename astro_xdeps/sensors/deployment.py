"""``DeploymentDagRunSensor``: a remote ``ExternalTaskSensor`` — wait on a DAG run in another deployment.

Deferrable by default: the wait runs in the triggerer (:class:`DeploymentDagRunTrigger`), no
worker slot is held. ``deferrable=False`` pokes with the sync client, in ``mode="poke"`` or
``"reschedule"``. Works on Airflow 2.10+ and 3.x (the remote side may be either).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Sequence
from typing import Any

from astro_xdeps.client import DeploymentClient
from astro_xdeps.client.common import ui_run_url
from astro_xdeps.exceptions import ConfigError, DeploymentError, NotFoundError, TransientError
from astro_xdeps.triggers.deployment import (
    DEFAULT_CONN_ID,
    DeploymentDagRunTrigger,
    describe,
    judge,
    state_list,
    validate_states,
)
from astro_xdeps.version_compat import AirflowException, BaseSensorOperator

TASK_FAILED_STATES = ["failed", "upstream_failed"]


def find_run_sync(client: DeploymentClient, dag_id: str, selector: dict[str, Any]) -> dict[str, Any] | None:
    """The remote run ``selector`` names (see :class:`DeploymentDagRunTrigger`), or None if not there yet.

    Raises :class:`NotFoundError` only when the DAG itself is missing.
    """
    from astro_xdeps.forwarding.pull import parse_ts

    if selector.get("run_id"):
        try:
            return client.get_dag_run(dag_id, selector["run_id"])
        except NotFoundError:
            client.get_dag(dag_id)
            return None
    query: dict[str, Any] = {}
    if selector.get("logical_date"):
        query["logical_date"] = parse_ts(selector["logical_date"])
    if selector.get("run_after_gte"):
        query["run_after_gte"] = parse_ts(selector["run_after_gte"])
    runs = client.find_dag_runs(dag_id, **query)
    return runs[0] if runs else None


def check_sync(
    client: DeploymentClient,
    dag_id: str,
    selector: dict[str, Any],
    *,
    task_id: str | None,
    map_index: int | None,
    allowed: Sequence[str],
    failed: Sequence[str],
) -> dict[str, Any] | None:
    """One poll with the sync client; the same answer shape as the trigger's events."""
    run = find_run_sync(client, dag_id, selector)
    if run is None:
        return None
    run_id = run["dag_run_id"]
    state = run.get("state")
    if task_id:
        try:
            state = client.get_task_instance(dag_id, run_id, task_id, map_index).get("state")
        except NotFoundError:
            state = None
    verdict = judge(state, allowed, failed)
    if verdict is None:
        return None
    url = ui_run_url(client.config.base_url, client.api_version, dag_id, run_id)
    what = describe(dag_id, run_id, task_id, map_index)
    return {
        "status": verdict,
        "state": state,
        "run_id": run_id,
        "url": url,
        "message": f"{what} in {client.name} is {state}: {url}",
    }


def _as_aware(value: Any, who: str, name: str) -> datetime.datetime:
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"{who}: {name} {value!r} is not an ISO date-time.") from None
    if not isinstance(value, datetime.datetime):
        raise ConfigError(f"{who}: {name} must be a datetime or an ISO string, got {type(value).__name__}.")
    if value.tzinfo is None:
        raise ConfigError(f"{who}: {name} {value.isoformat()} has no time zone; use an aware datetime.")
    return value


class DeploymentDagRunSensor(BaseSensorOperator):
    """Wait until a DAG run — or one task, mapped too — in another deployment reaches an allowed state.

    Which remote run (pick at most one; default: the run with this run's logical date):

    :param external_run_id: an explicit run id (templated).
    :param execution_delta: the run at this run's logical date minus this timedelta.
    :param execution_date_fn: ``fn(logical_date, context) -> datetime``: the logical date to look for.
    :param latest_after: the newest run whose ``run_after`` is at or after this time (datetime or
        ISO string, templated).

    :param external_dag_id: the DAG in the other deployment (templated).
    :param external_task_id: wait on this task instead of the whole run (templated).
    :param map_index: the mapped task instance to wait on.
    :param xdeps_conn_id: connection to the other deployment.
    :param allowed_states: states that end the wait successfully (default ``["success"]``).
    :param failed_states: states that fail at once, with the remote run's URL (default
        ``["failed"]``; for a task also ``"upstream_failed"``).
    :param missing_dag_timeout: seconds a missing DAG (deploy window) is waited out before failing.
    :param deferrable: wait in the triggerer (default True).
    """

    template_fields: Sequence[str] = (
        "external_dag_id",
        "external_task_id",
        "external_run_id",
        "latest_after",
    )
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        external_dag_id: str,
        xdeps_conn_id: str = DEFAULT_CONN_ID,
        external_task_id: str | None = None,
        map_index: int | None = None,
        external_run_id: str | None = None,
        execution_delta: datetime.timedelta | None = None,
        execution_date_fn: Callable[..., datetime.datetime] | None = None,
        latest_after: datetime.datetime | str | None = None,
        allowed_states: Sequence[str] | None = None,
        failed_states: Sequence[str] | None = None,
        missing_dag_timeout: float = 600.0,
        deferrable: bool = True,
        poke_interval: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        who = f"DeploymentDagRunSensor(task_id={self.task_id!r})"
        if not isinstance(external_dag_id, str) or not external_dag_id:
            raise ConfigError(f"{who}: external_dag_id must be the DAG id in the other deployment.")
        chosen = [
            n
            for n, v in (
                ("external_run_id", external_run_id),
                ("execution_delta", execution_delta),
                ("execution_date_fn", execution_date_fn),
                ("latest_after", latest_after),
            )
            if v is not None
        ]
        if len(chosen) > 1:
            raise ConfigError(f"{who}: pass only one of {', '.join(chosen)} to say which remote run.")
        if execution_delta is not None and not isinstance(execution_delta, datetime.timedelta):
            raise ConfigError(f"{who}: execution_delta must be a datetime.timedelta.")
        if execution_date_fn is not None and not callable(execution_date_fn):
            raise ConfigError(
                f"{who}: execution_date_fn must be callable (logical_date, context) -> datetime."
            )
        if isinstance(latest_after, datetime.datetime) or (
            isinstance(latest_after, str) and "{{" not in latest_after
        ):
            _as_aware(latest_after, who, "latest_after")
        if map_index is not None and (not isinstance(map_index, int) or map_index < 0):
            raise ConfigError(f"{who}: map_index must be an integer >= 0.")
        if map_index is not None and not external_task_id:
            raise ConfigError(f"{who}: map_index needs external_task_id (the mapped task).")
        task_level = bool(external_task_id)
        allowed = state_list(allowed_states, ["success"], "allowed_states", who)
        failed = state_list(
            failed_states, TASK_FAILED_STATES if task_level else ["failed"], "failed_states", who
        )
        validate_states(allowed, failed, task_level=task_level, who=who)
        if not isinstance(missing_dag_timeout, (int, float)) or missing_dag_timeout < 0:
            raise ConfigError(f"{who}: missing_dag_timeout must be zero or more seconds.")
        self.external_dag_id = external_dag_id
        self.xdeps_conn_id = xdeps_conn_id
        self.external_task_id = external_task_id
        self.map_index = map_index
        self.external_run_id = external_run_id
        self.execution_delta = execution_delta
        self.execution_date_fn = execution_date_fn
        self.latest_after = latest_after
        self.allowed_states = allowed
        self.failed_states = failed
        self.missing_dag_timeout = float(missing_dag_timeout)
        self.deferrable = deferrable
        self._missing_since: float | None = None

    # -- which run ---------------------------------------------------------------------------
    def selector(self, context: Any) -> dict[str, Any]:
        """The remote run to wait on, as trigger arguments (ISO strings)."""
        who = f"DeploymentDagRunSensor(task_id={self.task_id!r})"
        if self.external_run_id:
            return {"run_id": str(self.external_run_id)}
        if self.latest_after is not None:
            return {"run_after_gte": _as_aware(self.latest_after, who, "latest_after").isoformat()}
        logical_date = context.get("logical_date")
        if logical_date is None:
            raise AirflowException(
                f"{who}: this DAG run has no logical date (a manual or asset-triggered run in Airflow 3), "
                "so 'the same logical date' names no remote run. Pass external_run_id or latest_after."
            )
        if self.execution_date_fn is not None:
            target = self.execution_date_fn(logical_date, context)
        elif self.execution_delta is not None:
            target = logical_date - self.execution_delta
        else:
            target = logical_date
        return {"logical_date": _as_aware(target, who, "the logical date").isoformat()}

    # -- deferrable path ---------------------------------------------------------------------
    def execute(self, context: Any) -> Any:
        if not self.deferrable:
            return super().execute(context)
        trigger = DeploymentDagRunTrigger(
            dag_id=self.external_dag_id,
            xdeps_conn_id=self.xdeps_conn_id,
            external_task_id=self.external_task_id,
            map_index=self.map_index,
            allowed_states=self.allowed_states,
            failed_states=self.failed_states,
            poll_interval=self.poke_interval,
            missing_dag_timeout=self.missing_dag_timeout,
            **self.selector(context),
        )
        timeout = datetime.timedelta(seconds=self.timeout) if self.timeout else None
        self.defer(trigger=trigger, method_name="execute_complete", timeout=timeout)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> Any:
        event = event or {}
        if event.get("status") == "success":
            self.log.info("%s", event.get("message"))
            return event.get("run_id")
        raise AirflowException(event.get("message") or f"The trigger ended without an answer: {event!r}")

    # -- poke / reschedule path --------------------------------------------------------------
    def poke(self, context: Any) -> bool:
        from astro_xdeps.hooks.deployment import DeploymentHook

        client = DeploymentHook(self.xdeps_conn_id).get_conn()
        try:
            result = check_sync(
                client,
                self.external_dag_id,
                self.selector(context),
                task_id=self.external_task_id,
                map_index=self.map_index,
                allowed=self.allowed_states,
                failed=self.failed_states,
            )
            self._missing_since = None
        except NotFoundError as exc:
            now = time.monotonic()
            self._missing_since = self._missing_since or now
            if now - self._missing_since >= self.missing_dag_timeout:
                raise AirflowException(
                    f"DAG {self.external_dag_id} is missing in {client.name} for "
                    f"{self.missing_dag_timeout:.0f}s: {exc}"
                ) from None
            self.log.info(
                "DAG %s not found in %s (deploy window?); waiting", self.external_dag_id, client.name
            )
            return False
        except TransientError as exc:
            self.log.warning("%s is not answering (%s); still waiting", client.name, exc)
            return False
        except DeploymentError as exc:
            raise AirflowException(str(exc)) from None
        finally:
            client.close()
        if result is None:
            return False
        if result["status"] == "failed":
            raise AirflowException(result["message"])
        self.log.info("%s", result["message"])
        return True

"""Triggers that watch another deployment from this one's triggerer (no worker slot, no upstream install).

- :class:`DeploymentDagRunTrigger` waits until a remote DAG run, or one task of it, reaches an
  allowed or a failed state. The sensor and the trigger-and-wait operator defer to it.
- :class:`DeploymentAssetEventTrigger` (Airflow 3.3+, for ``AssetWatcher``) turns each new event
  of an upstream asset into one event here: pull-mode forwarding.

Both use :class:`~astro_xdeps.client.aio.AsyncDeploymentClient` (httpx): the same auth, retry
classification, ``Retry-After`` handling, timeouts and secret scrubbing as the sync client.
A remote deployment that is unreachable or answers 5xx (a restart, a deploy) is waited out;
401/403 and other 4xx end the wait at once with a message saying what to fix.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from astro_xdeps.client import DeploymentConfig
from astro_xdeps.client.aio import AsyncDeploymentClient
from astro_xdeps.client.common import ui_run_url
from astro_xdeps.exceptions import AuthError, ConfigError, DeploymentError, NotFoundError, TransientError
from astro_xdeps.forwarding import pull
from astro_xdeps.version_compat import AIRFLOW_V_3_3_PLUS, BaseEventTrigger, BaseTrigger, TriggerEvent

log = logging.getLogger(__name__)

DEFAULT_CONN_ID = "xdeps_default"


# -- pure decisions, shared with the sensor's and operator's sync paths ----------------------------
def judge(state: str | None, allowed: Sequence[str], failed: Sequence[str]) -> str | None:
    """``"success"``, ``"failed"`` or None (keep waiting) for a remote state."""
    if state is None:
        return None
    if state in allowed:
        return "success"
    if state in failed:
        return "failed"
    return None


def describe(dag_id: str, run_id: str, task_id: str | None, map_index: int | None) -> str:
    what = f"DAG run {dag_id}/{run_id}"
    if task_id:
        what = (
            f"task {task_id}{f'[{map_index}]' if map_index is not None and map_index >= 0 else ''} of {what}"
        )
    return what


def validate_states(allowed: Sequence[str], failed: Sequence[str], *, task_level: bool, who: str) -> None:
    """Bad states are a DAG-parse-time error, not a run-time surprise."""
    from astro_xdeps.version_compat import AIRFLOW_V_3_0_PLUS

    if AIRFLOW_V_3_0_PLUS:
        from airflow.utils.state import DagRunState, TaskInstanceState
    else:  # pragma: no cover - Airflow 2.x
        from airflow.utils.state import DagRunState, TaskInstanceState  # type: ignore[no-redef]
    known = {s.value for s in (TaskInstanceState if task_level else DagRunState)}
    kind = "task" if task_level else "DAG run"
    if isinstance(allowed, str) or isinstance(failed, str):
        raise ConfigError(f"{who}: allowed_states and failed_states must be lists of states, not a string.")
    if not allowed:
        raise ConfigError(f"{who}: allowed_states must name at least one {kind} state.")
    for name, states in (("allowed_states", allowed), ("failed_states", failed)):
        bad = sorted(set(states) - known)
        if bad:
            raise ConfigError(f"{who}: {name} has unknown {kind} state(s) {bad}; known: {sorted(known)}.")
    both = sorted(set(allowed) & set(failed))
    if both:
        raise ConfigError(f"{who}: state(s) {both} are both allowed and failed; pick one.")


def state_list(value: Sequence[str] | None, default: Sequence[str], name: str, who: str) -> list[str]:
    """A states argument as a list; a bare string (``"success"``) is a mistake worth naming."""
    if value is None:
        return list(default)
    if isinstance(value, str):
        raise ConfigError(f"{who}: {name} must be a list of states, not a string (write [{value!r}]).")
    return list(value)


def resolve_config(conn_id: str) -> DeploymentConfig:
    """The connection (or ``DEPLOYMENT_URL``/``API_TOKEN``) as a config; sync, call via a thread."""
    from astro_xdeps.hooks.deployment import DeploymentHook

    return DeploymentHook(conn_id).get_config()


class DeploymentDagRunTrigger(BaseTrigger):
    """Poll a remote DAG run (or task instance) until it is in ``allowed_states`` or ``failed_states``.

    Which run: ``run_id``; else the run at ``logical_date`` (ISO); else the newest run whose
    ``run_after`` is at or after ``run_after_gte`` (ISO). With ``external_task_id``, the state
    of that task instance (``map_index`` for a mapped one) counts. Fires one event:
    ``{"status": "success"|"failed"|"error", "message", "run_id", "state", "url"}``.
    """

    def __init__(
        self,
        *,
        dag_id: str,
        xdeps_conn_id: str = DEFAULT_CONN_ID,
        run_id: str | None = None,
        logical_date: str | None = None,
        run_after_gte: str | None = None,
        external_task_id: str | None = None,
        map_index: int | None = None,
        allowed_states: Sequence[str] = ("success",),
        failed_states: Sequence[str] = ("failed",),
        poll_interval: float = 30.0,
        missing_dag_timeout: float = 600.0,
    ) -> None:
        super().__init__()
        self.dag_id = dag_id
        self.xdeps_conn_id = xdeps_conn_id
        self.run_id = run_id
        self.logical_date = logical_date
        self.run_after_gte = run_after_gte
        # Not ``task_id``: BaseTrigger sets that to the deferring task's own id in the triggerer.
        self.external_task_id = external_task_id
        self.map_index = map_index
        self.allowed_states = list(allowed_states)
        self.failed_states = list(failed_states)
        self.poll_interval = float(poll_interval)
        self.missing_dag_timeout = float(missing_dag_timeout)
        self.polls = 0  # requests rounds made; for tests and logs
        self._last_state: str | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "dag_id": self.dag_id,
                "xdeps_conn_id": self.xdeps_conn_id,
                "run_id": self.run_id,
                "logical_date": self.logical_date,
                "run_after_gte": self.run_after_gte,
                "external_task_id": self.external_task_id,
                "map_index": self.map_index,
                "allowed_states": self.allowed_states,
                "failed_states": self.failed_states,
                "poll_interval": self.poll_interval,
                "missing_dag_timeout": self.missing_dag_timeout,
            },
        )

    def _client(self, config: DeploymentConfig) -> AsyncDeploymentClient:
        """A new client per run() (the loop that uses it creates it); tests override this."""
        return AsyncDeploymentClient(config)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            config = await asyncio.to_thread(resolve_config, self.xdeps_conn_id)
        except ConfigError as exc:
            yield TriggerEvent({"status": "error", "message": str(exc)})
            return
        client = self._client(config)
        missing_since: float | None = None
        log.info(
            "Waiting on DAG %s in %s (%s) every %.0fs",
            self.dag_id,
            config.name,
            self.run_id or self.logical_date or f"newest run after {self.run_after_gte}",
            self.poll_interval,
        )
        try:
            while True:
                self.polls += 1
                try:
                    result = await self.check(client)
                    missing_since = None
                except NotFoundError as exc:
                    # The DAG itself is missing: a deploy window (DAG-only deploys remove DAGs).
                    now = time.monotonic()
                    missing_since = missing_since or now
                    if now - missing_since >= self.missing_dag_timeout:
                        yield TriggerEvent(
                            {
                                "status": "error",
                                "message": f"DAG {self.dag_id} is missing in {config.name} for "
                                f"{self.missing_dag_timeout:.0f}s: {exc}",
                            }
                        )
                        return
                    log.info("DAG %s not found in %s (deploy window?); waiting", self.dag_id, config.name)
                    result = None
                except TransientError as exc:
                    log.warning("%s is not answering (%s); still waiting", config.name, exc)
                    result = None
                except DeploymentError as exc:  # 401/403 and other 4xx: waiting will not fix it
                    yield TriggerEvent({"status": "error", "message": str(exc)})
                    return
                if result is not None:
                    yield TriggerEvent(result)
                    return
                await asyncio.sleep(self.poll_interval)
        finally:
            await client.aclose()

    async def check(self, client: AsyncDeploymentClient) -> dict[str, Any] | None:
        """One poll. None while waiting; raises NotFoundError only when the DAG is missing."""
        run = await self._find_run(client)
        if run is None:
            return None
        run_id = run["dag_run_id"]
        state = run.get("state")
        if self.external_task_id:
            try:
                ti = await client.get_task_instance(
                    self.dag_id, run_id, self.external_task_id, self.map_index
                )
                state = ti.get("state")
            except NotFoundError:
                state = None  # the task instance is not created yet (or not expanded yet)
        if state != self._last_state:
            log.info(
                "%s in %s is %s",
                describe(self.dag_id, run_id, self.external_task_id, self.map_index),
                client.name,
                state,
            )
            self._last_state = state
        verdict = judge(state, self.allowed_states, self.failed_states)
        if verdict is None:
            return None
        url = ui_run_url(client.config.base_url, await client.api_version(), self.dag_id, run_id)
        what = describe(self.dag_id, run_id, self.external_task_id, self.map_index)
        return {
            "status": verdict,
            "state": state,
            "run_id": run_id,
            "url": url,
            "message": f"{what} in {client.name} is {state}: {url}",
        }

    async def _find_run(self, client: AsyncDeploymentClient) -> dict[str, Any] | None:
        if self.run_id:
            try:
                return await client.get_dag_run(self.dag_id, self.run_id)
            except NotFoundError:
                await client.get_dag(self.dag_id)  # raises NotFoundError when the DAG is missing
                return None  # the DAG is there, the run not yet
        query: dict[str, Any] = {}
        if self.logical_date:
            query["logical_date"] = pull.parse_ts(self.logical_date)
        if self.run_after_gte:
            query["run_after_gte"] = pull.parse_ts(self.run_after_gte)
        runs = await client.find_dag_runs(self.dag_id, **query)
        return runs[0] if runs else None


class DeploymentAssetEventTrigger(BaseEventTrigger):
    """Watch an upstream deployment's asset ``uri``; each new upstream event becomes one event here.

    Use in ``Asset(..., watchers=[AssetWatcher(name=..., trigger=DeploymentAssetEventTrigger(...))])``.
    The downstream event's ``extra["payload"]`` holds the provenance (``xdeps_event_id``,
    ``xdeps.source``: upstream deployment, event id, uri, DAG/task/run, map index, partition
    key, original extra). The watermark lives in Airflow 3.3's asset state store and moves in
    the same transaction as each stored event, so a triggerer restart (even SIGKILL) neither
    misses nor repeats an event.

    :param uri: the asset's uri in the upstream deployment.
    :param xdeps_conn_id: connection to the upstream deployment.
    :param poll_interval: seconds between polls.
    :param lookback: seconds an upstream event may be committed after a newer-stamped one and
        still be caught (see :mod:`astro_xdeps.forwarding.pull`).
    :param start_from: ``"now"`` (default): only events after the watcher first ran;
        ``"beginning"``: also the events the upstream already has.
    """

    def __init__(
        self,
        *,
        uri: str,
        xdeps_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 30.0,
        lookback: float = 300.0,
        start_from: str = "now",
    ) -> None:
        super().__init__()
        who = f"DeploymentAssetEventTrigger(uri={uri!r})"
        if not AIRFLOW_V_3_3_PLUS:
            raise ConfigError(
                f"{who} needs Airflow 3.3+ (its watermark lives in the asset state store). On "
                "older Airflow, wait with DeploymentDagRunSensor or forward with astro-xdeps upstream."
            )
        if not isinstance(uri, str) or not uri.strip():
            raise ConfigError(f"{who}: uri must be the upstream asset's uri, a non-empty string.")
        if not isinstance(xdeps_conn_id, str) or not xdeps_conn_id:
            raise ConfigError(f"{who}: xdeps_conn_id must name a connection to the upstream deployment.")
        if not (isinstance(poll_interval, (int, float)) and poll_interval > 0):
            raise ConfigError(f"{who}: poll_interval must be a positive number of seconds.")
        if not (isinstance(lookback, (int, float)) and lookback >= 0):
            raise ConfigError(f"{who}: lookback must be zero or more seconds.")
        if start_from not in ("now", "beginning"):
            raise ConfigError(f"{who}: start_from must be 'now' or 'beginning', got {start_from!r}.")
        self.uri = uri
        self.xdeps_conn_id = xdeps_conn_id
        self.poll_interval = float(poll_interval)
        self.lookback = float(lookback)
        self.start_from = start_from
        self.polls = 0

    @property
    def state_key(self) -> str:
        return pull.state_key(self.xdeps_conn_id, self.uri)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "uri": self.uri,
                "xdeps_conn_id": self.xdeps_conn_id,
                "poll_interval": self.poll_interval,
                "lookback": self.lookback,
                "start_from": self.start_from,
            },
        )

    def _client(self, config: DeploymentConfig) -> AsyncDeploymentClient:
        return AsyncDeploymentClient(config)

    # -- the durable watermark (asset state store of every asset this trigger feeds) -------------
    def _accessors(self) -> list[Any]:
        store = self.asset_state_store
        if store is None:
            return []
        many = [*getattr(store, "_by_name", {}).values(), *getattr(store, "_by_uri", {}).values()]
        return many or [store]

    async def load_watermark(self) -> pull.Watermark | None:
        for accessor in self._accessors():
            mark = pull.Watermark.from_json(await accessor.aget(self.state_key, None))
            if mark is not None:
                return mark
        return None

    async def save_watermark(self, mark: pull.Watermark) -> None:
        for accessor in self._accessors():
            await accessor.aset(self.state_key, mark.to_json())

    async def run(self) -> AsyncIterator[TriggerEvent]:
        config = await asyncio.to_thread(resolve_config, self.xdeps_conn_id)
        client = self._client(config)
        upstream = config.base_url
        if not self._accessors():
            log.warning(
                "No asset state store given to %s (not run as an asset watcher?): its watermark "
                "is kept in memory only",
                self.state_key,
            )
        try:
            mark = await self.load_watermark()
            while mark is None:
                mark = await self._first_watermark(client)
                if mark is None:
                    await asyncio.sleep(self.poll_interval)
                    continue
                await self.save_watermark(mark)
                log.info("Watching %s at %s from %s", self.uri, upstream, mark.since or "the beginning")
            while True:
                self.polls += 1
                try:
                    events = await client.asset_events_since(self.uri, mark.query_since(self.lookback))
                except TransientError as exc:
                    log.warning("%s is not answering (%s); polling again", config.name, exc)
                    events = []
                except NotFoundError as exc:
                    log.warning("%s; polling again (the upstream DAG may be deploying)", exc)
                    events = []
                # AuthError and other 4xx propagate: the watcher fails visibly in the triggerer log.
                for event in pull.new_events(mark, events, self.lookback):
                    mark = mark.advance(event, self.lookback)
                    payload = pull.pulled_payload(
                        event, upstream=upstream, uri=self.uri, key=self.state_key, mark_after=mark
                    )
                    log.info("Upstream event %s of %s at %s -> event here", event["id"], self.uri, upstream)
                    yield TriggerEvent(payload)
                await asyncio.sleep(self.poll_interval)
        finally:
            await client.aclose()

    async def _first_watermark(self, client: AsyncDeploymentClient) -> pull.Watermark | None:
        """With no stored watermark: start after what the upstream already has (or before it)."""
        if self.start_from == "beginning":
            return pull.Watermark()
        try:
            events = await client.recent_asset_events(self.uri)
        except (TransientError, NotFoundError) as exc:
            log.warning("Cannot read %s upstream yet (%s); retrying", self.uri, exc)
            return None
        except AuthError:
            raise
        return pull.baseline(events, self.lookback)

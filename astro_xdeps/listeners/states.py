"""Feed the relay's rules straight from the upstream scheduler: no alerting tool in between.

``on_dag_run_success/failed`` run in the scheduler (and in the api-server when a user sets a
run's state), ``on_task_instance_failed`` in the task's process. Each builds a StateEvent,
lets the relay engine write the resulting actions to the outbox, and returns. Events get a
deterministic id (deployment, type, DAG, run, task, try), so a hook that fires twice for the
same state change has no second effect. Active only when ``[astro_xdeps] relay_config`` is set.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from airflow.listeners import hookimpl

from astro_xdeps import runtime, settings
from astro_xdeps.outbox import pacing
from astro_xdeps.state_events import MAX_MESSAGE_CHARS, SCHEDULER_SOURCE, StateEvent, state_change_id

log = logging.getLogger(__name__)


def state_event(
    event_type: str,
    *,
    dag_id: str,
    run_id: str | None,
    deployment: str,
    occurred_at: datetime | None,
    task_id: str | None = None,
    try_number: int | None = None,
    message: str | None = None,
) -> StateEvent:
    """A StateEvent with an id that is the same every time this state change is reported."""
    event_id = state_change_id("af", deployment, event_type, dag_id, run_id, task_id, try_number)
    attributes: dict[str, Any] = {"source": "listener"}
    if try_number is not None:
        attributes["try_number"] = try_number
    return StateEvent(
        id=event_id,
        type=event_type,
        dag_id=dag_id,
        run_id=run_id,
        task_id=task_id,
        deployment=deployment,
        occurred_at=occurred_at or datetime.now(timezone.utc),
        message=(message or None) and str(message)[:MAX_MESSAGE_CHARS],
        attributes=attributes,
        source=SCHEDULER_SOURCE,  # its own namespace: no HTTP source can post these ids
    )


def relay(event: StateEvent) -> None:
    """Evaluate the rules for ``event`` and enqueue; never raises.

    The delivery worker's threads in this process wait meanwhile (:mod:`astro_xdeps.outbox.pacing`).
    """
    with pacing.foreground():
        _relay(event)


def _relay(event: StateEvent) -> None:
    try:
        engine = runtime.relay_engine()
        if engine is None:
            return
        result = engine.ingest(event)
        if result.new_actions:
            runtime.ensure_worker()
    except Exception:
        log.exception("astro-xdeps could not relay %s of %s", event.type, event.dag_id)


def _from_dag_run(event_type: str, dag_run: Any, msg: Any) -> None:
    if not settings.relay_config():
        return
    try:
        event = state_event(
            event_type,
            dag_id=dag_run.dag_id,
            run_id=dag_run.run_id,
            deployment=settings.deployment_name(),
            occurred_at=getattr(dag_run, "end_date", None),
            message=msg if isinstance(msg, str) else None,
        )
    except Exception:
        log.exception("astro-xdeps could not read a DAG run")
        return
    relay(event)


class StateListener:
    @hookimpl
    def on_dag_run_success(self, dag_run: Any, msg: str) -> None:
        _from_dag_run("dag_run.success", dag_run, msg)

    @hookimpl
    def on_dag_run_failed(self, dag_run: Any, msg: str) -> None:
        _from_dag_run("dag_run.failed", dag_run, msg)

    @hookimpl
    def on_task_instance_failed(self, previous_state: Any, task_instance: Any, error: Any = None) -> None:
        if not settings.relay_config():
            return
        try:
            event = state_event(
                "task_instance.failed",
                dag_id=task_instance.dag_id,
                run_id=task_instance.run_id,
                task_id=task_instance.task_id,
                try_number=getattr(task_instance, "try_number", None),
                deployment=settings.deployment_name(),
                occurred_at=getattr(task_instance, "end_date", None),
                message=str(error)[:2000] if error else None,
            )
        except Exception:
            log.exception("astro-xdeps could not read a task instance")
            return
        relay(event)


state_listener = StateListener()

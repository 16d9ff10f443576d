"""Per-process state: the outbox, the forwarding plan, the delivery worker. Created lazily, once.

Listeners call :func:`forwarding_plan` and :func:`get_outbox` on Airflow's hot path, so both
are cached for the life of the process (Airflow's config does not change under a running
process either). :func:`reset` clears everything, for tests and after a fork.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from astro_xdeps import settings
from astro_xdeps.forwarding.routes import (
    Route,
    all_targets,
    default_routes,
    load_routes_file,
    load_routes_text,
)
from astro_xdeps.outbox.store import Outbox

if TYPE_CHECKING:  # imported where used: the plugin loads in every Airflow process
    from astro_xdeps.outbox.worker import DeliveryWorker
    from astro_xdeps.relay.deadlines import DeadlineClock
    from astro_xdeps.relay.engine import RelayEngine

log = logging.getLogger(__name__)

_lock = threading.RLock()
_pid: int | None = None
_outbox: Outbox | None = None
_worker: DeliveryWorker | None = None
_plan: ForwardingPlan | None = None
_relay: RelayEngine | None = None
_clock: DeadlineClock | None = None
# The process that loaded the plugin. Children forked from it (the executor's workers and task
# processes) keep its command line, so process_role() alone cannot tell them apart.
_IMPORT_PID = os.getpid()
# Set once this process is known to run a task; kept across fork (a task's children are tasks too).
_in_task = False
# The lifecycle marker each Airflow version passes to on_starting in a task process.
_TASK_MARKERS = frozenset({"TaskCommandMarker", "TaskRunnerMarker"})


@dataclass(frozen=True)
class ForwardingPlan:
    """Everything the asset listener needs to decide, without I/O, where an event goes."""

    enabled: bool
    routes: tuple[Route, ...]
    deployment: str
    max_hops: int
    reason: str


def build_forwarding_plan() -> ForwardingPlan:
    """Read the options once. Raises :class:`ConfigError` on invalid routes."""
    conn_id = settings.get("conn_id")
    routes: list[Route] = []
    if settings.get("routes"):
        routes += load_routes_text(settings.get("routes"), source="[astro_xdeps] routes")
    if settings.get("routes_file"):
        routes += load_routes_file(settings.get("routes_file"))
    mode = settings.get("forward_assets").lower()
    if routes:
        reason = f"{len(routes)} route(s) to {', '.join(sorted(all_targets(routes)))}"
    else:
        routes = default_routes(conn_id)
        reason = f"every asset to {conn_id}"
    if mode in ("true", "1", "yes"):
        enabled = True
    elif mode in ("false", "0", "no"):
        enabled, reason = False, "forward_assets is false"
    elif mode == "auto":
        explicit = bool(settings.get("routes") or settings.get("routes_file"))
        env_conn = f"AIRFLOW_CONN_{conn_id.upper()}" in os.environ
        env_url = bool(os.environ.get("DEPLOYMENT_URL"))
        enabled = explicit or env_conn or env_url
        if not enabled:
            reason = (
                "no routes, no DEPLOYMENT_URL and no AIRFLOW_CONN_* for the default connection "
                "(set forward_assets=true to use a connection stored in the metadata DB)"
            )
    else:
        from astro_xdeps.exceptions import ConfigError

        raise ConfigError(f"[astro_xdeps] forward_assets must be auto, true or false, got {mode!r}.")
    return ForwardingPlan(
        enabled=enabled,
        routes=tuple(routes),
        deployment=settings.deployment_name(),
        max_hops=settings.get_int("max_hops"),
        reason=reason,
    )


def _check_fork() -> None:
    global _pid, _outbox, _worker, _plan, _relay, _clock
    if _pid != os.getpid():
        # A forked child inherits neither the worker thread nor safe DB connections.
        _pid, _outbox, _worker, _plan, _relay, _clock = os.getpid(), None, None, None, None, None


def forwarding_plan() -> ForwardingPlan:
    global _plan
    with _lock:
        _check_fork()
        if _plan is None:
            _plan = build_forwarding_plan()
            log.info("astro-xdeps asset forwarding: %s (%s)", "on" if _plan.enabled else "off", _plan.reason)
        return _plan


def get_outbox() -> Outbox:
    global _outbox
    with _lock:
        _check_fork()
        if _outbox is None:
            _outbox = Outbox.from_url(settings.outbox_url())
        return _outbox


def relay_engine() -> RelayEngine | None:
    """The relay engine of ``[astro_xdeps] relay_config``, or None when no relay is configured."""
    global _relay
    path = settings.get("relay_config")
    if not path:
        return None
    with _lock:
        _check_fork()
        if _relay is None:
            from astro_xdeps.relay.config import load_config
            from astro_xdeps.relay.engine import RelayEngine

            _relay = RelayEngine(load_config(path), get_outbox())
            log.info("astro-xdeps relay: %d rule(s) from %s", len(_relay.config.rules), path)
        return _relay


def get_worker() -> DeliveryWorker:
    global _worker
    with _lock:
        _check_fork()
        if _worker is None:
            from astro_xdeps.outbox.worker import DeliveryWorker

            _worker = DeliveryWorker(
                get_outbox(),
                concurrency=settings.get_int("target_concurrency"),
                retry_horizon=float(settings.get_int("retry_horizon")),
                backoff_max=float(settings.get_int("retry_max_delay")),
                purge_after=float(settings.get_int("delivered_retention")),
            )
        return _worker


def ensure_worker() -> DeliveryWorker | None:
    """Start this process's delivery thread unless configured off; wake it either way.

    Not in a task process: it exits (``os._exit``) right after the task, and a thread killed
    mid-send leaves its items leased for minutes. There the write is the whole job; the
    scheduler's worker (or ``astro-xdeps outbox drain --follow``) finds the items within its
    poll interval. This is how Airflow 2's ``on_dataset_changed`` (a task-process hook) forwards.
    """
    if not settings.get_bool("delivery_worker"):
        return None
    if _in_task:
        log.debug("astro-xdeps: in a task process; the scheduler's delivery worker sends what was enqueued")
        return None
    worker = get_worker()
    if not worker.running:
        worker.start()
        log.info("astro-xdeps delivery worker started in pid %s", os.getpid())
    worker.wake()
    return worker


def ensure_deadline_clock(engine: RelayEngine | None = None) -> DeadlineClock | None:
    """Start this process's deadline clock if the relay has deadline rules (once per process).

    Each tick decides the deadlines that passed and wakes the delivery worker for what it
    enqueued. Several processes may run one (schedulers, relay replicas): the database claim
    of each deadline makes one of them fire it.
    """
    global _clock
    engine = engine or relay_engine()
    if engine is None or not engine.config.deadline_rules:
        return None
    with _lock:
        _check_fork()
        if _clock is None or not _clock.running:
            from astro_xdeps.relay.deadlines import DeadlineClock

            def tick(now: float) -> None:
                if engine.tick(now).new_actions:
                    ensure_worker()

            _clock = DeadlineClock(tick, interval=float(settings.get_int("deadline_tick_seconds")))
            _clock.start()
            log.info(
                "astro-xdeps deadline clock started in pid %s (%d rule(s), every %gs)",
                os.getpid(),
                len(engine.config.deadline_rules),
                _clock.interval,
            )
        return _clock


def process_role() -> str | None:
    """Which long-running Airflow component this process is, from its command line.

    The api-server fires no lifecycle hook, and the scheduler's ``on_starting`` fires before
    its job type is set, so the command line is the one reliable signal for both.
    """
    for arg in sys.argv[1:3]:
        if arg in ("api-server", "webserver", "scheduler"):
            return arg
    return None


def note_component(component: object) -> None:
    """Remember a task process from the marker its ``on_starting`` hook gets.

    The command line cannot tell: LocalExecutor forks task processes from the scheduler, so
    they keep its ``airflow scheduler`` arguments.
    """
    global _in_task
    if type(component).__name__ in _TASK_MARKERS:
        _in_task = True


def in_task_process() -> bool:
    return _in_task


def start_worker_for_component(component: object = None) -> None:
    """In an api-server or scheduler with forwarding or a relay configured: deliver leftovers now."""
    note_component(component)
    role = process_role()
    if _in_task or role is None:
        return
    try:
        if settings.get("relay_config") or forwarding_plan().enabled:
            ensure_worker()
    except Exception:
        log.exception("astro-xdeps could not start the delivery worker")
    if role == "scheduler" and os.getpid() == _IMPORT_PID and settings.get("relay_config"):
        try:
            ensure_deadline_clock()
        except Exception:
            log.exception("astro-xdeps could not start the relay's deadline clock")


def reset() -> None:
    """Stop the worker and forget all per-process state."""
    global _outbox, _worker, _plan, _pid, _relay, _clock, _in_task
    with _lock:
        _in_task = False
        if _clock is not None and _pid == os.getpid():
            _clock.stop(timeout=5)
        if _worker is not None and _pid == os.getpid():
            _worker.stop(timeout=5)
        if _outbox is not None and _pid == os.getpid():
            _outbox.close()
        _outbox, _worker, _plan, _relay, _clock, _pid = None, None, None, None, None, os.getpid()

"""Per-process singletons: the outbox, the forwarding plan, the relay engine, the delivery worker
and the deadline clock. Each is created lazily, once per process.

Listeners call :func:`forwarding_plan` and :func:`get_outbox` on Airflow's hot path, so both
are cached for the life of the process (Airflow's config does not change under a running
process either). A forked child starts with none of them (``os.register_at_fork``): it inherits
neither the worker thread nor safe DB connections. :func:`reset` stops and forgets everything,
for tests. This module is the composition root: it builds relay and outbox objects; neither
imports it back.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import TYPE_CHECKING

from astro_xdeps import settings
from astro_xdeps.forwarding.plan import ForwardingPlan, build_forwarding_plan
from astro_xdeps.outbox.store import Outbox

if TYPE_CHECKING:  # imported where used: the plugin loads in every Airflow process
    from astro_xdeps.outbox.worker import DeliveryWorker
    from astro_xdeps.relay.app import RelayRuntime
    from astro_xdeps.relay.deadlines import DeadlineClock
    from astro_xdeps.relay.engine import RelayEngine

log = logging.getLogger(__name__)

_lock = threading.RLock()
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


def _forget_after_fork() -> None:
    """In a forked child: drop the parent's singletons (never stop or close them: they are the
    parent's), and take a fresh lock in case another thread held it at the fork."""
    global _lock, _outbox, _worker, _plan, _relay, _clock
    _lock = threading.RLock()
    _outbox, _worker, _plan, _relay, _clock = None, None, None, None, None


os.register_at_fork(after_in_child=_forget_after_fork)


def forwarding_plan() -> ForwardingPlan:
    global _plan
    with _lock:
        if _plan is None:
            _plan = build_forwarding_plan()
            log.info("astro-xdeps asset forwarding: %s (%s)", "on" if _plan.enabled else "off", _plan.reason)
        return _plan


def get_outbox() -> Outbox:
    global _outbox
    with _lock:
        if _outbox is None:
            _outbox = Outbox.from_url(settings.outbox_url())
        return _outbox


def relay_engine() -> RelayEngine | None:
    """The relay engine of ``[astro_xdeps] relay_config``, or None when no relay is configured."""
    global _relay
    path = settings.relay_config()
    if not path:
        return None
    with _lock:
        if _relay is None:
            _relay = build_relay_engine(path)
            log.info("astro-xdeps relay: %d rule(s) from %s", len(_relay.config.rules), path)
        return _relay


def build_relay_engine(config_path: str) -> RelayEngine:
    """A relay engine over this process's outbox, for the rules file at ``config_path``."""
    from astro_xdeps.relay.config import load_config
    from astro_xdeps.relay.engine import RelayEngine

    return RelayEngine(load_config(config_path), get_outbox())


def relay_runtime(config_path: str | None = None) -> RelayRuntime:
    """What the relay's app serves: the engine of ``config_path`` (default: ``[astro_xdeps]
    relay_config``, the process's cached engine), waking this process's worker on new actions."""
    from astro_xdeps.exceptions import ConfigError
    from astro_xdeps.relay.app import RelayRuntime

    engine = build_relay_engine(config_path) if config_path else relay_engine()
    if engine is None:
        raise ConfigError(
            "no relay config: set [astro_xdeps] relay_config (AIRFLOW__ASTRO_XDEPS__RELAY_CONFIG) to a file."
        )
    return RelayRuntime(engine=engine, on_enqueue=lambda: ensure_worker())


def build_worker(outbox: Outbox) -> DeliveryWorker:
    """The one way to make a delivery worker: over ``outbox``, tuned by the ``[astro_xdeps]`` options.

    Used for this process's worker (:func:`get_worker`) and by ``astro-xdeps outbox drain``.
    """
    from astro_xdeps.outbox.worker import DeliveryWorker

    return DeliveryWorker(
        outbox,
        concurrency=settings.target_concurrency(),
        retry_horizon=float(settings.retry_horizon()),
        backoff_max=float(settings.retry_max_delay()),
        purge_after=float(settings.delivered_retention()),
    )


def get_worker() -> DeliveryWorker:
    global _worker
    with _lock:
        if _worker is None:
            _worker = build_worker(get_outbox())
        return _worker


def ensure_worker() -> DeliveryWorker | None:
    """Start this process's delivery thread unless configured off; wake it either way.

    Not in a task process: it exits (``os._exit``) right after the task, and a thread killed
    mid-send leaves its items leased for minutes. There the write is the whole job; the
    scheduler's worker (or ``astro-xdeps outbox drain --follow``) finds the items within its
    poll interval. This is how Airflow 2's ``on_dataset_changed`` (a task-process hook) forwards.
    """
    worker = _worker
    if worker is not None and worker.running:  # started before, so allowed: skip reading the config
        worker.wake()
        return worker
    if not settings.delivery_worker():
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
        if _clock is None or not _clock.running:
            from astro_xdeps.relay.deadlines import DeadlineClock

            def tick(now: float) -> None:
                if engine.tick(now).new_actions:
                    ensure_worker()

            _clock = DeadlineClock(tick, interval=float(settings.deadline_tick_seconds()))
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
        if settings.relay_config() or forwarding_plan().enabled:
            ensure_worker()
    except Exception:
        log.exception("astro-xdeps could not start the delivery worker")
    if role == "scheduler" and os.getpid() == _IMPORT_PID and settings.relay_config():
        try:
            ensure_deadline_clock()
        except Exception:
            log.exception("astro-xdeps could not start the relay's deadline clock")


def reset() -> None:
    """Stop the worker and the clock, close the outbox and forget all per-process state."""
    global _outbox, _worker, _plan, _relay, _clock, _in_task
    with _lock:
        _in_task = False
        if _clock is not None:
            _clock.stop(timeout=5)
        if _worker is not None:
            _worker.stop(timeout=5)
        if _outbox is not None:
            _outbox.close()
        _outbox, _worker, _plan, _relay, _clock = None, None, None, None, None

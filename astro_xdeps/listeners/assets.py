"""Forward this deployment's asset events: the hook path builds items and writes the outbox.

Which hook, by Airflow version (one listener object carries them all; unknown hooks are ignored):
- 3.2+: ``on_asset_event_emitted`` — has the event's extra, source task and partition key.
  ``on_asset_changed`` fires for the same event and is ignored there.
- 3.0/3.1: ``on_asset_changed`` — the asset only (no extra, no source).
- 2.10/2.11: ``on_dataset_changed`` — the dataset only, in the task's own process (and in the
  webserver for events created over the REST API). The write to the outbox is the whole job
  there: the scheduler's delivery worker sends the item (see ``runtime.ensure_worker``).
On 3.x these run in the api-server while it records a task's success: no network I/O here,
every exception is caught (Airflow 2 would fail the task on one), and an event that could not be
written to the outbox is counted as lost (``astro_xdeps.outbox.loss``) besides the log line.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from airflow.listeners import hookimpl

from astro_xdeps import runtime
from astro_xdeps.forwarding.payload import SourceEvent, new_event_id
from astro_xdeps.forwarding.plan import plan_items
from astro_xdeps.outbox import pacing
from astro_xdeps.outbox.loss import record_loss
from astro_xdeps.version_compat import AIRFLOW_V_3_2_PLUS

log = logging.getLogger(__name__)


def source_event_from_asset_event(asset_event: Any) -> SourceEvent:
    """Adapt Airflow 3.2+'s listener ``AssetEvent``."""
    asset = asset_event.asset
    return SourceEvent(
        uri=asset.uri,
        name=getattr(asset, "name", None),
        extra=dict(asset_event.extra or {}),
        dag_id=asset_event.source_dag_id,
        task_id=asset_event.source_task_id,
        run_id=asset_event.source_run_id,
        map_index=asset_event.source_map_index,
        partition_key=getattr(asset_event, "partition_key", None),
    )


def source_event_from_dataset(dataset: Any, env: Mapping[str, str]) -> SourceEvent | None:
    """Adapt Airflow 2's ``on_dataset_changed`` argument; None when no task produced the event.

    The hook gets the dataset only, not the event: the task comes from the ``AIRFLOW_CTX_*``
    variables Airflow sets in a task's process. Outside a task (the webserver recording an event
    created over the REST API) the event is one this deployment received, and the hook cannot
    see its extra to tell whose: it is never forwarded, so two deployments cannot ping-pong.
    """
    dag_id = env.get("AIRFLOW_CTX_DAG_ID")
    if not dag_id:
        return None
    return SourceEvent(
        uri=dataset.uri,
        extra=dict(getattr(dataset, "extra", None) or {}),
        dag_id=dag_id,
        task_id=env.get("AIRFLOW_CTX_TASK_ID") or None,
        run_id=env.get("AIRFLOW_CTX_DAG_RUN_ID") or None,
    )


def forward(event: SourceEvent) -> int:
    """Enqueue ``event`` for every destination; return how many items were written. Never raises.

    The delivery worker's threads in this process wait meanwhile (:mod:`astro_xdeps.outbox.pacing`).
    """
    with pacing.foreground():
        return _forward(event)


def _forward(event: SourceEvent) -> int:
    try:
        plan = runtime.forwarding_plan()
        items = plan_items(event, plan, event_id=new_event_id())
        if not items:
            return 0
        runtime.get_outbox().enqueue(items)
    except Exception as exc:
        log.exception(
            "astro-xdeps could not enqueue the asset event of %s; it is not forwarded (counted as lost "
            "in `astro-xdeps outbox status`)",
            event.uri,
        )
        record_loss(event.uri, f"{type(exc).__name__}: {exc}")
        return 0
    try:
        runtime.ensure_worker()
    except Exception:  # the items are stored: any later worker (or `outbox drain`) delivers them
        log.exception("astro-xdeps enqueued the asset event of %s but could not start its worker", event.uri)
    return len(items)


class AssetForwardingListener:
    @hookimpl
    def on_asset_event_emitted(self, asset_event: Any) -> None:
        try:
            event = source_event_from_asset_event(asset_event)
        except Exception:
            log.exception("astro-xdeps could not read an asset event")
            return
        forward(event)

    @hookimpl
    def on_asset_changed(self, asset: Any) -> None:
        if AIRFLOW_V_3_2_PLUS:
            return  # on_asset_event_emitted handles the same event with more detail
        forward(SourceEvent(uri=asset.uri, name=getattr(asset, "name", None)))

    @hookimpl
    def on_dataset_changed(self, dataset: Any) -> None:
        try:
            event = source_event_from_dataset(dataset, os.environ)
        except Exception:
            log.exception("astro-xdeps could not read a dataset change")
            return
        if event is None:
            log.debug(
                "astro-xdeps: %s changed outside a task (received over REST): not forwarded", dataset.uri
            )
            return
        forward(event)

    @hookimpl
    def on_starting(self, component: Any) -> None:
        """Deliver what an earlier process left in the outbox: the scheduler starts a worker.

        Task processes fire this hook too (with a marker component); they are short-lived and
        get no worker, even when forked from the scheduler by LocalExecutor.
        """
        runtime.start_worker_for_component(component)


asset_listener = AssetForwardingListener()

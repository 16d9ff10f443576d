"""Read what the graph is built from: this deployment's routes and rules, its outbox, its Airflow DB.

The thin, impure edge of :mod:`astro_xdeps.graph.model`: each reader returns plain values, and a
reader that cannot answer (no relay configured, no Airflow metadata DB here) contributes nothing
and says why in ``notes``, rather than failing the whole picture.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from astro_xdeps.graph.flows import flows_from_items, merge_flows, received_flow
from astro_xdeps.graph.model import Flow, Graph, build_graph

log = logging.getLogger(__name__)

RECEIVED_SAMPLE = 500


@dataclass
class GraphInputs:
    deployment: str
    flows: list[Flow] = field(default_factory=list)
    routes: tuple = ()
    rules: tuple = ()
    notes: list[str] = field(default_factory=list)

    def graph(self) -> Graph:
        return build_graph(
            merge_flows(self.flows), routes=self.routes, rules=self.rules, deployment=self.deployment
        )


def collect(outbox_sample: Iterable[Any], *, received: bool = True) -> GraphInputs:
    """Everything the graph of this deployment needs, from config, Airflow's DB and
    ``outbox_sample`` (the outbox's recent items, ``OutboxQueries.sample()``)."""
    from astro_xdeps import settings
    from astro_xdeps.forwarding.plan import build_forwarding_plan

    plan = build_forwarding_plan()
    inputs = GraphInputs(deployment=plan.deployment)
    if plan.enabled:
        inputs.routes = plan.routes
    else:
        inputs.notes.append(f"asset forwarding is off: {plan.reason}")
    relay_config = settings.relay_config()
    if relay_config:
        from astro_xdeps.relay.config import load_config

        inputs.rules = load_config(relay_config).rules
    inputs.flows += flows_from_items(outbox_sample)
    if received:
        try:
            inputs.flows += received_flows(plan.deployment)
        except Exception as exc:  # no metadata DB here (e.g. the CLI on a laptop), or Airflow 2
            log.debug("Could not read received events", exc_info=True)
            inputs.notes.append(
                f"events received from other deployments not shown: {type(exc).__name__}: {exc}"
            )
    return inputs


def received_flows(deployment: str, limit: int = RECEIVED_SAMPLE) -> list[Flow]:
    """Flows of the most recent asset events that came in with astro-xdeps provenance (Airflow 3)."""
    from astro_xdeps.version_compat import AIRFLOW_V_3_0_PLUS

    if not AIRFLOW_V_3_0_PLUS:
        raise RuntimeError("reading received events needs Airflow 3")
    from airflow.models.asset import AssetEvent, AssetModel, DagScheduleAssetReference
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetEvent.extra, AssetEvent.timestamp, AssetModel.uri, AssetModel.id)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .order_by(AssetEvent.id.desc())
            .limit(limit)
        ).all()
        ours = [r for r in rows if isinstance(r.extra, dict) and isinstance(r.extra.get("xdeps"), dict)]
        consumers: dict[int, list[str]] = {}
        asset_ids = sorted({r.id for r in ours})
        if asset_ids:
            for ref in session.execute(
                select(DagScheduleAssetReference.asset_id, DagScheduleAssetReference.dag_id).where(
                    DagScheduleAssetReference.asset_id.in_(asset_ids)
                )
            ):
                consumers.setdefault(ref.asset_id, []).append(ref.dag_id)
    flows: list[Flow] = []
    for r in ours:
        at = r.timestamp.timestamp() if r.timestamp is not None else None
        flows += received_flow(
            r.extra, uri=r.uri, deployment=deployment, consumers=sorted(consumers.get(r.id, [])), at=at
        )
    return flows

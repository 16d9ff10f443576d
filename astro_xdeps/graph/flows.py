"""Observed traffic as :class:`~astro_xdeps.graph.model.Flow` values: from the outbox items this
deployment sent and the asset events it received (both carry our provenance). Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from astro_xdeps.graph.model import Flow


def flows_from_items(items: Iterable[Any]) -> list[Flow]:
    """Aggregate outbox items (anything with kind, target, state, payload, delivered_at) into flows."""
    return merge_flows(
        Flow(*key, **{item.state: 1}, last_delivered_at=item.delivered_at)
        for item in items
        for key in _item_keys(item)
    )


def _item_keys(item: Any) -> list[tuple]:
    """The flow paths (source dep, dag, task, via kind, via, target dep, dag, asset, route) of an item."""
    payload = item.payload or {}
    if item.kind == "dag_run":
        prov = (payload.get("conf") or {}).get("xdeps") or {}
        return _rule_keys(prov, prov.get("rule") or "?", item.target, dag=payload.get("dag_id"))
    prov = (payload.get("extra") or {}).get("xdeps") or {}
    uri = payload.get("uri") or "?"
    if "rule" in prov:
        return _rule_keys(prov, prov["rule"], item.target, asset=uri)
    source = prov.get("source") or {}
    return [
        (
            source.get("deployment"),
            source.get("dag_id"),
            source.get("task_id"),
            "asset",
            source.get("uri") or uri,
            item.target,
            None,
            uri,
            prov.get("route"),
        )
    ]


def _rule_events(prov: dict[str, Any]) -> list[dict[str, Any]]:
    """The events that fired a relay rule, from its provenance (one empty event when unknown)."""
    return [e for e in prov.get("events") or [] if isinstance(e, dict)] or [{}]


def _rule_keys(
    prov: dict[str, Any], rule: str, target: str, *, dag: str | None = None, asset: str | None = None
) -> list[tuple]:
    """One flow path per event that fired ``rule`` (an item the relay planned)."""
    return [
        (e.get("deployment"), e.get("dag_id"), e.get("task_id"), "rule", rule, target, dag, asset, None)
        for e in _rule_events(prov)
    ]


def received_flow(
    extra: dict[str, Any], *, uri: str, deployment: str, consumers: Sequence[str], at: float | None
) -> list[Flow]:
    """Flows of one asset event this deployment received (its extra carries our provenance)."""
    prov = extra.get("xdeps") if isinstance(extra, dict) else None
    if not isinstance(prov, dict):
        return []
    source = prov.get("source") or {}
    common = {
        "source_deployment": source.get("deployment"),
        "source_dag": source.get("dag_id"),
        "source_task": source.get("task_id"),
        "via_kind": "asset",
        "via": uri,
        "target_deployment": deployment,
        "delivered": 1,
        "last_delivered_at": at,
    }
    if "rule" in prov:
        first = _rule_events(prov)[-1]
        common.update(
            source_deployment=first.get("deployment"),
            source_dag=first.get("dag_id"),
            source_task=first.get("task_id"),
        )
    return [Flow(**common, target_dag=dag) for dag in consumers] or [Flow(**common)]


def merge_flows(flows: Iterable[Flow]) -> list[Flow]:
    """Sum flows with the same path (e.g. many items or received events of one asset)."""
    acc: dict[tuple, Flow] = {}
    for f in flows:
        o = acc.get(f.path)
        if o is None:
            acc[f.path] = f
            continue
        last = max((x for x in (o.last_delivered_at, f.last_delivered_at) if x), default=None)
        acc[f.path] = replace(
            o,
            pending=o.pending + f.pending,
            delivered=o.delivered + f.delivered,
            dead=o.dead + f.dead,
            last_delivered_at=last,
        )
    return list(acc.values())

"""What a forwarded asset event carries: the original extra plus provenance, and loop checks.

Downstream, the event's extra is the upstream event's extra (so a consumer reads the same
keys) plus::

    "xdeps_event_id": "<stable id>",          # dedupe key: same id = same upstream event
    "xdeps": {"event_id": ..., "hops": 1, "route": "default",
              "source": {"deployment", "uri", "name", "dag_id", "task_id", "run_id",
                         "map_index", "partition_key", "extra"}}
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from astro_xdeps.forwarding.routes import Destination, map_partition_key
from astro_xdeps.outbox.actions import EVENT_ID_KEY, PROVENANCE_KEY, AssetEventAction, stamped_extra
from astro_xdeps.outbox.models import NewItem

__all__ = [
    "EVENT_ID_KEY",
    "PROVENANCE_KEY",
    "SourceEvent",
    "forwarded_extra",
    "may_forward",
    "new_event_id",
    "outbox_item",
]

_AIRFLOW_MARKERS = ("from_rest_api",)


@dataclass(frozen=True)
class SourceEvent:
    """An asset event as the upstream listener saw it, independent of the Airflow version."""

    uri: str
    name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    dag_id: str | None = None
    task_id: str | None = None
    run_id: str | None = None
    map_index: int | None = None
    partition_key: str | None = None

    @classmethod
    def from_rest(cls, rest: Mapping[str, Any], *, uri: str) -> SourceEvent:
        """An asset event as the REST API lists it (``GET .../assets/events``), as a listener sees it."""
        return cls(
            uri=uri,
            name=rest.get("name"),
            extra=dict(rest.get("extra") or {}),
            dag_id=rest.get("source_dag_id"),
            task_id=rest.get("source_task_id"),
            run_id=rest.get("source_run_id"),
            map_index=rest.get("source_map_index"),
            partition_key=rest.get("partition_key"),
        )

    @property
    def provenance(self) -> Any:
        """Our provenance: in ``extra`` (pushed), or in a watcher event's ``extra["payload"]`` (pulled)."""
        if PROVENANCE_KEY in self.extra:
            return self.extra[PROVENANCE_KEY]
        payload = self.extra.get("payload") if self.extra.get("from_trigger") else None
        return payload.get(PROVENANCE_KEY) if isinstance(payload, dict) else None

    @property
    def received(self) -> bool:
        """True when the event came from another deployment: over the REST API, or pulled."""
        return bool(self.extra.get("from_rest_api")) or self.provenance is not None

    @property
    def hops(self) -> int:
        prov = self.provenance
        return int(prov.get("hops", 0)) if isinstance(prov, dict) else 0


def may_forward(event: SourceEvent, *, max_hops: int) -> bool:
    """Loop prevention: an event that already travelled ``max_hops`` deployments stops here."""
    return event.hops < max_hops


def new_event_id() -> str:
    return uuid.uuid4().hex


def forwarded_extra(event: SourceEvent, *, event_id: str, deployment: str, route: str) -> dict[str, Any]:
    original = {k: v for k, v in event.extra.items() if k not in _AIRFLOW_MARKERS and k != EVENT_ID_KEY}
    upstream_prov = original.pop(PROVENANCE_KEY, None)
    source = {
        "deployment": deployment,
        "uri": event.uri,
        "name": event.name,
        "dag_id": event.dag_id,
        "task_id": event.task_id,
        "run_id": event.run_id,
        "map_index": event.map_index,
        "partition_key": event.partition_key,
        "extra": original,
    }
    extra = stamped_extra(original, event_id, {"hops": event.hops + 1, "route": route, "source": source})
    if isinstance(upstream_prov, dict):
        extra[PROVENANCE_KEY]["via"] = upstream_prov
    return extra


def outbox_item(event: SourceEvent, dest: Destination, *, event_id: str, deployment: str) -> NewItem:
    """The outbox item for one destination: what the delivery worker sends.

    The partition key is the route's mapping of the upstream key (by default the same key);
    the upstream key stays in the provenance (``xdeps.source.partition_key``).
    """
    fields = {
        "partition_key": event.partition_key,
        "dag_id": event.dag_id,
        "task_id": event.task_id,
        "run_id": event.run_id,
    }
    action = AssetEventAction(
        uri=dest.uri,
        event_id=event_id,
        extra=forwarded_extra(event, event_id=event_id, deployment=deployment, route=dest.route),
        partition_key=map_partition_key(dest.partition_key, fields),
    )
    return action.to_item(dest.target)

"""What an outbox item asks the downstream to do: the one place that writes and reads payload keys.

The planners (the asset listener's forwarding, the relay's rules) build an action and store it
with ``to_item``; the delivery worker reads it back with ``ACTIONS[item.kind].from_item``. The
payload is stored as JSON in the order written here, the same keys and order as every earlier
version, so items already waiting in an outbox still deliver.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from astro_xdeps.outbox.models import ASSET_EVENT, DAG_RUN, MAX_KEY_CHARS, Item, NewItem

# In a forwarded event's extra: our stable id of the event (how a retry finds it downstream) and
# our provenance (where it came from, how many deployments it crossed).
EVENT_ID_KEY = "xdeps_event_id"
PROVENANCE_KEY = "xdeps"


def stamped_extra(extra: Mapping[str, Any], event_id: str, provenance: Mapping[str, Any]) -> dict[str, Any]:
    """``extra`` plus our event id and our provenance (which starts with the same id)."""
    return {**extra, EVENT_ID_KEY: event_id, PROVENANCE_KEY: {"event_id": event_id, **provenance}}


@dataclass(frozen=True)
class AssetEventAction:
    """Create one asset event on the target; ``event_id`` is the stable id it is found by."""

    kind: ClassVar[str] = ASSET_EVENT

    uri: str
    event_id: str
    extra: dict[str, Any] = field(default_factory=dict)
    partition_key: str | None = None

    @property
    def idempotency_key(self) -> str:
        """The event id and the uri, the uri hashed when the key would exceed the column (500).

        Airflow allows asset uris of 1500 characters.
        """
        key = f"{self.event_id}:{self.uri}"
        if len(key) <= MAX_KEY_CHARS:
            return key
        return f"{self.event_id}:#sha256:{hashlib.sha256(self.uri.encode('utf-8')).hexdigest()}"

    def to_item(self, target: str) -> NewItem:
        payload = {
            "uri": self.uri,
            "extra": self.extra,
            "partition_key": self.partition_key,
            "event_id": self.event_id,
        }
        return NewItem(kind=self.kind, target=target, payload=payload, idempotency_key=self.idempotency_key)

    @classmethod
    def from_item(cls, item: Item | NewItem) -> AssetEventAction:
        p = item.payload
        return cls(
            uri=p["uri"],
            event_id=p["event_id"],
            extra=p.get("extra") or {},
            partition_key=p.get("partition_key"),
        )


@dataclass(frozen=True)
class TriggerDagRunAction:
    """Trigger ``dag_id`` with a deterministic ``dag_run_id``, so a resend finds the run (409)."""

    kind: ClassVar[str] = DAG_RUN

    dag_id: str
    dag_run_id: str
    conf: dict[str, Any] | None = None
    note: str | None = None

    @property
    def idempotency_key(self) -> str:
        return self.dag_run_id

    def to_item(self, target: str) -> NewItem:
        payload = {"dag_id": self.dag_id, "dag_run_id": self.dag_run_id, "conf": self.conf, "note": self.note}
        return NewItem(kind=self.kind, target=target, payload=payload, idempotency_key=self.idempotency_key)

    @classmethod
    def from_item(cls, item: Item | NewItem) -> TriggerDagRunAction:
        p = item.payload
        return cls(dag_id=p["dag_id"], dag_run_id=p["dag_run_id"], conf=p.get("conf"), note=p.get("note"))


Action = AssetEventAction | TriggerDagRunAction
# The action class of each outbox kind, to read an item back (``ACTIONS[item.kind].from_item``).
ACTIONS: dict[str, type[Action]] = {cls.kind: cls for cls in (AssetEventAction, TriggerDagRunAction)}

"""Pull-mode forwarding, pure: which upstream events are new, and what each becomes downstream.

The watcher (``DeploymentAssetEventTrigger``) polls an upstream deployment's events of one uri.
Its durable watermark is a :class:`Watermark`: the newest upstream timestamp seen and the ids
seen within a look-back window before it. Ids, not only a time, because two events can share a
timestamp and an event can be committed upstream after a later-stamped one (PostgreSQL);
the window is how late such an event may arrive and still be caught.

Each emitted event carries the watermark *after* it (``payload["xdeps_pull"]``), and the
package's listener stores that watermark in the same database transaction in which Airflow
records the event (``astro_xdeps.listeners.pull``). So the stored watermark moves exactly when
an event is stored: a triggerer killed at any moment re-emits only what was not stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from astro_xdeps.forwarding.payload import SourceEvent, forwarded_extra

PULL_KEY = "xdeps_pull"
STATE_KEY_PREFIX = "astro_xdeps.pull"
MAX_SEEN = 1000


def state_key(conn_id: str, uri: str) -> str:
    """The asset-state-store key of one watcher's watermark (at most 512 characters)."""
    return f"{STATE_KEY_PREFIX}:{conn_id}:{uri}"[:512]


def parse_ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Watermark:
    """Newest upstream timestamp seen (ISO) and ids seen at or after ``since - lookback``."""

    since: str | None = None
    seen: dict[str, str] = field(default_factory=dict)  # str(event id) -> its timestamp

    def to_json(self) -> dict[str, Any]:
        return {"since": self.since, "seen": dict(self.seen)}

    @classmethod
    def from_json(cls, data: Any) -> Watermark | None:
        if not isinstance(data, dict):
            return None
        seen = data.get("seen") or {}
        return cls(since=data.get("since"), seen={str(k): str(v) for k, v in dict(seen).items()})

    def query_since(self, lookback: float) -> str | None:
        """Ask the upstream for events from here: ``since`` minus the look-back window."""
        if self.since is None:
            return None
        return (parse_ts(self.since) - timedelta(seconds=lookback)).isoformat()

    def advance(self, event: dict[str, Any], lookback: float) -> Watermark:
        """The watermark after ``event``: its id seen, ``since`` moved up, old ids pruned."""
        ts = event["timestamp"]
        since = ts if self.since is None or parse_ts(ts) > parse_ts(self.since) else self.since
        floor = parse_ts(since) - timedelta(seconds=lookback)
        seen = {k: v for k, v in self.seen.items() if parse_ts(v) >= floor}
        seen[str(event["id"])] = ts
        if len(seen) > MAX_SEEN:  # keep the newest; a window this busy should be shorter
            seen = dict(sorted(seen.items(), key=lambda kv: parse_ts(kv[1]))[-MAX_SEEN:])
        return Watermark(since=since, seen=seen)


def baseline(events: list[dict[str, Any]], lookback: float) -> Watermark:
    """A first watermark that treats every listed (already existing) event as seen."""
    mark = Watermark()
    for event in sorted(events, key=lambda e: (parse_ts(e["timestamp"]), e["id"])):
        mark = mark.advance(event, lookback)
    return mark


def new_events(mark: Watermark, events: list[dict[str, Any]], lookback: float) -> list[dict[str, Any]]:
    """The listed events not yet seen, oldest first (ties by id)."""
    floor = None if mark.since is None else parse_ts(mark.since) - timedelta(seconds=lookback)
    fresh = [
        e
        for e in events
        if str(e["id"]) not in mark.seen and (floor is None or parse_ts(e["timestamp"]) >= floor)
    ]
    return sorted(fresh, key=lambda e: (parse_ts(e["timestamp"]), e["id"]))


def upstream_event_id(upstream: str, event: dict[str, Any]) -> str:
    """A stable id for one upstream event: the same event always maps to the same id."""
    return f"pull:{upstream}:{event['id']}"


def pulled_payload(
    event: dict[str, Any], *, upstream: str, uri: str, key: str, mark_after: Watermark
) -> dict[str, Any]:
    """The trigger event payload (it becomes ``extra["payload"]`` of the downstream event).

    Same provenance shape as push forwarding (``xdeps_event_id``, ``xdeps.source``), plus the
    upstream event's id and time, plus the watermark the listener stores with the event.
    """
    source = SourceEvent.from_rest(event, uri=event.get("uri") or uri)
    event_id = upstream_event_id(upstream, event)
    payload = forwarded_extra(source, event_id=event_id, deployment=upstream, route="pull")
    payload["xdeps"]["source"]["event_id"] = event["id"]
    payload["xdeps"]["source"]["timestamp"] = event["timestamp"]
    payload["xdeps"]["mode"] = "pull"
    payload[PULL_KEY] = {"key": key, "watermark": mark_after.to_json()}
    return payload

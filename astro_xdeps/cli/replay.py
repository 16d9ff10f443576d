"""``astro-xdeps replay``: forward again what a target never got, from this deployment's history.

For installs after the fact, an outbox lost with a container, or a dead item purged too early.
It reads this deployment's asset events through its own REST API (``--source-conn``), plans
each one with the forwarding routes as the listener would, and compares with what each target
already has: an event there whose provenance (``xdeps.source``: deployment, uri, DAG, task, run,
map index, partition key) or ``xdeps.replay_of`` names it. What is missing goes through the
outbox (idempotency key from the upstream event id, so two replays never enqueue it twice) and is
delivered by this process; ``--dry-run`` only lists it.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import re
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, TextIO

from astro_xdeps.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from astro_xdeps.exceptions import ConfigError, XdepsError
from astro_xdeps.forwarding.payload import PROVENANCE_KEY, SourceEvent
from astro_xdeps.outbox.models import NewItem

REPLAY_OF_KEY = "replay_of"
# Target events are searched from this long before --since: forwarding happens after the event.
_TARGET_SLACK = timedelta(hours=1)
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")


def parse_when(value: str, *, now: datetime, flag: str) -> datetime:
    """An ISO 8601 time (UTC when it has no offset) or a span back from now: 90m, 6h, 2d."""
    m = _RELATIVE.match(value)
    if m:
        seconds = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return now - timedelta(seconds=seconds)
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{flag}: expected an ISO 8601 time (2026-11-30T06:00:00Z) or a span back from now "
            f"(90m, 6h, 2d), got {value!r}."
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def source_event(rest: Mapping[str, Any]) -> SourceEvent:
    """An asset event as ``GET /api/v2/assets/events`` returns it, as the listener would see it."""
    return SourceEvent.from_rest(rest, uri=rest["uri"])


def replay_event_id(deployment: str, upstream_id: int | str) -> str:
    """The forwarded event id of a replayed event: the same for every replay of it."""
    digest = hashlib.sha256(f"{deployment}\x1f{upstream_id}".encode()).hexdigest()[:24]
    return f"replay-{digest}"


def provenance_key(source: Mapping[str, Any]) -> tuple:
    map_index = source.get("map_index")
    return (
        source.get("deployment"),
        source.get("uri"),
        source.get("dag_id"),
        source.get("task_id"),
        source.get("run_id"),
        -1 if map_index is None else map_index,
        source.get("partition_key"),
    )


@dataclass
class TargetHistory:
    """What a target has for one uri: forwarded events by provenance (a multiset) and replays."""

    by_provenance: Counter
    replayed: set[str]

    @classmethod
    def from_events(cls, events: Iterable[Mapping[str, Any]]) -> TargetHistory:
        by_provenance: Counter = Counter()
        replayed: set[str] = set()
        for event in events:
            prov = (event.get("extra") or {}).get(PROVENANCE_KEY)
            if not isinstance(prov, dict) or not isinstance(prov.get("source"), dict):
                continue
            if prov.get(REPLAY_OF_KEY) is not None:
                replayed.add(str(prov[REPLAY_OF_KEY]))
            by_provenance[provenance_key(prov["source"])] += 1
        return cls(by_provenance, replayed)

    def take(self, upstream_id: str, key: tuple) -> bool:
        """Whether the target has this upstream event (each target event matches one upstream)."""
        if upstream_id in self.replayed:
            self.replayed.discard(upstream_id)
            if self.by_provenance[key] > 0:
                self.by_provenance[key] -= 1
            return True
        if self.by_provenance[key] > 0:
            self.by_provenance[key] -= 1
            return True
        return False


@dataclass(frozen=True)
class Planned:
    upstream: Mapping[str, Any]
    item: NewItem


def plan_replay(
    upstream_events: Iterable[Mapping[str, Any]],
    items_for: Any,
    histories: Mapping[tuple[str, str], TargetHistory],
    *,
    deployment: str,
) -> tuple[list[Planned], int]:
    """Which items to send (pure): ``(missing, already there)``.

    ``items_for(event, event_id)`` gives the outbox items of one event (the listener's
    ``plan_items`` under the forwarding plan); ``histories`` what each (target, uri) has.
    """
    missing: list[Planned] = []
    present = 0
    for rest in upstream_events:
        event = source_event(rest)
        event_id = replay_event_id(deployment, rest["id"])
        for item in items_for(event, event_id):
            payload = item.payload
            payload["extra"][PROVENANCE_KEY][REPLAY_OF_KEY] = str(rest["id"])
            history = histories.get((item.target, payload["uri"]))
            key = provenance_key(payload["extra"][PROVENANCE_KEY]["source"])
            if history is not None and history.take(str(rest["id"]), key):
                present += 1
            else:
                missing.append(Planned(rest, item))
    return missing, present


def run_replay(
    *,
    since: str,
    until: str | None,
    asset: str | None,
    target: str | None,
    source_conn: str,
    dry_run: bool,
    timeout: float,
    out: TextIO | None = None,
) -> int:
    from astro_xdeps import runtime
    from astro_xdeps.forwarding.plan import build_forwarding_plan, plan_items
    from astro_xdeps.hooks.deployment import DeploymentHook

    out = out or sys.stdout
    now = datetime.now(timezone.utc)
    try:
        start = parse_when(since, now=now, flag="--since")
        end = parse_when(until, now=now, flag="--until") if until else None
        plan = build_forwarding_plan()
        if target and target not in {t for r in plan.routes for t in r.targets}:
            raise ConfigError(
                f"--target {target}: no forwarding route sends events there "
                f"(targets: {', '.join(sorted({t for r in plan.routes for t in r.targets}))})."
            )
        source = DeploymentHook(source_conn).get_conn()
    except XdepsError as exc:
        sys.stderr.write(f"astro-xdeps replay: {exc}\n")
        return EXIT_USAGE
    # Replay follows the routes even when forwarding is switched off in this process.
    plan = dataclasses.replace(plan, enabled=True)

    def items_for(event: SourceEvent, event_id: str) -> list[NewItem]:
        return [i for i in plan_items(event, plan, event_id=event_id) if target is None or i.target == target]

    try:
        upstream = [
            e
            for e in source.asset_events_between(start, end)
            if asset is None or fnmatch.fnmatchcase(e.get("uri") or "", asset)
        ]
        wanted = {(i.target, i.payload["uri"]) for e in upstream for i in items_for(source_event(e), "x")}
        histories: dict[tuple[str, str], TargetHistory] = {}
        clients: dict[str, Any] = {}
        for conn_id, uri in sorted(wanted):
            client = clients.get(conn_id) or DeploymentHook(conn_id).get_conn()
            clients[conn_id] = client
            try:
                asset_id = client.resolve_asset(uri).id
            except XdepsError as exc:
                sys.stderr.write(f"  {uri} on {conn_id}: cannot read its events ({exc}); sending them\n")
                continue
            histories[(conn_id, uri)] = TargetHistory.from_events(
                client.asset_events_between(start - _TARGET_SLACK, None, asset_id=asset_id)
            )
        missing, present = plan_replay(upstream, items_for, histories, deployment=plan.deployment)
    except XdepsError as exc:
        sys.stderr.write(f"astro-xdeps replay: {exc}\n")
        return EXIT_FAILED
    window = f"{start:%Y-%m-%d %H:%M:%S} .. {(end or now):%Y-%m-%d %H:%M:%S} UTC"
    out.write(
        f"{len(upstream)} asset event(s) in {window}; {present} already at the target(s), "
        f"{len(missing)} to send\n"
    )
    for p in missing:
        e = p.upstream
        run = f" {e.get('source_dag_id')}/{e.get('source_task_id')}/{e.get('source_run_id')}"
        key = f" partition {p.item.payload['partition_key']}" if p.item.payload.get("partition_key") else ""
        out.write(
            f"  {'would send' if dry_run else 'send'} event {e['id']} ({e.get('timestamp')}) "
            f"{p.item.payload['uri']} -> {p.item.target}{run}{key}\n"
        )
    if dry_run or not missing:
        return EXIT_OK
    outbox = runtime.get_outbox()
    results = outbox.enqueue([p.item for p in missing])
    created = sum(r.created for r in results)
    out.write(f"enqueued {created} (already in the outbox: {len(results) - created}); delivering\n")
    out.flush()
    from astro_xdeps.cli.outbox import run_drain

    return run_drain(outbox, out, follow=False, timeout=timeout)


def add_parser(sub: Any) -> None:
    replay = sub.add_parser(
        "replay", help="forward asset events a target does not have yet, from this deployment's history"
    )
    replay.add_argument("--since", required=True, help="ISO 8601 time, or a span back from now (6h, 2d)")
    replay.add_argument("--until", default=None, help="ISO 8601 time or span back from now (default: now)")
    replay.add_argument("--asset", default=None, metavar="PATTERN", help="only asset uris matching this glob")
    replay.add_argument("--target", default=None, metavar="CONN", help="only to this target connection")
    replay.add_argument(
        "--source-conn",
        default="xdeps_self",
        help="connection of THIS deployment's REST API, where the history is read (default: xdeps_self)",
    )
    replay.add_argument("--dry-run", action="store_true", help="list what would be sent; send nothing")
    replay.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to spend delivering (the rest stays queued)"
    )
    replay.set_defaults(func=main)


def main(args: Any) -> int:
    return run_replay(
        since=args.since,
        until=args.until,
        asset=args.asset,
        target=args.target,
        source_conn=args.source_conn,
        dry_run=args.dry_run,
        timeout=args.timeout,
    )


__all__ = ["EXIT_FAILED", "main", "plan_replay", "run_replay"]

"""The relay engine: an event in, matching rules evaluated, actions written to the outbox.

Every door (webhook, scheduler listener, notifier) ends here. ``ingest`` returns only after
the actions are durably in the outbox; a repeated event has no second effect because every
action's idempotency key (a deterministic ``dag_run_id`` or event id) is derived from the
rule and the ids of the events that fired it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from astro_xdeps.outbox.models import EnqueueResult, NewItem
from astro_xdeps.outbox.store import Outbox
from astro_xdeps.relay.events import StateEvent
from astro_xdeps.relay.journal import RelayJournal, outcome, waiting_conditions
from astro_xdeps.relay.rules import PlannedAction, RelayConfig, matching_rules, plan_actions
from astro_xdeps.relay.state import RelayState

log = logging.getLogger(__name__)


@dataclass
class IngestResult:
    matched: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # many-to-one rules still missing conditions
    planned: list[PlannedAction] = field(default_factory=list)
    enqueued: list[EnqueueResult] = field(default_factory=list)

    @property
    def new_actions(self) -> int:
        return sum(r.created for r in self.enqueued)


class RelayEngine:
    def __init__(
        self,
        config: RelayConfig,
        outbox: Outbox,
        state: RelayState | None = None,
        journal: RelayJournal | None = None,
    ) -> None:
        self.config = config
        self.outbox = outbox
        self.state = state or RelayState(outbox.engine, outbox.write_engine)
        self.journal = journal or RelayJournal(outbox.engine, outbox.write_engine)

    def ingest(self, event: StateEvent, now: float | None = None) -> IngestResult:
        now = time.time() if now is None else now
        result = IngestResult()
        for rule, conditions in matching_rules(self.config, event):
            result.matched.append(rule.name)
            if not rule.all_of:
                result.planned += plan_actions(rule, [event])
                continue
            fired = self.state.record(rule, conditions, event, now)
            if fired is None:
                result.waiting.append(rule.name)
            else:
                result.planned += plan_actions(rule, fired)
        if result.planned:
            result.enqueued = self.outbox.enqueue(
                [
                    NewItem(
                        kind=p.kind, target=p.target, payload=p.payload, idempotency_key=p.idempotency_key
                    )
                    for p in result.planned
                ]
            )
        self._record(event, result, now)
        return result

    def _record(self, event: StateEvent, result: IngestResult, now: float) -> None:
        """Keep what was decided, for the operator's page; never fails the ingest."""
        try:
            rules = {r.name: r for r in self.config.rules}
            waiting = {
                name: waiting_conditions(rules[name], self.state.pending(rules[name], now))
                for name in result.waiting
            }
            decision = outcome(
                matched=result.matched, waiting=waiting, planned=result.planned, enqueued=result.enqueued
            )
            self.journal.record(event, decision, now)
        except Exception:
            log.exception("astro-xdeps could not record relay event %s in the journal", event.id)

    def explain(self, event: StateEvent, now: float | None = None) -> list[str]:
        """Say, without writing anything, which rules match and what they would do."""
        now = time.time() if now is None else now
        lines = []
        matches = matching_rules(self.config, event)
        if not matches:
            return [f"no rule matches {event.type} of {event.dag_id}"]
        for rule, conditions in matches:
            firing = [event]
            if rule.all_of:
                # The firing ``ingest`` would make: the latest pending event per condition.
                latest = self.state.latest_pending(rule, now)
                for i in conditions:
                    if i not in latest or latest[i].occurred_at <= event.occurred_at:
                        latest[i] = event
                missing = [i for i in range(len(rule.conditions)) if i not in latest]
                head = f"rule {rule.name}: matches condition(s) {', '.join(str(i + 1) for i in conditions)} of {len(rule.conditions)}"
                if missing:
                    lines.append(
                        f"{head}; still waiting for {', '.join(str(i + 1) for i in missing)} (window {rule.within_seconds:g}s): nothing yet"
                    )
                    continue
                lines.append(f"{head}; the others are recorded: it would fire")
                firing = sorted(latest.values(), key=lambda e: e.occurred_at)
            else:
                lines.append(f"rule {rule.name}: matches")
            for p in plan_actions(rule, firing):
                if p.kind == "dag_run":
                    lines.append(
                        f"  -> trigger {p.payload['dag_id']} on {p.target} as run {p.payload['dag_run_id']}"
                    )
                else:
                    lines.append(f"  -> asset event {p.payload['uri']} on {p.target}")
        return lines

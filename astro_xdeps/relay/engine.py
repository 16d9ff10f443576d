"""The relay engine: an event in, matching rules evaluated, actions written to the outbox.

Every door (webhook, scheduler listener, notifier) ends here. ``ingest`` returns only after
the actions are durably in the outbox; a repeated event has no second effect because every
action's idempotency key (a deterministic ``dag_run_id`` or event id) is derived from the
rule and the ids of the events that fired it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from astro_xdeps.outbox.models import EnqueueResult, NewItem
from astro_xdeps.outbox.store import Outbox
from astro_xdeps.relay.firing import Match, decide, match_time
from astro_xdeps.relay.journal import RelayJournal, outcome, waiting_conditions
from astro_xdeps.relay.rules import PlannedAction, RelayConfig, Rule, matching_rules, plan_actions
from astro_xdeps.relay.state import RelayState
from astro_xdeps.state_events import StateEvent

if TYPE_CHECKING:
    from astro_xdeps.relay.deadlines import DeadlineState

log = logging.getLogger(__name__)


@dataclass
class IngestResult:
    matched: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # stateful rules not satisfied yet
    unsatisfied: dict[str, list[int]] = field(default_factory=dict)  # conditions each waiting rule lacks
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
        deadlines: DeadlineState | None = None,
        journal: RelayJournal | None = None,
    ) -> None:
        self.config = config
        self.outbox = outbox
        self.state = state or RelayState(outbox.db)
        self.journal = journal or RelayJournal(outbox.db)
        self.deadlines = deadlines
        if deadlines is None and config.deadline_rules:
            from astro_xdeps.relay.deadlines import DeadlineState

            self.deadlines = DeadlineState(outbox.db)

    def ingest(self, event: StateEvent, now: float | None = None) -> IngestResult:
        now = time.time() if now is None else now
        result = IngestResult()
        self._evaluate(event, now, result)
        self._enqueue(result)
        self._record(event, result, now)
        return result

    async def ingest_async(self, event: StateEvent, now: float | None = None) -> IngestResult:
        """:meth:`ingest` for the event loop: the whole ingest is one write of the outbox's writer.

        Its state, outbox and journal writes commit together (with whatever else arrived), and
        the event loop awaits that commit without a thread of its own.
        """
        return await self.outbox.write_async("ingest an event", lambda _conn: self.ingest(event, now))

    def _evaluate(self, event: StateEvent, now: float, result: IngestResult) -> None:
        for rule, conditions in matching_rules(self.config, event):
            result.matched.append(rule.name)
            if rule.deadline is not None:
                assert self.deadlines is not None
                late = self.deadlines.observe(rule, event, now)
                if late is not None and rule.late_actions:
                    result.planned += plan_actions(rule, late, rule.late_actions)
                continue
            if not rule.stateful:
                result.planned += plan_actions(rule, [event])
                continue
            decision = self.state.record(rule, conditions, event, now)
            if decision.firing is None:
                result.waiting.append(rule.name)
                result.unsatisfied[rule.name] = decision.unsatisfied(rule)
            else:
                result.planned += plan_actions(rule, decision.firing)

    def _enqueue(self, result: IngestResult) -> None:
        if result.planned:
            result.enqueued = self.outbox.enqueue(
                [
                    NewItem(
                        kind=p.kind, target=p.target, payload=p.payload, idempotency_key=p.idempotency_key
                    )
                    for p in result.planned
                ]
            )

    def tick(self, now: float | None = None) -> IngestResult:
        """Decide the deadlines that are due: a missed one fires its rule's ``then`` once.

        The ``dag_run.missed_deadline`` event also goes through every other rule, like an
        event from upstream. Called by the deadline clock (scheduler, ``relay serve``).
        """
        now = time.time() if now is None else now
        result = IngestResult()
        if self.deadlines is None:
            return result
        for rule in self.config.deadline_rules:
            for decision in self.deadlines.decide(rule, now):
                missed = decision.missed
                one = IngestResult(matched=[rule.name], planned=plan_actions(rule, [missed]))
                if decision.late is not None and rule.late_actions:
                    one.planned += plan_actions(rule, decision.late, rule.late_actions)
                self._evaluate(missed, now, one)
                self._enqueue(one)
                self.deadlines.mark_enqueued(rule, missed.occurred_at)
                self._record(missed, one, now)
                result.matched += one.matched
                result.waiting += one.waiting
                result.unsatisfied.update(one.unsatisfied)
                result.planned += one.planned
                result.enqueued += one.enqueued
        return result

    def _record(self, event: StateEvent, result: IngestResult, now: float) -> None:
        """Keep what was decided, for the operator's page; never fails the ingest."""
        try:
            rules = {r.name: r for r in self.config.rules}
            waiting = {
                name: waiting_conditions(rules[name], result.unsatisfied[name]) for name in result.waiting
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
            if rule.deadline is not None:
                assert self.deadlines is not None
                lines.append(
                    f"rule {rule.name}: deadline rule; this event meets the deadline its window holds"
                )
                lines += self.deadlines.status(rule, now)
                continue
            if rule.stateful:
                fires, counter_lines, firing, unsatisfied = self._explain_stateful(
                    rule, conditions, event, now
                )
                head = (
                    f"rule {rule.name}: matches condition(s) {', '.join(str(i + 1) for i in conditions)} "
                    f"of {len(rule.conditions)}"
                )
                if rule.required != len(rule.conditions):
                    head += f" ({rule.required} needed)"
                if fires:
                    lines.append(f"{head}; the others are recorded: it would fire")
                else:
                    lines.append(
                        f"{head}; still waiting for {', '.join(str(i + 1) for i in unsatisfied)} "
                        f"(window {rule.within_seconds:g}s): nothing yet"
                    )
                lines += counter_lines
                if not fires:
                    continue
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

    def _explain_stateful(
        self, rule: Rule, conditions: Sequence[int], event: StateEvent, now: float
    ) -> tuple[bool, list[str], list[StateEvent], list[int]]:
        """What ``record`` would do with ``event`` (the same ``decide``), and every condition's counter."""
        occurred = match_time(rule, event, now)
        new = None if occurred is None else Match(event.key, occurred, event)
        decision = decide(rule, self.state.pending_matches(rule, now), new, conditions)
        counters = []
        for i, cond in enumerate(rule.conditions):
            n = decision.counts.get(i, 0)
            mark = "satisfied" if n >= cond.count else f"{cond.count - n} more needed"
            counters.append(
                f"  condition {i + 1} ({'/'.join(cond.types)} {cond.dag_id}): "
                f"{min(n, cond.count)} of {cond.count} in the window, {mark}"
            )
        if decision.firing is None:
            return False, counters, [], decision.unsatisfied(rule)
        return True, counters, [m.event for m in decision.firing], decision.unsatisfied(rule)

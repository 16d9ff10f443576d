"""Which events would fire a stateful rule (when_all, at_least, count). Pure.

One decision for both callers: ``RelayState.record`` makes it inside its transaction, with the
event already stored, and ``RelayEngine.explain`` makes it on what is stored plus the event, without
writing anything. So ``relay explain`` always says what ``ingest`` would do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from astro_xdeps.relay.rules import Rule
    from astro_xdeps.state_events import StateEvent

T = TypeVar("T")
E = TypeVar("E")


@dataclass(frozen=True)
class Match(Generic[T]):
    """An unconsumed match of a rule's condition inside its window, as the relay state keeps it."""

    key: str  # StateEvent.key: one event counts once per condition
    occurred: float  # unix seconds, never after the time it was recorded
    event: T  # the stored event (JSON text in the state's rows, a StateEvent for explain)


@dataclass(frozen=True)
class Decision(Generic[E]):
    """``counts``: distinct matches per condition index; ``firing``: the events of a firing
    (distinct, oldest first), or None while the rule is not satisfied."""

    counts: Mapping[int, int]
    firing: list[E] | None

    def unsatisfied(self, rule: Rule) -> list[int]:
        """The indexes of the conditions still short of their ``count``."""
        return [i for i, c in enumerate(rule.conditions) if self.counts.get(i, 0) < c.count]


def match_time(rule: Rule, event: StateEvent, now: float) -> float | None:
    """When ``event`` counts for ``rule``'s window, or None when it is outside the window.

    A sender's clock ahead of ours must not move the window: nothing happens after ``now``.
    """
    assert rule.within_seconds is not None
    occurred = min(event.occurred_at.timestamp(), now)
    return occurred if occurred >= now - rule.within_seconds else None


def decide(
    rule: Rule,
    pending: Mapping[int, Sequence[Match[T]]],
    new: Match[T] | None = None,
    conditions: Sequence[int] = (),
) -> Decision[Match[T]]:
    """Whether ``rule`` fires on its ``pending`` matches (oldest first), plus ``new`` for the
    ``conditions`` it matches (when not already among them), and with which events."""
    matches = {i: list(found) for i, found in pending.items()}
    if new is not None:
        for i in conditions:
            found = matches.setdefault(i, [])
            if all(m.key != new.key for m in found):
                found.append(new)
                found.sort(key=lambda m: (m.occurred, m.key))
    counts = {i: len(found) for i, found in matches.items() if found}
    selected = _select_firing(rule, {i: found for i, found in matches.items() if found})
    if selected is None:
        return Decision(counts, None)
    # One event can satisfy several conditions: it is in the firing once.
    unique = {m.key: m for m in selected}
    return Decision(counts, sorted(unique.values(), key=lambda m: (m.occurred, m.key)))


def _select_firing(rule: Rule, matches: dict[int, list[T]]) -> list[T] | None:
    """The matches a firing uses, or None when ``rule`` is not satisfied yet.

    ``matches``: the unconsumed distinct events per condition index inside the window, oldest
    first. A condition is satisfied by ``count`` of them; the rule by ``rule.required``
    satisfied conditions. A firing uses the latest ``count`` events of every satisfied condition.
    """
    satisfied = [i for i, found in matches.items() if len(found) >= rule.conditions[i].count]
    if len(satisfied) < rule.required:
        return None
    return [m for i in sorted(satisfied) for m in matches[i][-rule.conditions[i].count :]]

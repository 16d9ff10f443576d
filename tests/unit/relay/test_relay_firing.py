"""The one decision of stateful rules (``relay/firing.py``), pure: no database, no engine."""

from __future__ import annotations

from datetime import datetime, timezone

from astro_xdeps.relay.config import parse_config
from astro_xdeps.relay.firing import Match, decide, match_time
from astro_xdeps.relay.rules import Rule
from astro_xdeps.state_events import StateEvent

NOW = 1_800_000_000.0


def rule(raw: dict) -> Rule:
    return parse_config(
        {"rules": [{"name": "r", "then": {"trigger_dag": {"target": "t", "dag_id": "d"}}, **raw}]}
    ).rules[0]


WHEN_ALL = rule({"when_all": [{"dag_id": "a"}, {"dag_id": "b"}], "within": "1h"})
TWO_OF = rule({"when": {"dag_id": "*", "count": 2}, "within": "1h"})


def m(key: str, seconds_ago: float) -> Match[str]:
    return Match(key, NOW - seconds_ago, key)


def event(seconds_ago: float) -> StateEvent:
    at = datetime.fromtimestamp(NOW - seconds_ago, tz=timezone.utc)
    return StateEvent(id="e", type="dag_run.success", dag_id="a", occurred_at=at)


def test_a_rule_waits_until_every_condition_has_a_match() -> None:
    decision = decide(WHEN_ALL, {0: [m("a1", 60)]})
    assert (decision.firing, decision.counts, decision.unsatisfied(WHEN_ALL)) == (None, {0: 1}, [1])


def test_the_new_event_completes_the_firing_oldest_first() -> None:
    decision = decide(WHEN_ALL, {0: [m("a1", 60)]}, m("b1", 0), [1])
    assert [x.key for x in decision.firing] == ["a1", "b1"]
    assert decision.unsatisfied(WHEN_ALL) == []


def test_the_new_event_counts_once_per_condition_and_is_in_a_firing_once() -> None:
    repeat = decide(TWO_OF, {0: [m("x", 60)]}, m("x", 60), [0])
    assert (repeat.firing, repeat.counts) == (None, {0: 1})
    both = decide(WHEN_ALL, {}, m("ab", 0), [0, 1])
    assert [x.key for x in both.firing] == ["ab"]


def test_a_count_fires_with_the_latest_matches() -> None:
    decision = decide(TWO_OF, {0: [m("old", 300), m("mid", 200)]}, m("new", 0), [0])
    assert [x.key for x in decision.firing] == ["mid", "new"]


def test_match_time_is_never_after_now_and_none_outside_the_window() -> None:
    assert match_time(WHEN_ALL, event(-600), NOW) == NOW  # a sender's clock ahead of ours
    assert match_time(WHEN_ALL, event(60), NOW) == NOW - 60
    assert match_time(WHEN_ALL, event(3601), NOW) is None

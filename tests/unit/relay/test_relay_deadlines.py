"""Deadline (absence) rules with a fake clock, on SQLite and PostgreSQL.

Every ``now`` is explicit: the engine's ``tick(now)`` is what the clock thread calls. The
deadline of the main rule is 06:00 Europe/Berlin on weekdays, its window opens 12 h before.
Wednesday 2026-01-28 06:00 CET is 05:00 UTC.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from astro_xdeps.exceptions import ConfigError
from astro_xdeps.outbox import Outbox
from astro_xdeps.relay.config import parse_config
from astro_xdeps.relay.deadlines import DeadlineClock, DeadlineState, deadlines_table
from astro_xdeps.relay.engine import RelayEngine
from astro_xdeps.relay.rules import RelayConfig
from astro_xdeps.relay.schedule import DeadlineSchedule
from astro_xdeps.state_events import StateEvent
from tests.unit.relay.replicas import inserts_into, run_together, stall_together
from tests.unit.relay.test_relay_engine import (  # noqa: F401  (fixtures)
    items,
    open_outbox,
    outbox,
    pg_schema_url,
    url,
)

UTC = timezone.utc
DEADLINE = datetime(2026, 1, 28, 5, 0, tzinfo=UTC)  # Wed 06:00 Europe/Berlin
OPENS = DEADLINE - timedelta(hours=12)


def _config(**deadline: Any) -> RelayConfig:
    return parse_config(
        {
            "rules": [
                {
                    "name": "extract-a-by-six",
                    "deadline": {
                        "expect": {"type": "dag_run.success", "dag_id": "extract_a"},
                        "cron": "0 6 * * 1-5",
                        "timezone": "Europe/Berlin",
                        "within": "12h",
                        "grace": "60s",
                        **deadline,
                    },
                    "then": [
                        {
                            "trigger_dag": {
                                "target": "down",
                                "dag_id": "fallback",
                                "conf": {
                                    "missed": "{dag_id}",
                                    "deadline": "{occurred_at}",
                                    "why": "{message}",
                                },
                                "note": "{type}",
                            }
                        }
                    ],
                    "on_late": [
                        {
                            "trigger_dag": {
                                "target": "down",
                                "dag_id": "caught_up",
                                "conf": {"run": "{run_id}"},
                            }
                        }
                    ],
                },
                {
                    "name": "tell-ops-about-any-miss",
                    "when": {"type": "dag_run.missed_deadline"},
                    "then": [
                        {
                            "asset_event": {
                                "target": "ops",
                                "uri": "ops://missed",
                                "extra": {"dag": "{dag_id}"},
                            }
                        }
                    ],
                },
            ]
        }
    )


CONFIG = _config()
# The statement that claims a missed deadline: where two racing evaluators are made to overlap.
MISSED_CLAIM = inserts_into(deadlines_table.name, with_value="missed")


def success(event_id: str, when: datetime, dag_id: str = "extract_a") -> StateEvent:
    return StateEvent(
        id=event_id, type="dag_run.success", dag_id=dag_id, run_id=f"run_{event_id}", occurred_at=when
    )


def ts(when: datetime) -> float:
    return when.timestamp()


@pytest.fixture
def engine(outbox: Outbox) -> RelayEngine:  # noqa: F811
    e = RelayEngine(CONFIG, outbox)
    e.tick(ts(OPENS - timedelta(hours=1)))  # the rule is watched from before the window opens
    return e


def dag_runs(outbox: Outbox, dag_id: str) -> list:  # noqa: F811
    return [i for i in items(outbox) if i.kind == "dag_run" and i.payload["dag_id"] == dag_id]


def test_an_event_just_before_the_deadline_meets_it(engine: RelayEngine, outbox: Outbox) -> None:  # noqa: F811
    engine.ingest(success("e1", DEADLINE - timedelta(seconds=1)), now=ts(DEADLINE))
    for minutes in (1, 2, 60, 600):
        assert engine.tick(ts(DEADLINE + timedelta(minutes=minutes))).new_actions == 0
    assert items(outbox) == []


def test_an_event_delivered_late_that_happened_in_time_meets_it_within_grace(
    engine: RelayEngine,
    outbox: Outbox,  # noqa: F811
) -> None:
    engine.ingest(success("e1", DEADLINE - timedelta(seconds=5)), now=ts(DEADLINE + timedelta(seconds=30)))
    assert engine.tick(ts(DEADLINE + timedelta(minutes=2))).new_actions == 0
    assert items(outbox) == []


def test_no_event_fires_once_after_the_grace(engine: RelayEngine, outbox: Outbox) -> None:  # noqa: F811
    assert engine.tick(ts(DEADLINE)).new_actions == 0
    assert engine.tick(ts(DEADLINE + timedelta(seconds=59))).new_actions == 0  # still in grace
    result = engine.tick(ts(DEADLINE + timedelta(seconds=60)))
    assert result.new_actions == 2  # the rule's action and the rule that listens for misses
    [run] = dag_runs(outbox, "fallback")
    assert run.payload["conf"]["missed"] == "extract_a"
    assert run.payload["conf"]["deadline"] == "2026-01-28T05:00:00+00:00"
    assert run.payload["conf"]["why"] == "no dag_run.success of extract_a by 2026-01-28 06:00 Europe/Berlin"
    assert run.payload["note"] == "dag_run.missed_deadline"
    [asset] = [i for i in items(outbox) if i.kind == "asset_event"]
    assert (asset.payload["uri"], asset.payload["extra"]["dag"]) == ("ops://missed", "extract_a")
    for minutes in (2, 30, 600):
        assert engine.tick(ts(DEADLINE + timedelta(minutes=minutes))).new_actions == 0
    assert len(items(outbox)) == 2


def test_an_event_just_after_the_deadline_misses_it_and_fires_on_late_once(
    engine: RelayEngine,
    outbox: Outbox,  # noqa: F811
) -> None:
    late = success("e1", DEADLINE + timedelta(seconds=1))
    # It comes before the clock decides: the miss and the late arrival are decided together.
    assert engine.ingest(late, now=ts(DEADLINE + timedelta(seconds=2))).new_actions == 0
    assert engine.tick(ts(DEADLINE + timedelta(minutes=1))).new_actions == 3
    assert len(dag_runs(outbox, "fallback")) == 1
    [caught_up] = dag_runs(outbox, "caught_up")
    assert caught_up.payload["conf"]["run"] == "run_e1"
    # Neither a repeat, nor a second success, nor another tick fires anything more.
    assert engine.ingest(late, now=ts(DEADLINE + timedelta(minutes=3))).new_actions == 0
    assert (
        engine.ingest(
            success("e2", DEADLINE + timedelta(hours=1)), now=ts(DEADLINE + timedelta(hours=1))
        ).new_actions
        == 0
    )
    assert engine.tick(ts(DEADLINE + timedelta(hours=2))).new_actions == 0
    assert len(items(outbox)) == 3
    # Both came before Thursday's window opened (18:00 the evening before): Thursday is missed too.
    assert engine.tick(ts(DEADLINE + timedelta(days=1, minutes=2))).new_actions == 2


def test_the_first_event_after_a_miss_fires_on_late_once(engine: RelayEngine, outbox: Outbox) -> None:  # noqa: F811
    engine.tick(ts(DEADLINE + timedelta(minutes=1)))
    first = success("e1", DEADLINE + timedelta(hours=2))
    assert engine.ingest(first, now=ts(DEADLINE + timedelta(hours=2))).new_actions == 1
    assert engine.ingest(first, now=ts(DEADLINE + timedelta(hours=3))).new_actions == 0  # a repeat
    assert (
        engine.ingest(
            success("e2", DEADLINE + timedelta(hours=4)), now=ts(DEADLINE + timedelta(hours=4))
        ).new_actions
        == 0
    )
    [caught_up] = dag_runs(outbox, "caught_up")
    assert caught_up.payload["conf"]["run"] == "run_e1"


def test_two_evaluators_at_once_fire_once(open_outbox: Callable[[], Outbox]) -> None:  # noqa: F811
    """Two schedulers (own outbox and engine each) tick at the same moment after a missed deadline.

    Each transaction stalls after its claim until the other has tried too (or 2 s passed).
    """
    RelayEngine(CONFIG, open_outbox()).tick(ts(OPENS - timedelta(hours=1)))
    replicas = [open_outbox(), open_outbox()]
    stall_together(replicas, after=MISSED_CLAIM)
    engines = [RelayEngine(CONFIG, replica) for replica in replicas]
    late = ts(DEADLINE + timedelta(minutes=5))
    results = run_together([lambda: engines[0].tick(late), lambda: engines[1].tick(late)])
    assert not any(isinstance(r, BaseException) for r in results), results
    assert sorted(r.new_actions for r in results) == [0, 2]
    assert len(items(engines[0].outbox)) == 2


def test_two_evaluators_at_once_claim_a_deadline_once(open_outbox: Callable[[], Outbox]) -> None:  # noqa: F811
    """The claim itself: of two concurrent decisions, exactly one creates the ``missed`` row.

    (The outbox's idempotency keys would also drop a second firing's items; this shows the
    decision does not depend on that.)
    """
    rule = CONFIG.rules[0]
    replicas = [open_outbox(), open_outbox()]
    stall_together(replicas, after=MISSED_CLAIM)
    states = [DeadlineState(replica.db) for replica in replicas]
    states[0].decide(rule, ts(OPENS - timedelta(hours=1)))
    late = ts(DEADLINE + timedelta(minutes=5))
    outcomes = run_together([lambda: states[0].decide(rule, late), lambda: states[1].decide(rule, late)])
    decisions = [d for outcome in outcomes for d in (outcome if isinstance(outcome, list) else [outcome])]
    assert sorted(d.created for d in decisions) == [False, True], decisions


def test_a_restart_during_the_window_still_fires_once(open_outbox: Callable[[], Outbox]) -> None:  # noqa: F811
    before = open_outbox()
    RelayEngine(CONFIG, before).tick(ts(OPENS - timedelta(hours=1)))  # watching before the window
    RelayEngine(CONFIG, before).tick(ts(OPENS + timedelta(hours=1)))  # in the window
    before.close()
    # Down across the deadline; back at 06:30.
    after = RelayEngine(CONFIG, open_outbox())
    assert after.tick(ts(DEADLINE + timedelta(minutes=30))).new_actions == 2
    assert RelayEngine(CONFIG, open_outbox()).tick(ts(DEADLINE + timedelta(minutes=31))).new_actions == 0
    assert len(dag_runs(after.outbox, "fallback")) == 1


def test_an_event_before_the_restart_is_remembered(open_outbox: Callable[[], Outbox]) -> None:  # noqa: F811
    before = RelayEngine(CONFIG, open_outbox())
    before.tick(ts(OPENS - timedelta(hours=1)))
    before.ingest(success("e1", OPENS + timedelta(hours=3)), now=ts(OPENS + timedelta(hours=3)))
    before.outbox.close()
    after = RelayEngine(CONFIG, open_outbox())
    assert after.tick(ts(DEADLINE + timedelta(minutes=30))).new_actions == 0
    assert items(after.outbox) == []


def test_a_rule_installed_during_a_window_judges_from_the_next_one(outbox: Outbox) -> None:  # noqa: F811
    engine = RelayEngine(CONFIG, outbox)
    assert engine.tick(ts(DEADLINE - timedelta(hours=1))).new_actions == 0  # first seen mid-window
    assert engine.tick(ts(DEADLINE + timedelta(minutes=5))).new_actions == 0
    assert engine.tick(ts(DEADLINE + timedelta(days=1, minutes=5))).new_actions == 2  # Thursday


def test_an_event_outside_the_window_does_not_meet_the_deadline(engine: RelayEngine, outbox: Outbox) -> None:  # noqa: F811
    engine.ingest(success("early", OPENS - timedelta(minutes=1)), now=ts(OPENS - timedelta(minutes=1)))
    engine.ingest(
        success("other", OPENS + timedelta(hours=1), dag_id="extract_b"), now=ts(OPENS + timedelta(hours=1))
    )
    assert engine.tick(ts(DEADLINE + timedelta(minutes=1))).new_actions == 2


def test_no_deadline_on_the_weekend(engine: RelayEngine, outbox: Outbox) -> None:  # noqa: F811
    friday = datetime(2026, 1, 30, 5, 0, tzinfo=UTC)
    # Friday's deadline is met; nothing runs over the weekend; Monday 06:00 is missed.
    engine.ingest(success("fri", friday - timedelta(hours=1)), now=ts(friday - timedelta(hours=1)))
    for hours in range(1, 72, 3):
        assert engine.tick(ts(friday + timedelta(hours=hours))).new_actions == 0
    assert engine.tick(ts(friday + timedelta(days=3, minutes=1))).new_actions == 2
    assert dag_runs(outbox, "fallback")[0].payload["conf"]["deadline"] == "2026-02-02T05:00:00+00:00"


def _ticks(engine: RelayEngine, start: datetime, end: datetime, step: timedelta) -> list[str]:
    fired = []
    while start <= end:
        result = engine.tick(ts(start))
        fired += [
            p.payload["conf"]["deadline"] for p in result.planned if p.payload.get("dag_id") == "fallback"
        ]
        start += step
    return fired


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        # Spring forward: 02:30 does not exist on 2026-03-29; the deadline is 03:30 CEST, once.
        (datetime(2026, 3, 29, tzinfo=UTC), ["2026-03-29T01:30:00+00:00"]),
        # Fall back: 02:30 happens twice on 2026-10-25; the deadline is the first, once.
        (datetime(2026, 10, 25, tzinfo=UTC), ["2026-10-25T00:30:00+00:00"]),
        # An ordinary day: 02:30 CET.
        (datetime(2026, 11, 5, tzinfo=UTC), ["2026-11-05T01:30:00+00:00"]),
    ],
)
def test_dst_changes_give_one_deadline(outbox: Outbox, day: datetime, expected: list[str]) -> None:  # noqa: F811
    engine = RelayEngine(_config(cron="30 2 * * *", within="2h", grace="30s"), outbox)
    engine.tick(ts(day - timedelta(hours=3)))
    assert (
        _ticks(engine, day - timedelta(hours=2), day + timedelta(hours=5), timedelta(minutes=5)) == expected
    )


def test_dst_moves_a_weekday_deadline_in_utc(outbox: Outbox) -> None:  # noqa: F811
    engine = RelayEngine(_config(), outbox)
    engine.tick(ts(datetime(2026, 3, 26, 12, tzinfo=UTC)))
    # Friday 06:00 CET is 05:00 UTC; Monday 06:00 CEST is 04:00 UTC: 04:30 UTC is too late.
    engine.ingest(
        success("fri", datetime(2026, 3, 27, 4, 59, tzinfo=UTC)),
        now=ts(datetime(2026, 3, 27, 4, 59, tzinfo=UTC)),
    )
    monday_late = datetime(2026, 3, 30, 4, 30, tzinfo=UTC)
    engine.ingest(success("mon", monday_late), now=ts(monday_late))
    fired = _ticks(
        engine,
        datetime(2026, 3, 27, 5, tzinfo=UTC),
        datetime(2026, 3, 30, 6, tzinfo=UTC),
        timedelta(minutes=30),
    )
    assert fired == ["2026-03-30T04:00:00+00:00"]
    assert len(dag_runs(outbox, "caught_up")) == 1


def test_a_firing_lost_before_the_outbox_write_is_written_by_the_next_tick(
    engine: RelayEngine,
    outbox: Outbox,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = outbox.enqueue
    calls = {"n": 0}

    def crash_once(new_items):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("process died here")
        return real(new_items)

    monkeypatch.setattr(outbox, "enqueue", crash_once)
    with pytest.raises(RuntimeError):
        engine.tick(ts(DEADLINE + timedelta(minutes=1)))
    assert items(outbox) == []
    assert engine.tick(ts(DEADLINE + timedelta(minutes=2))).new_actions == 2
    assert engine.tick(ts(DEADLINE + timedelta(minutes=3))).new_actions == 0
    with outbox.engine.connect() as conn:
        outcomes = conn.execute(sa.select(deadlines_table.c.outcome, deadlines_table.c.enqueued)).all()
    assert sorted(tuple(r) for r in outcomes) == [("missed", True), ("watching", False)]


def test_explain_shows_the_next_deadline_and_past_decisions(engine: RelayEngine) -> None:
    engine.tick(ts(DEADLINE + timedelta(minutes=1)))
    lines = engine.explain(success("x", DEADLINE + timedelta(hours=1)), now=ts(DEADLINE + timedelta(hours=1)))
    assert lines[1] == (
        "  next deadline 2026-01-29 06:00 CET (window opens 2026-01-28 18:00 CET, decided 60s after)"
    )
    assert lines[2] == "  deadline 2026-01-28 06:00 CET: missed"


def test_the_clock_thread_ticks_until_stopped() -> None:
    seen: list[float] = []
    ticked = threading.Event()

    def tick(now: float) -> None:
        seen.append(now)
        if len(seen) == 1:
            raise RuntimeError("a database hiccup")  # logged; the clock keeps going
        ticked.set()

    clock = DeadlineClock(tick, interval=0.01)
    clock.start()
    try:
        assert ticked.wait(10)
    finally:
        clock.stop()
    assert not clock.running
    assert len(seen) >= 2


def test_schedule_window_defaults_to_the_previous_deadline() -> None:
    sched = DeadlineSchedule(cron="0 6 * * 1-5", timezone="Europe/Berlin")
    monday = datetime(2026, 2, 2, 5, tzinfo=UTC)
    assert sched.window(monday) == (datetime(2026, 1, 30, 5, tzinfo=UTC), monday)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cron": "0 6 * *"}, r"deadline.cron: expected a 5-field cron"),
        ({"cron": "61 6 * * *"}, r"deadline.cron"),
        ({"timezone": "Europe/Atlantis"}, r"not a known IANA time zone"),
        ({"expect": {"type": "dag_run.success", "dag_id": "extract_*"}}, r"give its id, not 'extract_\*'"),
        ({"expect": {"type": "dag_run.missed_deadline", "dag_id": "a"}}, r"not a missed deadline"),
        ({"grace": "soon"}, r"deadline.grace: expected a duration"),
        ({"when": "x"}, r"unknown field"),
    ],
)
def test_bad_deadline_rules_say_what_to_change(change: dict, message: str) -> None:
    deadline = {"expect": {"type": "dag_run.success", "dag_id": "a"}, "cron": "0 6 * * *", "timezone": "UTC"}
    deadline.update(change)
    with pytest.raises(ConfigError, match=message):
        parse_config(
            {
                "rules": [
                    {
                        "name": "r",
                        "deadline": deadline,
                        "then": [{"trigger_dag": {"target": "t", "dag_id": "d"}}],
                    }
                ]
            }
        )


def test_on_late_only_with_a_deadline() -> None:
    with pytest.raises(ConfigError, match="on_late: only applies to deadline rules"):
        parse_config(
            {
                "rules": [
                    {
                        "name": "r",
                        "when": {"dag_id": "a"},
                        "then": {"trigger_dag": {"target": "t", "dag_id": "d"}},
                        "on_late": {"trigger_dag": {"target": "t", "dag_id": "d"}},
                    }
                ]
            }
        )

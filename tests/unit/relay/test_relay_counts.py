"""Count and any-of conditions (``count: N``, ``at_least: N``) on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from astro_xdeps.exceptions import ConfigError
from astro_xdeps.outbox import Outbox
from astro_xdeps.relay.config import parse_config
from astro_xdeps.relay.engine import RelayEngine
from astro_xdeps.relay.rules import RelayConfig, dag_run_id
from astro_xdeps.relay.state import state_table
from astro_xdeps.state_events import StateEvent
from tests.unit.relay.replicas import inserts_into, run_together, stall_together
from tests.unit.relay.test_relay_engine import (  # noqa: F401  (fixtures)
    T0,
    at,
    items,
    open_outbox,
    outbox,
    pg_schema_url,
    url,
)

CONFIG: RelayConfig = parse_config(
    {
        "rules": [
            {
                "name": "page-on-load-failures",
                "when": {"type": "dag_run.failed", "dag_id": "load_*", "count": 3},
                "within": "1h",
                "then": [
                    {
                        "trigger_dag": {
                            "target": "ops",
                            "dag_id": "page_team",
                            "conf": {"last": "{dag_id}/{run_id}"},
                        }
                    }
                ],
            },
            {
                "name": "two-of-three-regions",
                "when": [
                    {"type": "dag_run.success", "dag_id": "sync_eu"},
                    {"type": "dag_run.success", "dag_id": "sync_us"},
                    {"type": "dag_run.success", "dag_id": "sync_ap"},
                ],
                "at_least": 2,
                "within": "2h",
                "then": [{"trigger_dag": {"target": "down", "dag_id": "publish"}}],
            },
        ]
    }
)


def failed(event_id: str, minutes: float, dag_id: str = "load_orders") -> StateEvent:
    return StateEvent(
        id=event_id,
        type="dag_run.failed",
        dag_id=dag_id,
        run_id=f"run_{event_id}",
        occurred_at=T0 + timedelta(minutes=minutes),
    )


def synced(region: str, minutes: float, event_id: str | None = None) -> StateEvent:
    return StateEvent(
        id=event_id or f"sync-{region}-{minutes}",
        type="dag_run.success",
        dag_id=f"sync_{region}",
        occurred_at=T0 + timedelta(minutes=minutes),
    )


@pytest.fixture
def engine(outbox: Outbox) -> RelayEngine:  # noqa: F811
    return RelayEngine(CONFIG, outbox)


def test_count_fires_once_on_the_third_distinct_failure(engine: RelayEngine, outbox: Outbox) -> None:  # noqa: F811
    assert engine.ingest(failed("f1", 0), now=at(0)).waiting == ["page-on-load-failures"]
    assert engine.ingest(failed("f2", 10, "load_customers"), now=at(10)).new_actions == 0
    assert engine.ingest(failed("f2", 10, "load_customers"), now=at(11)).new_actions == 0  # a repeat
    assert items(outbox) == []
    third = engine.ingest(failed("f3", 20), now=at(20))
    assert third.new_actions == 1
    [item] = items(outbox)
    assert item.payload["dag_run_id"] == dag_run_id("page-on-load-failures", ["f1", "f2", "f3"])
    assert item.payload["conf"]["last"] == "load_orders/run_f3"
    assert [e["id"] for e in item.payload["conf"]["xdeps"]["events"]] == ["f1", "f2", "f3"]
    # The failures were consumed: the fourth and fifth start over, the sixth fires again.
    assert engine.ingest(failed("f3", 20), now=at(21)).new_actions == 0  # repeat of the trigger
    assert engine.ingest(failed("f4", 30), now=at(30)).new_actions == 0
    assert engine.ingest(failed("f5", 31), now=at(31)).new_actions == 0
    assert engine.ingest(failed("f6", 32), now=at(32)).new_actions == 1
    assert len(items(outbox)) == 2


def test_count_only_counts_inside_the_window(engine: RelayEngine, outbox: Outbox) -> None:  # noqa: F811
    engine.ingest(failed("f1", 0), now=at(0))
    engine.ingest(failed("f2", 30), now=at(30))
    assert engine.ingest(failed("f3", 61), now=at(61)).new_actions == 0  # f1 left the window
    assert engine.ingest(failed("f4", 62), now=at(62)).new_actions == 1
    assert [e["id"] for e in items(outbox)[0].payload["conf"]["xdeps"]["events"]] == ["f2", "f3", "f4"]


def test_at_least_two_of_three(engine: RelayEngine, outbox: Outbox) -> None:  # noqa: F811
    assert engine.ingest(synced("eu", 0), now=at(0)).new_actions == 0
    assert engine.ingest(synced("eu", 5), now=at(5)).new_actions == 0  # the same condition again
    result = engine.ingest(synced("ap", 10), now=at(10))
    assert result.new_actions == 1
    # The latest match of each satisfied condition is used.
    assert [e["id"] for e in items(outbox)[0].payload["conf"]["xdeps"]["events"]] == [
        "sync-eu-5",
        "sync-ap-10",
    ]
    assert engine.ingest(synced("us", 11), now=at(11)).new_actions == 0  # started over


def test_explain_shows_the_counters(engine: RelayEngine, outbox: Outbox) -> None:  # noqa: F811
    engine.ingest(failed("f1", 0), now=at(0))
    lines = engine.explain(failed("f2", 1), now=at(1))
    assert lines == [
        "rule page-on-load-failures: matches condition(s) 1 of 1; still waiting for 1 (window 3600s): "
        "nothing yet",
        "  condition 1 (dag_run.failed load_*): 2 of 3 in the window, 1 more needed",
    ]
    engine.ingest(failed("f2", 1), now=at(1))
    lines = engine.explain(failed("f3", 2), now=at(2))
    assert lines[0].endswith("it would fire")
    assert lines[1] == "  condition 1 (dag_run.failed load_*): 3 of 3 in the window, satisfied"
    assert lines[2].endswith(dag_run_id("page-on-load-failures", ["f1", "f2", "f3"]))
    assert items(outbox) == []  # explain wrote nothing
    lines = engine.explain(synced("us", 3), now=at(3))
    assert lines[0] == (
        "rule two-of-three-regions: matches condition(s) 2 of 3 (2 needed); still waiting for 1, 3 "
        "(window 7200s): nothing yet"
    )


def test_two_evaluators_fire_a_count_rule_once(open_outbox: Callable[[], Outbox]) -> None:  # noqa: F811
    """Two replicas take the third and the fourth failure at the same moment: one firing, not two.

    Each transaction stalls after its insert until the other has inserted too (or 2 s passed);
    unserialised, both would see three failures and fire twice with different run ids.
    """
    first = RelayEngine(CONFIG, open_outbox())
    first.ingest(failed("f1", 0), now=at(0))
    first.ingest(failed("f2", 1), now=at(1))
    replicas = [open_outbox(), open_outbox()]
    stall_together(replicas, after=inserts_into(state_table.name))
    engines = [RelayEngine(CONFIG, replica) for replica in replicas]
    results = run_together(
        [
            lambda: engines[0].ingest(failed("f3", 2), now=at(3)),
            lambda: engines[1].ingest(failed("f4", 2.5), now=at(3)),
        ]
    )
    assert not any(isinstance(r, BaseException) for r in results), results
    assert sorted(r.new_actions for r in results) == [0, 1]
    assert len(items(first.outbox)) == 1


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"when": {"type": "dag_run.failed", "count": 3}}, r"within: required with 'at_least' or 'count'"),
        ({"when": {"type": "dag_run.failed", "count": 0}, "within": "1h"}, r"count: an integer from 1"),
        ({"when": [{"dag_id": "a"}, {"dag_id": "b"}], "at_least": 3, "within": "1h"}, r"from 1 to 2"),
        ({"when": {"dag_id": "a"}, "within": "1h"}, r"within: only applies to"),
        ({"when_all": [{"dag_id": "a"}, {"dag_id": "b"}], "at_least": True, "within": "1h"}, "at_least"),
    ],
)
def test_bad_count_rules_say_what_to_change(rule: dict, message: str) -> None:
    raw = {"name": "r", "then": [{"trigger_dag": {"target": "t", "dag_id": "d"}}], **rule}
    with pytest.raises(ConfigError, match=message):
        parse_config({"rules": [raw]})

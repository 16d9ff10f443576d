"""RelayEngine + RelayState on a real outbox (SQLite and PostgreSQL): one event in, actions out.

PostgreSQL tests use ``XDEPS_TEST_PG_URL`` (default: the local test database). The relay state's
table name is fixed, so each test gets its own schema (``search_path``), dropped afterwards.
When the server is unreachable they skip, except under ``CI`` where they fail.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from astro_xdeps.exceptions import RelayStateError
from astro_xdeps.outbox import Outbox, OutboxError
from astro_xdeps.outbox.sa_compat import make_url
from astro_xdeps.relay.config import parse_config
from astro_xdeps.relay.engine import RelayEngine
from astro_xdeps.relay.rules import RelayConfig, dag_run_id, firing_id
from astro_xdeps.relay.state import RelayState, state_table
from astro_xdeps.state_events import StateEvent
from tests.unit.relay.replicas import inserts_into, run_together, stall_together

T0 = datetime(2026, 1, 31, 12, 0, 0, tzinfo=timezone.utc)
HOUR = 3600.0

CONFIG: RelayConfig = parse_config(
    {
        "rules": [
            {
                "name": "recover-orders",
                "when": {"type": "dag_run.failed", "dag_id": "load_orders*"},
                "then": [
                    {
                        "trigger_dag": {
                            "target": "downstream",
                            "dag_id": "recover_orders",
                            "conf": {"failed_dag": "{dag_id}", "failed_run": "{run_id}"},
                            "note": "{dag_id} failed",
                        }
                    }
                ],
            },
            {
                "name": "publish-everywhere",
                "when": {"type": "dag_run.success", "dag_id": "publish"},
                "then": [
                    {"trigger_dag": {"target": "eu", "dag_id": "refresh"}},
                    {"trigger_dag": {"target": "us", "dag_id": "refresh"}},
                    {"asset_event": {"target": "eu", "uri": "s3://published/latest"}},
                ],
            },
            {
                "name": "all-extracts",
                "when_all": [
                    {"type": "dag_run.success", "dag_id": "extract_a"},
                    {"type": "dag_run.success", "dag_id": "extract_b"},
                ],
                "within": "1h",
                "then": [{"trigger_dag": {"target": "downstream", "dag_id": "build_report"}}],
            },
        ]
    }
)


def ev(
    event_id: str, dag_id: str, minutes: float = 0, event_type: str = "dag_run.success", **kw: Any
) -> StateEvent:
    return StateEvent(
        id=event_id, type=event_type, dag_id=dag_id, occurred_at=T0 + timedelta(minutes=minutes), **kw
    )


def at(minutes: float) -> float:
    """Unix seconds ``minutes`` after T0: an explicit ``now`` for ingest/explain."""
    return (T0 + timedelta(minutes=minutes)).timestamp()


def A(event_id: str = "A", minutes: float = 0) -> StateEvent:
    return ev(event_id, "extract_a", minutes)


def B(event_id: str = "B", minutes: float = 1) -> StateEvent:
    return ev(event_id, "extract_b", minutes)


def items(outbox: Outbox) -> list:
    return outbox.list_items(limit=1000)


def state_rows(outbox: Outbox) -> list[tuple]:
    with outbox.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.select(state_table).order_by(*state_table.primary_key))]


# --- backends ------------------------------------------------------------------------------------


@pytest.fixture
def pg_schema_url(pg_url: str) -> Iterator[str]:
    """A URL whose tables land in a fresh schema of the test database, dropped afterwards."""
    schema = f"xdeps_relay_t{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(pg_url)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        yield (
            make_url(pg_url)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    finally:
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'outbox.db'}"
    return request.getfixturevalue("pg_schema_url")


@pytest.fixture
def open_outbox(url: str) -> Iterator[Callable[[], Outbox]]:
    """Opens a new Outbox on this test's database; every one is closed at teardown."""
    opened: list[Outbox] = []

    def open_() -> Outbox:
        outbox = Outbox.from_url(url)
        opened.append(outbox)
        return outbox

    yield open_
    for outbox in opened:
        outbox.close()


@pytest.fixture
def outbox(open_outbox: Callable[[], Outbox]) -> Outbox:
    return open_outbox()


@pytest.fixture
def engine(outbox: Outbox) -> RelayEngine:
    return RelayEngine(CONFIG, outbox)


def test_pg_schema_isolation_keeps_tables_out_of_the_public_schema(pg_schema_url: str) -> None:
    outbox = Outbox.from_url(pg_schema_url)
    try:
        RelayEngine(CONFIG, outbox)
        with outbox.engine.connect() as conn:
            schema = conn.exec_driver_sql("SELECT current_schema()").scalar()
            tables = set(
                conn.exec_driver_sql(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %(s)s",
                    {"s": schema},
                ).scalars()
            )
    finally:
        outbox.close()
    assert schema.startswith("xdeps_relay_t")
    assert {"xdeps_outbox", "xdeps_relay_state"} <= tables


# --- one-to-one and one-to-many ------------------------------------------------------------------


def test_one_to_one_rule_enqueues_one_dag_run(engine: RelayEngine, outbox: Outbox) -> None:
    failed = ev("evt-1", "load_orders_eu", event_type="dag_run.failed", run_id="run-7")
    result = engine.ingest(failed, now=at(0))
    assert (result.matched, result.waiting, result.new_actions) == (["recover-orders"], [], 1)
    [item] = items(outbox)
    run_id = dag_run_id("recover-orders", ["evt-1"])
    assert (item.kind, item.target, item.idempotency_key, item.state) == (
        "dag_run",
        "downstream",
        run_id,
        "pending",
    )
    assert item.payload == {
        "dag_id": "recover_orders",
        "dag_run_id": run_id,
        "conf": {
            "failed_dag": "load_orders_eu",
            "failed_run": "run-7",
            "xdeps": {"rule": "recover-orders", "events": [failed.to_dict()]},
        },
        "note": "load_orders_eu failed",
    }
    assert [e.id for e in result.enqueued] == [item.id]


def test_the_same_event_three_times_is_one_item(engine: RelayEngine, outbox: Outbox) -> None:
    failed = ev("evt-1", "load_orders", event_type="dag_run.failed")
    results = [engine.ingest(failed, now=at(i)) for i in range(3)]
    assert [r.new_actions for r in results] == [1, 0, 0]
    assert len({r.enqueued[0].id for r in results}) == 1
    assert len(items(outbox)) == 1


def test_a_second_failure_is_a_second_item(engine: RelayEngine, outbox: Outbox) -> None:
    engine.ingest(ev("evt-1", "load_orders", event_type="dag_run.failed"), now=at(0))
    engine.ingest(ev("evt-2", "load_orders", event_type="dag_run.failed"), now=at(0))
    assert len({i.payload["dag_run_id"] for i in items(outbox)}) == 2


def test_an_event_no_rule_concerns_changes_nothing(engine: RelayEngine, outbox: Outbox) -> None:
    result = engine.ingest(ev("evt-1", "load_orders"), now=at(0))  # success, the rule wants failed
    assert (result.matched, result.planned, result.enqueued, result.new_actions) == ([], [], [], 0)
    assert items(outbox) == []
    assert state_rows(outbox) == []


def test_one_to_many_enqueues_every_action_on_every_target(engine: RelayEngine, outbox: Outbox) -> None:
    result = engine.ingest(ev("pub-1", "publish"), now=at(0))
    assert result.new_actions == 3
    got = sorted((i.target, i.kind, i.payload.get("dag_id") or i.payload["uri"]) for i in items(outbox))
    assert got == [
        ("eu", "asset_event", "s3://published/latest"),
        ("eu", "dag_run", "refresh"),
        ("us", "dag_run", "refresh"),
    ]
    assert engine.ingest(ev("pub-1", "publish"), now=at(1)).new_actions == 0
    assert len(items(outbox)) == 3


# --- many-to-one ---------------------------------------------------------------------------------


def test_one_condition_alone_waits_and_enqueues_nothing(engine: RelayEngine, outbox: Outbox) -> None:
    result = engine.ingest(A(), now=at(0))
    assert (result.matched, result.waiting, result.planned, result.new_actions) == (
        ["all-extracts"],
        ["all-extracts"],
        [],
        0,
    )
    assert items(outbox) == []


def test_every_condition_within_the_window_fires_once(engine: RelayEngine, outbox: Outbox) -> None:
    a, b = A(), B()
    engine.ingest(a, now=at(0))
    result = engine.ingest(b, now=at(1))
    assert (result.waiting, result.new_actions) == ([], 1)
    [item] = items(outbox)
    assert item.payload["dag_run_id"] == dag_run_id("all-extracts", ["A", "B"])
    assert item.payload["conf"]["xdeps"] == {"rule": "all-extracts", "events": [a.to_dict(), b.to_dict()]}


def test_the_order_of_arrival_does_not_matter(engine: RelayEngine, outbox: Outbox) -> None:
    engine.ingest(B(minutes=1), now=at(2))
    assert engine.ingest(A(minutes=0), now=at(2)).new_actions == 1
    [item] = items(outbox)
    assert item.payload["dag_run_id"] == dag_run_id("all-extracts", ["A", "B"])
    assert [e["id"] for e in item.payload["conf"]["xdeps"]["events"]] == ["A", "B"]  # oldest first


def test_a_repeat_after_the_firing_neither_fires_again_nor_counts_for_the_next(
    engine: RelayEngine, outbox: Outbox
) -> None:
    engine.ingest(A(), now=at(0))
    assert engine.ingest(B(), now=at(1)).new_actions == 1
    repeat = engine.ingest(A(), now=at(2))
    assert repeat.new_actions == 0
    assert engine.ingest(B("B2", minutes=3), now=at(3)).waiting == ["all-extracts"]
    assert len(items(outbox)) == 1


def test_two_rounds_fire_twice_with_different_run_ids(engine: RelayEngine, outbox: Outbox) -> None:
    news = [
        engine.ingest(e, now=at(m)).new_actions
        for e, m in ((A(), 0), (B(), 1), (A("A2", 2), 2), (B("B2", 3), 3))
    ]
    assert news == [0, 1, 0, 1]
    run_ids = [i.payload["dag_run_id"] for i in items(outbox)]
    assert run_ids == [dag_run_id("all-extracts", ["A", "B"]), dag_run_id("all-extracts", ["A2", "B2"])]


def test_the_latest_match_of_a_condition_is_used(engine: RelayEngine, outbox: Outbox) -> None:
    engine.ingest(A(), now=at(0))
    engine.ingest(A("A2", 5), now=at(5))
    engine.ingest(B(minutes=6), now=at(6))
    [item] = items(outbox)
    assert item.payload["dag_run_id"] == dag_run_id("all-extracts", ["A2", "B"])
    # A was superseded and consumed with the firing: it does not start the next round.
    assert engine.ingest(B("B2", 7), now=at(7)).waiting == ["all-extracts"]


def test_matches_outside_the_window_expire(engine: RelayEngine, outbox: Outbox) -> None:
    engine.ingest(A(), now=at(0))
    # B comes 61 minutes later: A is out of the 1 h window, so nothing fires.
    assert engine.ingest(B(minutes=61), now=at(61)).waiting == ["all-extracts"]
    assert items(outbox) == []
    assert [r.event_id for r in _rows(outbox)] == ["B"]  # A was deleted
    # A fresh A inside B's window completes the pair.
    assert engine.ingest(A("A2", 90), now=at(90)).new_actions == 1
    assert items(outbox)[0].payload["dag_run_id"] == dag_run_id("all-extracts", ["A2", "B"])


def test_an_event_that_happened_before_the_window_is_not_counted(engine: RelayEngine, outbox: Outbox) -> None:
    engine.ingest(A(minutes=0), now=at(0))
    late = engine.ingest(B(minutes=-61), now=at(0))  # delivered now, but it happened 61 minutes ago
    assert late.waiting == ["all-extracts"]
    assert items(outbox) == []


def test_a_repeat_of_the_final_event_replans_the_same_firing(engine: RelayEngine, outbox: Outbox) -> None:
    engine.ingest(A(), now=at(0))
    first = engine.ingest(B(), now=at(1))
    again = engine.ingest(B(), now=at(2))
    assert [p.idempotency_key for p in again.planned] == [p.idempotency_key for p in first.planned]
    assert [p.payload for p in again.planned] == [p.payload for p in first.planned]
    assert [(r.id, r.created) for r in again.enqueued] == [(first.enqueued[0].id, False)]
    assert len(items(outbox)) == 1


def test_a_firing_lost_before_the_outbox_write_is_recovered_by_the_retry(
    engine: RelayEngine, outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state commits the firing, then the outbox write fails: the sender's retry re-plans it."""
    engine.ingest(A(), now=at(0))

    def down(items: Any) -> Any:
        raise OutboxError("the outbox is down")

    with monkeypatch.context() as m:
        m.setattr(outbox, "enqueue", down)
        with pytest.raises(OutboxError):
            engine.ingest(B(), now=at(1))
    assert items(outbox) == []
    retry = engine.ingest(B(), now=at(2))
    assert retry.new_actions == 1
    assert items(outbox)[0].payload["dag_run_id"] == dag_run_id("all-extracts", ["A", "B"])


def test_state_survives_reopening_the_outbox(open_outbox: Callable[[], Outbox]) -> None:
    first = open_outbox()
    RelayEngine(CONFIG, first).ingest(A(), now=at(0))
    first.close()
    second = open_outbox()
    engine = RelayEngine(CONFIG, second)
    assert engine.ingest(B(), now=at(1)).new_actions == 1
    second.close()
    third = open_outbox()
    # The firing is remembered too: a repeat after a restart has no second effect.
    again = RelayEngine(CONFIG, third).ingest(B(), now=at(2))
    assert (again.new_actions, len(again.planned)) == (0, 1)
    assert len(items(third)) == 1


def test_rules_do_not_share_state(outbox: Outbox) -> None:
    config = parse_config(
        {
            "rules": [
                {
                    "name": name,
                    "when_all": [{"dag_id": "extract_a"}, {"dag_id": "extract_b"}],
                    "within": "1h",
                    "then": [{"trigger_dag": {"target": "downstream", "dag_id": name}}],
                }
                for name in ("first", "second")
            ]
        }
    )
    engine = RelayEngine(config, outbox)
    engine.ingest(A(), now=at(0))
    result = engine.ingest(B(), now=at(1))
    assert (result.matched, result.new_actions) == (["first", "second"], 2)
    assert sorted(i.payload["dag_id"] for i in items(outbox)) == ["first", "second"]


def test_a_broken_state_table_is_a_relay_state_error(engine: RelayEngine, outbox: Outbox) -> None:
    """A database failure in the relay state is retryable (the app answers 503), not a crash."""
    with outbox.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE xdeps_relay_state")
    with pytest.raises(RelayStateError, match="relay state could not record an event"):
        engine.ingest(A(), now=at(0))
    with pytest.raises(RelayStateError, match="relay state could not read pending events"):
        engine.explain(A(), now=at(0))


def test_concurrent_events_of_one_rule_fire_exactly_once(open_outbox: Callable[[], Outbox]) -> None:
    """Two replicas (own outbox and engine each) get A and B at the same moment.

    Each transaction stalls right after inserting its match until the other one has inserted
    too, or 2 s passed. Without serialisation per rule, neither sees the other's uncommitted row
    and the pair never fires.
    """
    replicas = [open_outbox(), open_outbox()]
    stall_together(replicas, after=inserts_into(state_table.name))
    engines = [RelayEngine(CONFIG, replica) for replica in replicas]
    results = run_together(
        [lambda: engines[0].ingest(A(), now=at(2)), lambda: engines[1].ingest(B(), now=at(2))]
    )
    assert not any(isinstance(r, BaseException) for r in results), results
    assert sorted(r.new_actions for r in results) == [0, 1]
    assert len(items(engines[0].outbox)) == 1


# --- explain -------------------------------------------------------------------------------------


def _rows(outbox: Outbox) -> list:
    with outbox.engine.connect() as conn:
        return list(conn.execute(sa.select(state_table).order_by(state_table.c.occurred_at)))


def explain_without_writing(engine: RelayEngine, event: StateEvent, now: float) -> list[str]:
    before = (items(engine.outbox), state_rows(engine.outbox))
    lines = engine.explain(event, now=now)
    assert (items(engine.outbox), state_rows(engine.outbox)) == before
    return lines


def test_explain_an_event_no_rule_concerns(engine: RelayEngine) -> None:
    lines = explain_without_writing(engine, ev("x", "unrelated"), at(0))
    assert lines == ["no rule matches dag_run.success of unrelated"]


def test_explain_a_one_to_one_rule_shows_the_run_ingest_will_ask_for(
    engine: RelayEngine, outbox: Outbox
) -> None:
    failed = ev("evt-1", "load_orders", event_type="dag_run.failed")
    lines = explain_without_writing(engine, failed, at(0))
    run_id = dag_run_id("recover-orders", ["evt-1"])
    assert lines == [
        "rule recover-orders: matches",
        f"  -> trigger recover_orders on downstream as run {run_id}",
    ]
    engine.ingest(failed, now=at(0))
    assert items(outbox)[0].payload["dag_run_id"] == run_id


def test_explain_one_to_many_lists_every_action(engine: RelayEngine) -> None:
    lines = explain_without_writing(engine, ev("pub-1", "publish"), at(0))
    assert lines == [
        "rule publish-everywhere: matches",
        f"  -> trigger refresh on eu as run {dag_run_id('publish-everywhere', ['pub-1'], 0)}",
        f"  -> trigger refresh on us as run {dag_run_id('publish-everywhere', ['pub-1'], 1)}",
        "  -> asset event s3://published/latest on eu",
    ]


def test_explain_a_many_to_one_rule_still_waiting(engine: RelayEngine) -> None:
    lines = explain_without_writing(engine, A(), at(0))
    assert lines == [
        "rule all-extracts: matches condition(s) 1 of 2; still waiting for 2 (window 3600s): nothing yet",
        "  condition 1 (dag_run.success extract_a): 1 of 1 in the window, satisfied",
        "  condition 2 (dag_run.success extract_b): 0 of 1 in the window, 1 more needed",
    ]


def test_explain_a_many_to_one_rule_that_would_fire_shows_the_real_run_id(
    engine: RelayEngine, outbox: Outbox
) -> None:
    engine.ingest(A(), now=at(0))
    lines = explain_without_writing(engine, B(), at(1))
    run_id = dag_run_id("all-extracts", ["A", "B"])
    assert lines == [
        "rule all-extracts: matches condition(s) 2 of 2; the others are recorded: it would fire",
        "  condition 1 (dag_run.success extract_a): 1 of 1 in the window, satisfied",
        "  condition 2 (dag_run.success extract_b): 1 of 1 in the window, satisfied",
        f"  -> trigger build_report on downstream as run {run_id}",
    ]
    engine.ingest(B(), now=at(1))
    assert items(outbox)[0].payload["dag_run_id"] == run_id


def test_explain_ignores_expired_and_consumed_matches(engine: RelayEngine) -> None:
    engine.ingest(A(), now=at(0))
    assert "still waiting for 1 " in explain_without_writing(engine, B(minutes=61), at(61))[0]  # A expired
    engine.ingest(B(), now=at(1))  # fires: A and B are consumed
    assert "still waiting for 1 " in explain_without_writing(engine, B("B2", 2), at(2))[0]
    assert "still waiting for 2 " in explain_without_writing(engine, A("A2", 2), at(2))[0]


def test_relay_state_pending_lists_unconsumed_ids_per_condition(outbox: Outbox) -> None:
    rule = CONFIG.rules[2]
    state = RelayState(outbox.db)

    def pending_keys(now: float) -> dict[int, list[str]]:
        return {i: sorted(m.key for m in found) for i, found in state.pending_matches(rule, now).items()}

    assert state.record(rule, [0], A(), at(0)).firing is None
    waiting = state.record(rule, [0], A("A2", 1), at(1))
    assert (waiting.firing, waiting.counts, waiting.unsatisfied(rule)) == (None, {0: 2}, [1])
    assert pending_keys(at(1)) == {0: ["A", "A2"]}
    assert state.pending_matches(rule, at(1))[0][-1].event == A("A2", 1)  # the latest, as record picks it
    assert pending_keys(at(61)) == {0: ["A2"]}  # A left the window
    fired = state.record(rule, [1], B(minutes=2), at(2)).firing
    assert fired == [A("A2", 1), B(minutes=2)]
    assert pending_keys(at(2)) == {}
    assert firing_id(rule.name, [e.id for e in fired]) == firing_id(rule.name, ["B", "A2"])

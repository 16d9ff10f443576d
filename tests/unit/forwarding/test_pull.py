"""Pull-mode forwarding, pure parts: the watermark, what is new, the payload, the listener's filter."""

from __future__ import annotations

from typing import Any

from astro_xdeps.forwarding import pull
from astro_xdeps.forwarding.payload import SourceEvent, may_forward
from astro_xdeps.listeners.pull import watermark_of


def ev(i: int, ts: str, **kw: Any) -> dict:
    return {"id": i, "timestamp": f"2026-01-01T00:{ts}+00:00", "extra": {}, **kw}


def test_new_events_skips_seen_ids_and_orders_by_time_then_id() -> None:
    mark = pull.Watermark().advance(ev(1, "00:10"), 60)
    events = [ev(3, "00:20"), ev(1, "00:10"), ev(2, "00:20")]
    assert [e["id"] for e in pull.new_events(mark, events, 60)] == [2, 3]


def test_a_late_committed_event_within_the_look_back_window_is_still_caught() -> None:
    mark = pull.Watermark().advance(ev(5, "01:00"), 60)
    late = ev(4, "00:30")  # stamped earlier, committed (and listed) later
    assert pull.new_events(mark, [late, ev(5, "01:00")], 60) == [late]
    assert pull.new_events(mark, [ev(3, "00:00")], 30) == []  # older than the window: ignored


def test_advance_moves_since_up_only_and_prunes_ids_outside_the_window() -> None:
    mark = (
        pull.Watermark().advance(ev(1, "00:00"), 60).advance(ev(2, "02:00"), 60).advance(ev(3, "01:30"), 60)
    )
    assert mark.since == "2026-01-01T00:02:00+00:00"
    assert set(mark.seen) == {"2", "3"}
    assert pull.Watermark.from_json(mark.to_json()) == mark
    assert mark.query_since(60) == "2026-01-01T00:01:00+00:00"


def test_baseline_treats_existing_events_as_seen() -> None:
    mark = pull.baseline([ev(2, "00:05"), ev(1, "00:01")], 300)
    assert mark.since == "2026-01-01T00:00:05+00:00" and set(mark.seen) == {"1", "2"}
    assert pull.baseline([], 300) == pull.Watermark()


def test_seen_is_bounded() -> None:
    mark = pull.Watermark()
    for i in range(pull.MAX_SEEN + 5):
        mark = mark.advance({"id": i, "timestamp": "2026-01-01T00:00:00+00:00"}, 60)
    assert len(mark.seen) == pull.MAX_SEEN


def test_payload_has_push_shaped_provenance_and_the_watermark() -> None:
    event = ev(
        7,
        "00:07",
        uri="s3://up/a",
        extra={"rows": 3},
        source_dag_id="prod",
        source_task_id="t",
        source_run_id="r1",
        source_map_index=2,
        partition_key="2026-01-01",
    )
    after = pull.Watermark().advance(event, 60)
    payload = pull.pulled_payload(event, upstream="https://up", uri="s3://up/a", key="k", mark_after=after)
    assert payload["rows"] == 3 and payload["xdeps_event_id"] == "pull:https://up:7"
    prov = payload["xdeps"]
    assert prov["mode"] == "pull" and prov["route"] == "pull" and prov["hops"] == 1
    assert prov["source"] == {
        "deployment": "https://up",
        "uri": "s3://up/a",
        "name": None,
        "dag_id": "prod",
        "task_id": "t",
        "run_id": "r1",
        "map_index": 2,
        "partition_key": "2026-01-01",
        "extra": {"rows": 3},
        "event_id": 7,
        "timestamp": "2026-01-01T00:00:07+00:00",
    }
    assert payload[pull.PULL_KEY] == {"key": "k", "watermark": after.to_json()}


def test_listener_acts_only_on_pull_watcher_events() -> None:
    assert watermark_of(
        {"from_trigger": True, "payload": {pull.PULL_KEY: {"key": "k", "watermark": {}}}}
    ) == ("k", {})
    assert (
        watermark_of({"payload": {pull.PULL_KEY: {"key": "k", "watermark": {}}}}) is None
    )  # not from a trigger
    assert watermark_of({"from_trigger": True, "payload": "x"}) is None
    assert watermark_of({"from_trigger": True, "payload": {pull.PULL_KEY: {"key": 1}}}) is None
    assert watermark_of(None) is None


def test_pulled_events_count_as_received_and_are_not_forwarded_again() -> None:
    payload = pull.pulled_payload(
        ev(1, "00:01"), upstream="u", uri="s3://a", key="k", mark_after=pull.Watermark()
    )
    pulled = SourceEvent(uri="s3://here", extra={"from_trigger": True, "payload": payload})
    assert pulled.received and pulled.hops == 1 and not may_forward(pulled, max_hops=1)
    other_watcher = SourceEvent(uri="s3://here", extra={"from_trigger": True, "payload": {"file": "x"}})
    assert not other_watcher.received and other_watcher.hops == 0

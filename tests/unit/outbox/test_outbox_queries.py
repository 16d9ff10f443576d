"""The page's read queries on both backends: exact counts, oldest/next, last error, keyset pages."""

from __future__ import annotations

import pytest

from astro_xdeps.outbox import NewItem, Outbox
from astro_xdeps.ui.queries import OutboxQueries, provenance


def _asset(i: int, target: str, dag: str = "producer") -> NewItem:
    extra = {
        "xdeps_event_id": f"e{i}",
        "xdeps": {
            "event_id": f"e{i}",
            "hops": 1,
            "route": "default",
            "source": {"deployment": "up", "dag_id": dag, "task_id": "t", "run_id": f"r{i}", "uri": "s3://a"},
        },
    }
    return NewItem(
        "asset_event", target, {"uri": "s3://a", "extra": extra, "event_id": f"e{i}"}, f"e{i}:s3://a"
    )


def _fill(outbox: Outbox) -> dict[str, list[int]]:
    """alpha: 3 delivered, 1 dead, 2 pending (one failed); beta: 1 pending."""
    ids = [r.id for r in outbox.enqueue([_asset(i, "alpha") for i in range(6)] + [_asset(9, "beta")])]
    claimed = outbox.claim("w", limit=4, lease_seconds=60)
    assert [c.id for c in claimed] == ids[:4]
    for item in claimed[:3]:
        assert outbox.mark_delivered(item.id, "w", {"event_id": 1})
    assert outbox.mark_dead(claimed[3].id, "w", "rejected by the target, not retried: x — HTTP 422")
    failed = outbox.claim("w", limit=1, lease_seconds=60)[0]
    assert outbox.mark_failed(failed.id, "w", "The deployment did not accept our credentials — HTTP 401", 4e9)
    return {"all": ids, "delivered": ids[:3], "dead": [ids[3]], "failed": [failed.id]}


def test_summary_counts_each_state_per_target_and_says_the_last_error_plainly(outbox: Outbox) -> None:
    ids = _fill(outbox)
    rows = {r.target: r for r in OutboxQueries(outbox).summary()}
    alpha, beta = rows["alpha"], rows["beta"]
    assert (alpha.pending, alpha.delivered, alpha.dead) == (2, 3, 1)
    assert (beta.pending, beta.delivered, beta.dead) == (1, 0, 0)
    first = outbox.get(ids["failed"][0])
    other_pending = outbox.get(ids["all"][5])
    assert alpha.oldest_pending_at == min(first.created_at, other_pending.created_at)
    assert alpha.next_attempt_at == other_pending.next_attempt_at  # due now, before the failed one's 4e9
    # The failed pending item was updated after the dead one: its error is the latest.
    assert alpha.last_error.startswith("The deployment did not accept our credentials")
    assert alpha.last_error_plain == "downstream answered 401: the token is wrong or expired"
    assert alpha.recent_delivered == 3 and alpha.last_delivered_at is not None
    assert beta.last_error is None and beta.last_delivered_at is None


def test_items_are_keyset_paged_newest_first_and_filtered(outbox: Outbox) -> None:
    ids = _fill(outbox)
    q = OutboxQueries(outbox)
    page, before = q.items(limit=3)
    assert [r.id for r in page] == sorted(ids["all"], reverse=True)[:3]
    rest, end = q.items(limit=10, before=before)
    assert [r.id for r in rest] == sorted(ids["all"], reverse=True)[3:] and end is None
    assert [r.id for r in q.items(state="delivered")[0]] == sorted(ids["delivered"], reverse=True)
    assert [r.id for r in q.items(state="dead")[0]] == ids["dead"]
    assert [r.id for r in q.items(state="pending", target="beta")[0]] == [ids["all"][6]]
    assert [r.id for r in q.items(target="beta")[0]] == [ids["all"][6]]
    with pytest.raises(ValueError, match="state 'gone' is unknown"):
        q.items(state="gone")
    with pytest.raises(ValueError, match="limit must be between 1 and 200"):
        q.items(limit=0)


def test_item_detail_carries_provenance_and_plain_error(outbox: Outbox) -> None:
    ids = _fill(outbox)
    row = OutboxQueries(outbox).item(ids["dead"][0]).to_dict()
    assert row["provenance"]["source"]["dag_id"] == "producer"
    assert row["provenance"]["via"] == "forwarding"
    assert row["last_error_plain"].startswith("not retried: downstream answered 422")
    assert OutboxQueries(outbox).item(10**9) is None


def test_sample_has_recent_dead_and_waiting_items_and_kinds_are_known(outbox: Outbox) -> None:
    ids = _fill(outbox)
    q = OutboxQueries(outbox)
    assert [r.id for r in q.sample()] == sorted(ids["all"])
    assert q.dead_kinds() == {"asset_event"}
    assert q.kinds_of([ids["dead"][0], 10**9]) == {ids["dead"][0]: "asset_event"}


def test_provenance_of_a_relay_trigger_names_the_rule_and_events() -> None:
    payload = {
        "dag_id": "report",
        "dag_run_id": "xdeps__r__1",
        "conf": {
            "xdeps": {
                "rule": "both",
                "events": [{"type": "dag_run.success", "dag_id": "a", "deployment": "up"}],
            }
        },
    }
    prov = provenance("dag_run", payload)
    assert prov["via"] == "relay" and prov["rule"] == "both"
    assert prov["events"][0]["dag_id"] == "a"

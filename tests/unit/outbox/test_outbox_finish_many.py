"""``Outbox.finish_many``: a batch of outcomes in one transaction, each under the lease rule."""

from __future__ import annotations

import time

import pytest

from astro_xdeps.outbox import ASSET_EVENT, DEAD, DELIVERED, PENDING, NewItem, Outbox, OutboxError
from astro_xdeps.outbox.models import Outcome

LEASE = 30.0


def new(key: str) -> NewItem:
    return NewItem(kind=ASSET_EVENT, target="prod", payload={"key": key}, idempotency_key=key)


def test_each_outcome_is_recorded_as_its_mark_would(outbox: Outbox) -> None:
    a, b, c = (r.id for r in outbox.enqueue([new("a"), new("b"), new("c")]))
    t = time.time() + 1
    outbox.claim("w", limit=3, lease_seconds=LEASE, now=t)

    applied = outbox.finish_many(
        "w",
        [
            Outcome.delivered(a, {"event_id": 7}),
            Outcome.failed(b, "HTTP 503 " + "x" * 5000, t + 60),
            Outcome.dead(c, "rejected"),
        ],
    )

    assert applied == [True, True, True]
    delivered, failed, dead = (outbox.get(i) for i in (a, b, c))
    assert (delivered.state, delivered.result, delivered.lease_owner) == (DELIVERED, {"event_id": 7}, None)
    assert delivered.delivered_at is not None
    assert (failed.state, failed.lease_owner, failed.lease_until) == (PENDING, None, None)
    assert failed.next_attempt_at == pytest.approx(t + 60)
    assert failed.last_error.startswith("HTTP 503") and len(failed.last_error) == 1000
    assert (dead.state, dead.last_error, dead.lease_owner) == (DEAD, "rejected", None)
    assert outbox.next_due_at() == pytest.approx(t + 60)


def test_outcomes_of_lost_leases_change_nothing_and_say_so(outbox: Outbox) -> None:
    taken, mine, finished = (r.id for r in outbox.enqueue([new("a"), new("b"), new("c")]))
    t = time.time() + 1
    outbox.claim("w", limit=3, lease_seconds=LEASE, now=t)
    outbox.mark_delivered(finished, "w")
    # The leases ran out and another worker took the oldest over.
    [took] = outbox.claim("other", limit=1, lease_seconds=LEASE, now=t + LEASE + 1)
    assert took.id == taken
    before = outbox.get(taken)

    applied = outbox.finish_many(
        "w",
        [
            Outcome.delivered(mine),
            Outcome.delivered(taken),
            Outcome.dead(finished, "late"),
            Outcome.dead(999, "x"),
        ],
    )

    assert applied == [True, False, False, False]
    assert outbox.get(mine).state == DELIVERED
    assert outbox.get(taken) == before
    assert outbox.get(finished).state == DELIVERED  # not turned dead by a second outcome


def test_no_outcomes_write_nothing_and_bad_ones_are_refused_before_writing(outbox: Outbox) -> None:
    [r] = outbox.enqueue([new("a")])
    outbox.claim("w", limit=1, lease_seconds=LEASE, now=time.time() + 1)
    assert outbox.finish_many("w", []) == []
    with pytest.raises(ValueError, match="next_attempt_at"):
        outbox.finish_many("w", [Outcome.delivered(r.id), Outcome(r.id, PENDING, error="no time")])
    assert outbox.get(r.id).state == PENDING  # the valid outcome was not written either
    with pytest.raises(ValueError, match="Lease owner"):
        outbox.finish_many("", [Outcome.delivered(r.id)])


def test_a_claimed_item_reads_as_get_reads_it(outbox: Outbox) -> None:
    # claim builds items its own way on SQLite (plain tuples); get goes through SQLAlchemy.
    [r] = outbox.enqueue(
        [NewItem(ASSET_EVENT, "prod", {"uri": "s3://b/k", "extra": {"n": [1, 2.5, None]}}, "a")]
    )
    t = time.time() + 1
    outbox.claim("w", limit=1, lease_seconds=LEASE, now=t)
    outbox.finish_many("w", [Outcome.dead(r.id, "rejected")])
    assert outbox.retry([r.id]) == 1  # sets retried_at; last_error stays

    [claimed] = outbox.claim("w", limit=1, lease_seconds=LEASE, now=time.time() + 1)

    assert claimed == outbox.get(r.id)
    assert (claimed.last_error, claimed.attempts) == ("rejected", 1)
    assert claimed.retried_at is not None and claimed.payload == {
        "uri": "s3://b/k",
        "extra": {"n": [1, 2.5, None]},
    }


def test_a_large_batch_is_recorded_whole(outbox: Outbox) -> None:
    ids = [r.id for r in outbox.enqueue([new(f"k{i}") for i in range(1200)])]
    t = time.time() + 1
    claimed = outbox.claim("w", limit=1200, lease_seconds=LEASE, now=t)
    assert [item.id for item in claimed] == ids  # oldest first

    applied = outbox.finish_many("w", [Outcome.delivered(i, None if i % 2 else {"n": i}) for i in ids])

    assert applied == [True] * len(ids)
    items = outbox.list_items(limit=2000)
    assert [(item.state, item.result) for item in items] == [
        (DELIVERED, None if i % 2 else {"n": i}) for i in ids
    ]


def test_a_result_that_is_not_json_is_refused_before_writing(outbox: Outbox) -> None:
    [r] = outbox.enqueue([new("a")])
    outbox.claim("w", limit=1, lease_seconds=LEASE, now=time.time() + 1)
    with pytest.raises(OutboxError, match="JSON"):
        outbox.finish_many("w", [Outcome.delivered(r.id, {"at": object()})])
    assert (outbox.get(r.id).state, outbox.get(r.id).lease_owner) == (PENDING, "w")

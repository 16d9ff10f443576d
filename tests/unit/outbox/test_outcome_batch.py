"""``OutcomeBatch``: when the outcomes gathered so far are due to be written (the clock is set by hand)."""

from __future__ import annotations

import pytest

from astro_xdeps.outbox import outcome_batch
from astro_xdeps.outbox.models import Outcome
from astro_xdeps.outbox.outcome_batch import OUTCOME_BATCH, OUTCOME_GATHER_SECONDS, OutcomeBatch


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(outcome_batch.time, "monotonic", clock)
    return clock


def add(batch: OutcomeBatch, n: int, first_id: int = 1) -> None:
    for item_id in range(first_id, first_id + n):
        batch.add(object(), Outcome.delivered(item_id))  # the batch keeps items as they are


def taken(batch: OutcomeBatch) -> int:
    return len(batch.take(wait=False)[1])


def test_outcomes_are_written_once_the_oldest_waited_the_gather(clock: Clock) -> None:
    batch = OutcomeBatch(1000)
    start = clock.now
    add(batch, 3)
    clock.now = start + OUTCOME_GATHER_SECONDS / 2
    assert taken(batch) == 0
    add(batch, 5, first_id=100)  # share the write with the first ones
    clock.now = start + OUTCOME_GATHER_SECONDS
    assert taken(batch) == 8
    add(batch, 1, first_id=200)  # the gather starts over with the next outcome
    clock.now = start + OUTCOME_GATHER_SECONDS * 1.9
    assert taken(batch) == 0
    clock.now = start + OUTCOME_GATHER_SECONDS * 2
    assert taken(batch) == 1


def test_a_full_write_or_the_whole_batch_is_due_at_once(clock: Clock) -> None:
    batch = OutcomeBatch(1000)
    add(batch, OUTCOME_BATCH)
    assert taken(batch) == OUTCOME_BATCH
    last = OutcomeBatch(3)
    add(last, 2)
    assert taken(last) == 0
    last.add(object(), None)  # not sent: nothing to record, but the batch is complete
    items, outcomes, skipped = last.take(wait=False)
    assert (len(items), len(outcomes), skipped, last.all_taken) == (3, 2, 1, True)

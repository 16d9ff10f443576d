"""Behaviour of the outbox store, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from dataclasses import replace

import pytest

from astro_xdeps.outbox import (
    ASSET_EVENT,
    DAG_RUN,
    DEAD,
    DELIVERED,
    PENDING,
    EnqueueResult,
    NewItem,
    Outbox,
    OutboxError,
)
from astro_xdeps.outbox import store as store_module

# fork: children start in milliseconds and may use an Outbox the parent opened (Airflow forks too).
FORK = multiprocessing.get_context("fork")
LEASE = 30.0


def new(key: str, target: str = "prod", kind: str = ASSET_EVENT, **payload: object) -> NewItem:
    return NewItem(kind=kind, target=target, payload=payload or {"key": key}, idempotency_key=key)


def later() -> float:
    """A 'now' safely after every enqueue so far (enqueued items are due at their enqueue time)."""
    return time.time() + 1


# -- enqueue -------------------------------------------------------------------------------------


def test_round_trip_enqueue_claim_deliver(outbox: Outbox) -> None:
    payload = {"asset": {"uri": "s3://bucket/key"}, "extra": {"xdeps": {"event_id": "e1", "hops": 1}}}
    before = time.time()
    [result] = outbox.enqueue([NewItem(ASSET_EVENT, "prod", payload, "e1")])
    assert result.created is True

    stored = outbox.get(result.id)
    assert stored is not None
    assert (stored.kind, stored.target, stored.payload, stored.idempotency_key) == (
        ASSET_EVENT,
        "prod",
        payload,
        "e1",
    )
    assert (stored.state, stored.attempts, stored.lease_owner, stored.lease_until) == (PENDING, 0, None, None)
    assert before <= stored.created_at == stored.next_attempt_at == stored.updated_at <= time.time()
    assert stored.delivered_at is None and stored.last_error is None and stored.result is None

    now = later()
    [claimed] = outbox.claim("w1", limit=10, lease_seconds=LEASE, now=now)
    assert claimed.id == result.id
    assert (claimed.state, claimed.attempts, claimed.lease_owner) == (PENDING, 1, "w1")
    assert claimed.lease_until == pytest.approx(now + LEASE)
    assert claimed.payload == payload
    assert outbox.claim("w2", limit=10, lease_seconds=LEASE, now=now) == []

    assert outbox.mark_delivered(result.id, "w1", result={"event_id": 42}) is True
    done = outbox.get(result.id)
    assert done is not None
    assert (done.state, done.result, done.lease_owner, done.lease_until) == (
        DELIVERED,
        {"event_id": 42},
        None,
        None,
    )
    assert done.delivered_at is not None and done.delivered_at >= stored.created_at
    assert outbox.claim("w2", limit=10, lease_seconds=LEASE, now=now + 10 * LEASE) == []


def test_enqueue_same_key_again_creates_nothing(outbox: Outbox) -> None:
    [first] = outbox.enqueue([new("k1", n=1)])
    [again] = outbox.enqueue([new("k1", n=2)])
    assert first.created is True
    assert again == EnqueueResult(id=first.id, created=False)
    stored = outbox.get(first.id)
    assert stored is not None and stored.payload == {"n": 1}  # the first write wins
    assert len(outbox.list_items()) == 1

    # The key is unique per (target, kind): the same event for another deployment or kind is new.
    other_target, other_kind = outbox.enqueue([new("k1", target="staging"), new("k1", kind=DAG_RUN)])
    assert other_target.created and other_kind.created
    assert len({first.id, other_target.id, other_kind.id}) == 3


def test_enqueue_duplicate_within_one_batch_and_of_a_delivered_item(outbox: Outbox) -> None:
    a, a_again, b = outbox.enqueue([new("a"), new("a"), new("b")])
    assert (a.created, a_again.created, b.created) == (True, False, True)
    assert a_again.id == a.id

    [item] = outbox.claim("w", limit=1, lease_seconds=LEASE, now=later())
    assert outbox.mark_delivered(item.id, "w")
    # A late duplicate of something already delivered must not send it again.
    assert outbox.enqueue([new("a")]) == [EnqueueResult(id=a.id, created=False)]
    assert [i.id for i in outbox.list_items(state=PENDING)] == [b.id]


def test_enqueue_batch_is_all_or_nothing(outbox: Outbox) -> None:
    bad = NewItem(ASSET_EVENT, "prod", {"when": object()}, "bad")
    with pytest.raises(TypeError, match="cannot be stored as JSON"):
        outbox.enqueue([new("good"), bad])
    assert outbox.list_items() == []
    assert outbox.enqueue([]) == []


@pytest.mark.parametrize(
    ("item", "error"),
    [
        (NewItem("asset", "prod", {}, "k"), ValueError),
        (NewItem(ASSET_EVENT, "", {}, "k"), ValueError),
        (NewItem(ASSET_EVENT, "prod", {}, ""), ValueError),
        (NewItem(ASSET_EVENT, "prod", {}, "k" * 501), ValueError),
        (NewItem(ASSET_EVENT, "prod", ["not", "a", "dict"], "k"), TypeError),  # type: ignore[arg-type]
    ],
)
def test_enqueue_rejects_malformed_items(outbox: Outbox, item: NewItem, error: type[Exception]) -> None:
    with pytest.raises(error):
        outbox.enqueue([new("fine"), item])
    assert outbox.list_items() == []


# -- claim ---------------------------------------------------------------------------------------


def test_claim_takes_oldest_first_up_to_limit_and_only_named_targets(outbox: Outbox) -> None:
    ids = [r.id for r in outbox.enqueue([new(f"k{i}", target="prod" if i % 2 else "dev") for i in range(6)])]
    now = later()
    prod = outbox.claim("w", limit=2, lease_seconds=LEASE, now=now, targets=["prod"])
    assert [i.id for i in prod] == [ids[1], ids[3]]
    assert outbox.claim("w", limit=5, lease_seconds=LEASE, now=now, targets=[]) == []
    rest = outbox.claim("w", limit=10, lease_seconds=LEASE, now=now)
    assert [i.id for i in rest] == [ids[0], ids[2], ids[4], ids[5]]


def test_claim_leaves_excluded_targets_alone(outbox: Outbox) -> None:
    """The worker's open breakers: their items are neither claimed nor touched."""
    targets = ["prod", "dev", "qa", "prod", "dev", "qa"]
    ids = [r.id for r in outbox.enqueue([new(f"k{i}", target=t) for i, t in enumerate(targets)])]
    now = later()
    claimed = outbox.claim("w", limit=10, lease_seconds=LEASE, now=now, exclude_targets=["dev", "qa"])
    assert [i.id for i in claimed] == [ids[0], ids[3]]
    # With targets too (the statement the PostgreSQL and targeted claims build).
    qa = outbox.claim(
        "w", limit=10, lease_seconds=LEASE, now=now, targets=["qa", "dev"], exclude_targets=["dev"]
    )
    assert [i.id for i in qa] == [ids[2], ids[5]]
    untouched = outbox.get(ids[1])
    assert untouched is not None and (untouched.attempts, untouched.lease_owner) == (0, None)
    assert [i.id for i in outbox.claim("w", limit=10, lease_seconds=LEASE, now=now)] == [ids[1], ids[4]]


def test_claim_rejects_nonsense_arguments(outbox: Outbox) -> None:
    with pytest.raises(ValueError, match="limit"):
        outbox.claim("w", limit=0, lease_seconds=LEASE)
    with pytest.raises(ValueError, match="lease_seconds"):
        outbox.claim("w", limit=1, lease_seconds=0)
    with pytest.raises(ValueError, match="owner"):
        outbox.claim("", limit=1, lease_seconds=LEASE)
    with pytest.raises(TypeError, match=r"\['prod'\]"):
        outbox.claim("w", limit=1, lease_seconds=LEASE, targets="prod")


def test_expired_lease_lets_another_owner_reclaim(outbox: Outbox) -> None:
    [r] = outbox.enqueue([new("k")])
    t = later()
    [first] = outbox.claim("crashed", limit=1, lease_seconds=LEASE, now=t)
    assert outbox.claim("other", limit=1, lease_seconds=LEASE, now=t + LEASE - 1) == []
    assert outbox.next_due_at() == pytest.approx(t + LEASE)

    [second] = outbox.claim("other", limit=1, lease_seconds=LEASE, now=t + LEASE)
    assert second.id == first.id == r.id
    assert (second.attempts, second.lease_owner) == (2, "other")
    assert outbox.mark_delivered(r.id, "other") is True


@pytest.mark.parametrize("mark", ["delivered", "failed", "dead"])
def test_mark_with_a_lost_lease_returns_false_and_changes_nothing(outbox: Outbox, mark: str) -> None:
    [r] = outbox.enqueue([new("k")])
    t = later()
    outbox.claim("slow", limit=1, lease_seconds=LEASE, now=t)
    outbox.claim("fast", limit=1, lease_seconds=LEASE, now=t + LEASE + 1)
    before = outbox.get(r.id)

    calls = {
        "delivered": lambda owner: outbox.mark_delivered(r.id, owner, result="sent"),
        "failed": lambda owner: outbox.mark_failed(r.id, owner, "timeout", t + 999),
        "dead": lambda owner: outbox.mark_dead(r.id, owner, "gone"),
    }
    assert calls[mark]("slow") is False
    assert calls[mark]("nobody") is False
    assert outbox.get(r.id) == before
    assert calls[mark]("fast") is True
    # Once finished, not even the owner can mark it again.
    assert calls[mark]("fast") is False
    assert outbox.mark_delivered(12345678, "fast") is False


def test_mark_failed_schedules_a_later_attempt_that_claim_respects(outbox: Outbox) -> None:
    [r] = outbox.enqueue([new("k")])
    t = later()
    outbox.claim("w", limit=1, lease_seconds=LEASE, now=t)
    long_error = "HTTP 503 from prod " + "x" * 5000
    assert outbox.mark_failed(r.id, "w", long_error, next_attempt_at=t + 60) is True

    failed = outbox.get(r.id)
    assert failed is not None
    assert (failed.state, failed.attempts, failed.lease_owner, failed.lease_until) == (PENDING, 1, None, None)
    assert failed.next_attempt_at == pytest.approx(t + 60)
    assert failed.last_error is not None and failed.last_error.startswith("HTTP 503 from prod")
    assert len(failed.last_error) == 1000
    assert outbox.next_due_at() == pytest.approx(t + 60)

    assert outbox.claim("w", limit=1, lease_seconds=LEASE, now=t + 59) == []
    [again] = outbox.claim("w", limit=1, lease_seconds=LEASE, now=t + 60)
    assert again.attempts == 2 and again.last_error == failed.last_error


def test_dead_items_stay_until_retried(outbox: Outbox) -> None:
    r1, r2, r3 = outbox.enqueue([new("a"), new("b"), new("c")])
    t = later()
    outbox.claim("w", limit=3, lease_seconds=LEASE, now=t)
    assert outbox.mark_dead(r1.id, "w", "404: DAG not found downstream")
    assert outbox.mark_dead(r2.id, "w", "400: bad payload")
    assert outbox.mark_delivered(r3.id, "w")
    assert outbox.claim("w", limit=10, lease_seconds=LEASE, now=t + 10 * LEASE) == []
    assert [i.id for i in outbox.list_items(state=DEAD)] == [r1.id, r2.id]
    assert outbox.next_due_at() is None

    assert outbox.retry([r1.id, r3.id]) == 1  # delivered items are never re-sent
    revived = outbox.get(r1.id)
    assert revived is not None
    assert (revived.state, revived.attempts) == (PENDING, 0)
    assert revived.last_error == "404: DAG not found downstream"
    assert revived.next_attempt_at <= time.time()

    assert outbox.retry(all_dead=True) == 1
    assert {i.id for i in outbox.claim("w", limit=10, lease_seconds=LEASE, now=later())} == {r1.id, r2.id}
    assert outbox.retry([]) == 0
    with pytest.raises(ValueError, match="all_dead"):
        outbox.retry()


def test_retry_makes_waiting_items_due_now_but_leaves_leased_ones_alone(outbox: Outbox) -> None:
    waiting, leased = outbox.enqueue([new("waiting"), new("leased")])
    now = time.time() + 0.01
    outbox.claim("w", limit=2, lease_seconds=3600, now=now)
    assert outbox.mark_failed(waiting.id, "w", "503", next_attempt_at=now + 3600)

    assert outbox.retry([waiting.id, leased.id]) == 1
    item = outbox.get(waiting.id)
    assert item is not None and item.attempts == 0 and item.next_attempt_at <= time.time()
    still_leased = outbox.get(leased.id)
    assert still_leased is not None and still_leased.lease_owner == "w"


# -- reading -------------------------------------------------------------------------------------


def test_status_counts_per_target_kind_and_state(outbox: Outbox) -> None:
    a1, a2, a3, a4, d1, s1 = outbox.enqueue(
        [new("a1"), new("a2"), new("a3"), new("a4"), new("d1", kind=DAG_RUN), new("s1", target="staging")]
    )
    t = later()
    outbox.claim("w", limit=10, lease_seconds=LEASE, now=t, targets=["prod"])
    assert outbox.mark_failed(a1.id, "w", "older error", next_attempt_at=t + 100)
    assert outbox.mark_dead(a2.id, "w", "dead error")
    assert outbox.mark_failed(a4.id, "w", "newer error", next_attempt_at=t + 200)
    assert outbox.mark_delivered(d1.id, "w")
    # a3 stays leased (in flight); s1 was never claimed (due).

    rows = outbox.status(now=t + 1)
    summary = [(r.target, r.kind, r.state, r.count, r.in_flight, r.due, r.last_error) for r in rows]
    assert summary == [
        ("prod", ASSET_EVENT, DEAD, 1, 0, 0, "dead error"),
        ("prod", ASSET_EVENT, PENDING, 3, 1, 0, "newer error"),
        ("prod", DAG_RUN, DELIVERED, 1, 0, 0, None),
        ("staging", ASSET_EVENT, PENDING, 1, 0, 1, None),
    ]
    by_key = {(r.target, r.kind, r.state): r for r in rows}
    prod_pending = by_key["prod", ASSET_EVENT, PENDING]
    first = outbox.get(a1.id)
    assert first is not None
    assert prod_pending.oldest_created_at == pytest.approx(first.created_at)
    assert prod_pending.next_attempt_at == pytest.approx(t + LEASE)  # a3's lease ends before a1 is due
    assert prod_pending.last_error_at is not None
    assert by_key["prod", DAG_RUN, DELIVERED].next_attempt_at is None
    assert outbox.status(now=t + LEASE)[1].due == 1  # a3's lease ran out
    assert outbox.get(a3.id) is not None and outbox.get(s1.id) is not None


def test_list_items_filters(outbox: Outbox) -> None:
    ids = [r.id for r in outbox.enqueue([new(f"k{i}", target="prod" if i < 3 else "dev") for i in range(5)])]
    assert [i.id for i in outbox.list_items()] == ids
    assert [i.id for i in outbox.list_items(target="dev")] == ids[3:]
    assert [i.id for i in outbox.list_items(limit=2)] == ids[:2]
    assert outbox.list_items(state=DELIVERED) == []
    assert outbox.get(ids[-1] + 1000) is None
    with pytest.raises(ValueError, match="unknown"):
        outbox.list_items(state="inflight")


def test_next_due_at(outbox: Outbox) -> None:
    assert outbox.next_due_at() is None
    before = time.time()
    outbox.enqueue([new("p", target="prod"), new("d", target="dev")])
    due = outbox.next_due_at()
    assert due is not None and before <= due <= time.time()
    t = later()
    outbox.claim("w", limit=1, lease_seconds=LEASE, now=t, targets=["prod"])
    assert outbox.next_due_at(targets=["prod"]) == pytest.approx(t + LEASE)
    assert outbox.next_due_at(targets=["dev"]) == pytest.approx(due)
    assert outbox.next_due_at(targets=[]) is None
    assert outbox.next_due_at(exclude_targets=["prod"]) == pytest.approx(due)
    assert outbox.next_due_at(exclude_targets=["dev"]) == pytest.approx(t + LEASE)
    assert outbox.next_due_at(exclude_targets=["dev", "prod"]) is None


def test_purge_deletes_only_old_delivered_items_and_never_reuses_ids(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "PURGE_BATCH", 2)  # exercise the batching
    results = outbox.enqueue([new(f"k{i}") for i in range(7)])
    claimed = outbox.claim("w", limit=7, lease_seconds=LEASE, now=later())
    for item in claimed[:5]:
        assert outbox.mark_delivered(item.id, "w")
    assert outbox.mark_dead(claimed[5].id, "w", "gone")

    assert outbox.purge_delivered(3600) == 0  # delivered just now
    assert outbox.purge_delivered(3600, now=time.time() + 7200) == 5
    assert [i.state for i in outbox.list_items()] == [DEAD, PENDING]
    [fresh] = outbox.enqueue([new("after-purge")])
    assert fresh.id > max(r.id for r in results)
    with pytest.raises(ValueError):
        outbox.purge_delivered(-1)


def test_give_up_makes_dead_only_the_targets_free_items_past_the_horizon(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "PURGE_BATCH", 2)  # exercise the batching
    old = [r.id for r in outbox.enqueue([new(f"old{i}") for i in range(5)])]
    [other] = outbox.enqueue([new("other", target="dev")])
    [leased] = outbox.claim("w", limit=1, lease_seconds=LEASE, now=later())  # the oldest, held
    cutoff = time.time()  # everything above started before it
    time.sleep(0.01)
    [young] = outbox.enqueue([new("young")])
    outbox.claim("w2", limit=10, lease_seconds=0.001, now=later(), targets=["dev"])  # lease ran out

    dead = outbox.give_up("prod", started_before=cutoff, reason="gave up: unreachable", now=later())

    assert dead == 4
    assert leased.id == old[0] and outbox.get(old[0]).state == PENDING  # a worker holds it
    for item_id in old[1:]:
        item = outbox.get(item_id)
        assert (item.state, item.last_error, item.lease_owner) == (DEAD, "gave up: unreachable", None)
    assert outbox.get(other.id).state == PENDING  # another target
    assert outbox.get(young.id).state == PENDING  # its horizon started after the cutoff
    assert outbox.give_up("prod", started_before=cutoff, reason="again", now=later()) == 0


# -- durability and lifecycle --------------------------------------------------------------------


def test_items_survive_closing_and_reopening(store) -> None:
    first = store.open()
    [r] = first.enqueue([new("k", n=7)])
    first.close()
    first.close()  # idempotent
    with pytest.raises(OutboxError, match="closed"):
        first.get(r.id)

    reopened = store.open()
    item = reopened.get(r.id)
    assert item is not None and item.payload == {"n": 7} and item.state == PENDING
    assert [i.id for i in reopened.claim("w", limit=5, lease_seconds=LEASE, now=later())] == [r.id]


def _enqueue_then_block(url: str, prefix: str, conn) -> None:
    outbox = Outbox.from_url(url, table_prefix=prefix)
    [result] = outbox.enqueue([new("survivor", n=1)])
    conn.send(result.id)
    conn.recv()  # wait here to be killed; never close the outbox


def test_enqueued_item_survives_sigkill_of_the_process(store) -> None:
    parent_end, child_end = FORK.Pipe()
    proc = FORK.Process(target=_enqueue_then_block, args=(store.url, store.table_prefix, child_end))
    proc.start()
    try:
        assert parent_end.poll(60), "the child did not enqueue within 60 s"
        item_id = parent_end.recv()
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(30)
        assert proc.exitcode == -signal.SIGKILL
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
        proc.close()
        parent_end.close()
        child_end.close()

    item = store.open().get(item_id)
    assert item is not None and item.payload == {"n": 1} and item.state == PENDING


def test_concurrent_opens_of_a_new_store_all_succeed(store) -> None:
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []
    opened: list[Outbox] = []
    lock = threading.Lock()

    def open_one() -> None:
        try:
            barrier.wait(30)
            outbox = store.open()
            with lock:
                opened.append(outbox)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and len(opened) == 4
    opened[0].enqueue([new("k")])
    assert len(opened[3].list_items()) == 1


def _use_inherited(outbox: Outbox) -> None:
    pool = outbox.engine.pool
    assert pool.checkedin() + pool.checkedout() == 0, "the child kept the parent's connections"
    # Both the Outbox API and its engine used directly (the relay keeps tables beside the outbox).
    with outbox.engine.connect() as conn:
        assert conn.exec_driver_sql(f"SELECT count(*) FROM {outbox.table_name}").scalar() == 1
    outbox.enqueue([new("child")])


def test_an_outbox_inherited_through_fork_works_in_the_child_and_the_parent(store) -> None:
    outbox = store.open()
    outbox.enqueue([new("parent")])
    pool = outbox.engine.pool
    # A connection the child inherits: pooled (PostgreSQL), or held by the writer thread (SQLite).
    assert pool.checkedin() + pool.checkedout() == 1
    proc = FORK.Process(target=_use_inherited, args=(outbox,))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    proc.close()
    outbox.enqueue([new("parent-after")])
    assert {i.idempotency_key for i in outbox.list_items()} == {"parent", "child", "parent-after"}


# -- concurrent workers --------------------------------------------------------------------------

ITEMS = 500


def _drain(outbox: Outbox, owner: str, barrier) -> list[int]:
    """Claim and deliver until nothing is left; the barrier makes sure both workers take part."""
    got: list[int] = []
    first = True
    while True:
        items = outbox.claim(owner, limit=7, lease_seconds=300)
        if first:
            barrier.wait(60)
            first = False
        if not items:
            return got
        for item in items:
            got.append(item.id)
            assert outbox.mark_delivered(item.id, owner), f"{owner} lost the lease of item {item.id}"


def _drain_in_child(url: str, prefix: str, owner: str, barrier, conn) -> None:
    outbox = Outbox.from_url(url, table_prefix=prefix)
    try:
        conn.send(_drain(outbox, owner, barrier))
    finally:
        outbox.close()


def _fill(outbox: Outbox) -> set[int]:
    return {r.id for r in outbox.enqueue([new(f"item-{i}") for i in range(ITEMS)])}


def _check_split(all_ids: set[int], got: list[list[int]], outbox: Outbox) -> None:
    assert all(got), "each worker should have delivered something"
    flat = [i for ids in got for i in ids]
    assert len(flat) == len(set(flat)), "an item was claimed by two workers"
    assert set(flat) == all_ids
    assert [(r.state, r.count) for r in outbox.status()] == [(DELIVERED, ITEMS)]
    assert all(i.attempts == 1 for i in outbox.list_items(limit=ITEMS))


@pytest.mark.parametrize("shared", [True, False], ids=["one-outbox", "outbox-per-thread"])
def test_two_threads_never_claim_the_same_item(store, shared: bool) -> None:
    outbox = store.open()
    all_ids = _fill(outbox)
    outboxes = [outbox, outbox if shared else store.open()]
    barrier = threading.Barrier(2)
    got: list[list[int]] = [[], []]
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            got[n] = _drain(outboxes[n], f"thread-{n}", barrier)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    _check_split(all_ids, got, outbox)


def test_two_processes_never_claim_the_same_item(store) -> None:
    outbox = store.open()
    all_ids = _fill(outbox)
    barrier = FORK.Barrier(2)
    pipes = [FORK.Pipe() for _ in range(2)]
    procs = [
        FORK.Process(
            target=_drain_in_child, args=(store.url, store.table_prefix, f"proc-{n}", barrier, pipes[n][1])
        )
        for n in range(2)
    ]
    for proc in procs:
        proc.start()
    got = []
    try:
        for parent_end, _ in pipes:
            assert parent_end.poll(120), "a worker process did not finish within 120 s"
            got.append(parent_end.recv())
        for proc in procs:
            proc.join(30)
            assert proc.exitcode == 0
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join()
            proc.close()
        for a, b in pipes:
            a.close()
            b.close()
    _check_split(all_ids, got, outbox)


def test_dataclasses_are_frozen(outbox: Outbox) -> None:
    [r] = outbox.enqueue([new("k")])
    item = outbox.get(r.id)
    assert item is not None
    with pytest.raises(AttributeError):
        item.state = DEAD  # type: ignore[misc]
    assert replace(item, state=DEAD).state == DEAD

"""Breakers: which targets' items the worker leaves alone, and until when."""

from __future__ import annotations

import threading

from astro_xdeps.outbox.breakers import Breakers


def doubling(trips: int) -> float:
    return 10.0 * 2 ** (trips - 1)


def test_a_tripped_target_is_open_and_its_probe_due_after_the_delay() -> None:
    breakers = Breakers(doubling)
    assert breakers.open_targets() == []
    assert breakers.next_probe() is None

    assert breakers.trip("prod", 100.0) == 10.0
    assert breakers.open_targets() == ["prod"]
    assert breakers.probes_due(109.9) == []
    assert breakers.next_probe() == 110.0
    # Probe due: the breaker stays open (one item is claimed) until the target answers or refuses.
    assert breakers.probes_due(110.0) == ["prod"]
    assert breakers.open_targets() == ["prod"]


def test_each_refusal_in_a_row_waits_longer_and_a_success_starts_over() -> None:
    breakers = Breakers(doubling)
    assert [breakers.trip("prod", 0.0) for _ in range(3)] == [10.0, 20.0, 40.0]
    assert breakers.reset("prod") is True
    assert breakers.open_targets() == []
    assert breakers.reset("prod") is False  # already closed
    assert breakers.trip("prod", 0.0) == 10.0


def test_targets_are_independent() -> None:
    breakers = Breakers(doubling)
    breakers.trip("prod", 0.0)
    breakers.trip("dev", 5.0)
    breakers.trip("dev", 5.0)
    assert breakers.open_targets() == ["dev", "prod"]
    assert breakers.next_probe() == 10.0
    assert breakers.probes_due(12.0) == ["prod"]  # dev's second refusal: 20 s from 5 s
    assert breakers.probes_due(25.0) == ["dev", "prod"]
    breakers.reset("prod")
    assert breakers.next_probe() == 25.0
    breakers.reset("dev")
    assert breakers.open_targets() == []


def test_senders_trip_and_reset_from_several_threads() -> None:
    breakers = Breakers(doubling)
    barrier = threading.Barrier(8)

    def sender(n: int) -> None:
        barrier.wait()
        for _ in range(500):
            breakers.trip(f"t{n % 2}", 0.0)
            breakers.reset(f"t{n % 2}")

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    breakers.trip("t0", 0.0)
    assert breakers.open_targets() == ["t0"]

"""The ``main()`` skeleton every benchmark shares: options, header, repetitions, verdicts, smoke.

A benchmark builds its parser with :func:`parser` (``--reps``, ``--min-reps``, ``--max-seconds``,
``--smoke``), applies its tiny sizes with :func:`parse`, prints :func:`header`, loops over
:func:`repetitions` (stops when the next one would end past the time budget, after
``--min-reps``), and ends with :func:`finish`: the verdicts, the total time and load, and in
``--smoke`` a check that every headline figure is a finite positive number.

``--smoke`` runs the same code paths end to end at sizes that take seconds, so CI
(``tests/bench/test_bench_smoke.py``) notices when a refactor breaks a benchmark. Its figures
say nothing about performance and its verdicts are not judged.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence

from bench.common import machine_notes, print_notes

# (what, met? (None: a finding with no target), the measured value as text)
Verdict = tuple[str, bool | None, str]


def parser(
    doc: str, *, reps: int = 5, min_reps: int = 3, max_seconds: float | None = None
) -> argparse.ArgumentParser:
    """The options every benchmark has; ``max_seconds`` adds the time budget for repetitions."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=reps, help="repetitions")
    if max_seconds is not None:
        p.add_argument("--min-reps", type=int, default=min_reps, help="repetitions run whatever the budget")
        p.add_argument(
            "--max-seconds",
            type=float,
            default=max_seconds,
            help="stop when the next repetition would end later (after --min-reps)",
        )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes (seconds): check that the benchmark runs end to end; no performance verdict",
    )
    return p


def parse(
    p: argparse.ArgumentParser, argv: Sequence[str] | None, smoke: Mapping[str, object]
) -> argparse.Namespace:
    """Parse ``argv``; with ``--smoke``, ``smoke``'s sizes replace the options of the same name."""
    args = p.parse_args(argv)
    if args.smoke:
        for name, value in smoke.items():
            setattr(args, name, value)
    return args


def header(title: str, args: argparse.Namespace) -> dict[str, str]:
    """Print the title and the machine (cores, load, versions); return the notes."""
    notes = machine_notes()
    print(f"{title}{'  [SMOKE: tiny sizes, figures mean nothing]' if args.smoke else ''}\n")
    print_notes(notes)
    return notes


def repetitions(args: argparse.Namespace, started: float) -> Iterator[int]:
    """``range(args.reps)``, stopping when the next repetition would end past ``--max-seconds``."""
    budget = getattr(args, "max_seconds", math.inf)
    for rep in range(args.reps):
        spent = time.monotonic() - started
        if rep >= getattr(args, "min_reps", args.reps) and spent + spent / rep > budget:
            print(f"\nstopping after {rep} repetitions: the next would end past {budget:g} s")
            return
        print(f"\nrepetition {rep + 1}/{args.reps} ...", flush=True)
        yield rep


def finish(
    args: argparse.Namespace,
    started: float,
    verdicts: Sequence[Verdict],
    figures: Mapping[str, float],
    broken: Sequence[str] = (),
) -> int:
    """Print the verdicts and the total time; return the exit code.

    ``figures``: the headline numbers (rates, latencies, ratios). In ``--smoke`` each must be a
    finite number > 0, or the run fails (exit code 1): that it ran and measured something.
    ``broken``: what the benchmark found wrong beyond speed (a lost or doubled item, a wrong
    answer); it fails the smoke too.
    """
    if verdicts:
        print("\nTargets" + (" (smoke: not judged)" if args.smoke else ""))
        for name, ok, value in verdicts:
            print(f"  [{'info' if ok is None else 'met' if ok else 'MISSED'}] {name}: {value}")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nTotal time {time.monotonic() - started:.0f} s; load average (1/5/15 min) at the end: {load}.")
    if not args.smoke:
        return 0
    insane = {
        k: v for k, v in figures.items() if not (isinstance(v, int | float) and math.isfinite(v) and v > 0)
    }
    if not figures or insane:
        print(f"SMOKE FAILED: figures that are not finite positive numbers: {insane or 'none measured'}")
        return 1
    if broken:
        print(f"SMOKE FAILED: {'; '.join(broken)}")
        return 1
    print(f"smoke ok: {len(figures)} figures, all finite and > 0")
    return 0


def quiet_package_logs() -> None:
    """Records are still created (their cost is real) but not printed: "retry in 1s" x 1000."""
    pkg = logging.getLogger("astro_xdeps")
    pkg.handlers[:] = [logging.NullHandler()]
    pkg.propagate = False

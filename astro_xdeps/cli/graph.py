"""``astro-xdeps graph``: the cross-deployment dependency graph as Mermaid, DOT or text.

The same graph as the page in the Airflow UI: this deployment's routes and relay rules, plus the
provenance of what its outbox sent and (where the Airflow metadata DB is reachable) of the asset
events it received. Mermaid and DOT are for docs and READMEs; text for a terminal.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from astro_xdeps.cli import EXIT_OK
from astro_xdeps.graph.render import FORMATS, render


def add_parser(sub: argparse._SubParsersAction) -> None:
    graph = sub.add_parser("graph", help="the cross-deployment dependency graph (Mermaid, DOT or text)")
    graph.add_argument("--format", choices=FORMATS, default="text", help="output format (default: text)")
    graph.add_argument(
        "--no-received",
        action="store_true",
        help="skip the asset events this deployment received (reading them needs the Airflow metadata DB)",
    )
    graph.set_defaults(func=run)


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    from astro_xdeps import runtime
    from astro_xdeps.graph.sources import collect
    from astro_xdeps.ui.queries import OutboxQueries

    out = out or sys.stdout
    err = err or sys.stderr
    inputs = collect(OutboxQueries(runtime.get_outbox()).sample(), received=not args.no_received)
    out.write(render(inputs.graph(), args.format))
    for note in inputs.notes:
        err.write(f"note: {note}\n")
    return EXIT_OK

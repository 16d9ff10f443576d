"""The relay's Prometheus metrics: requests by source and status, actions by rule, the outbox."""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from typing import TYPE_CHECKING

import sqlalchemy as sa

from astro_xdeps.exceptions import XdepsError
from astro_xdeps.outbox import loss
from astro_xdeps.outbox.store import Outbox, OutboxError

if TYPE_CHECKING:
    from astro_xdeps.relay.engine import IngestResult

# Errors that mean "the database is unavailable", raw or wrapped (OutboxError).
DB_ERRORS = (OutboxError, sqlite3.Error, sa.exc.SQLAlchemyError)


class Metrics:
    """Counters of one relay app, rendered with the outbox's gauges for ``/metrics``."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()
        self.actions: Counter[str] = Counter()
        self.lock = threading.Lock()

    def request(self, source: str, status: int) -> None:
        with self.lock:
            self.requests[(source, status)] += 1

    def ingested(self, source: str, result: IngestResult) -> None:
        """An accepted event (202) and the new actions it wrote, by rule."""
        with self.lock:
            self.requests[(source, 202)] += 1
            for planned, enq in zip(result.planned, result.enqueued, strict=True):
                if enq.created:
                    self.actions[planned.rule] += 1

    def render(self, outbox: Outbox | None) -> str:
        lines = [
            "# HELP xdeps_relay_requests_total Event requests by source and HTTP status.",
            "# TYPE xdeps_relay_requests_total counter",
        ]
        with self.lock:
            for (source, status), n in sorted(self.requests.items()):
                lines.append(f'xdeps_relay_requests_total{{source="{_label(source)}",status="{status}"}} {n}')
            lines += [
                "# HELP xdeps_relay_actions_total New actions written to the outbox, by rule.",
                "# TYPE xdeps_relay_actions_total counter",
            ]
            for rule, n in sorted(self.actions.items()):
                lines.append(f'xdeps_relay_actions_total{{rule="{_label(rule)}"}} {n}')
        if outbox is not None:
            lines += [
                "# HELP xdeps_outbox_items Outbox items by target, kind and state.",
                "# TYPE xdeps_outbox_items gauge",
            ]
            try:
                for row in outbox.status():
                    lines.append(
                        f'xdeps_outbox_items{{target="{_label(row.target)}",kind="{row.kind}",state="{row.state}"}} {row.count}'
                    )
            except (XdepsError, *DB_ERRORS):
                lines.append("# outbox unavailable")
        lines += loss.prometheus_lines()
        return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")

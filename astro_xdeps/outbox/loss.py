"""Asset events the listener could not write to the outbox: counted where an operator looks.

The listener must never fail Airflow's hot path, so when the outbox cannot be written (corrupt,
disk full, locked, PostgreSQL down) the event is dropped with a log line. A log line is easy to
miss, so each such loss is also counted in a small JSON file ``xdeps_outbox_losses.json`` in the
SQLite outbox's folder (``$AIRFLOW_HOME`` for a PostgreSQL outbox): not in the outbox, which may
be what failed, and shared by every process of the deployment (api-server, scheduler, task
processes), which update it under an exclusive ``flock``. ``astro-xdeps outbox status`` shows it and the relay's
``/metrics`` exports it as ``xdeps_listener_lost_events_total``. Deleting the file resets it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astro_xdeps.outbox.sa_compat import make_url

log = logging.getLogger(__name__)

LOSSES_FILENAME = "xdeps_outbox_losses.json"
RECENT_KEPT = 20
MAX_ERROR_CHARS = 800


@dataclass(frozen=True)
class Losses:
    """What the file holds: how many events were lost, when, and the most recent few."""

    lost_events: int = 0
    first_at: float | None = None
    last_at: float | None = None
    recent: list[dict[str, Any]] = field(default_factory=list)


def losses_path() -> Path:
    """Beside the SQLite outbox file; in ``$AIRFLOW_HOME`` for a PostgreSQL (or unparseable) URL."""
    from astro_xdeps import settings

    try:
        url = make_url(settings.outbox_url())
        if url.get_backend_name() == "sqlite" and url.database and not url.query.get("uri"):
            return Path(url.database).expanduser().resolve().parent / LOSSES_FILENAME
    except Exception:  # a bad URL is reported by the outbox itself; count the loss anyway
        pass
    return settings.airflow_home() / LOSSES_FILENAME


def record_loss(uri: str, error: str, *, path: Path | None = None, now: float | None = None) -> bool:
    """Count one lost event of ``uri``; returns False (and logs) if even that failed. Never raises."""
    path = losses_path() if path is None else path
    now = time.time() if now is None else now
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        with os.fdopen(fd, "r+", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
            data = _parse(f.read())
            entry = {
                "at": now,
                "uri": str(uri)[:500],
                "error": " ".join(str(error).split())[:MAX_ERROR_CHARS],
            }
            recent = [*data.recent, entry][-RECENT_KEPT:]
            updated = {
                "lost_events": data.lost_events + 1,
                "first_at": data.first_at if data.first_at is not None else now,
                "last_at": now,
                "recent": recent,
            }
            f.seek(0)
            f.truncate()
            f.write(json.dumps(updated, indent=1))
            f.flush()
        return True
    except Exception as exc:  # the loss is still in the log line the caller wrote
        log.error("astro-xdeps could not count a lost asset event in %s: %s", path, exc)
        return False


def read_losses(path: Path | None = None) -> Losses:
    """The counted losses (zero when the file does not exist or cannot be read)."""
    path = losses_path() if path is None else path
    try:
        with open(path, encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_SH)
            return _parse(f.read())
    except FileNotFoundError:
        return Losses()
    except OSError as exc:
        log.warning("astro-xdeps could not read the lost-event count in %s: %s", path, exc)
        return Losses()


def prometheus_lines(path: Path | None = None) -> list[str]:
    """The loss counter in Prometheus text format, for the relay's ``/metrics``."""
    return [
        "# HELP xdeps_listener_lost_events_total Asset events the listener could not write to the outbox.",
        "# TYPE xdeps_listener_lost_events_total counter",
        f"xdeps_listener_lost_events_total {read_losses(path).lost_events}",
    ]


def _parse(text: str) -> Losses:
    if not text.strip():
        return Losses()
    try:
        raw = json.loads(text)
        recent = [r for r in raw.get("recent", []) if isinstance(r, dict)]
        return Losses(
            lost_events=int(raw.get("lost_events", 0)),
            first_at=None if raw.get("first_at") is None else float(raw["first_at"]),
            last_at=None if raw.get("last_at") is None else float(raw["last_at"]),
            recent=recent,
        )
    except (ValueError, TypeError, AttributeError):
        log.warning("astro-xdeps: the lost-event count file is unreadable; counting from zero again")
        return Losses()

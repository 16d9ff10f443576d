"""The durable outbox: outgoing actions are stored before they are sent, and kept until confirmed.

``models`` holds the records and the table, ``store`` the :class:`Outbox` that reads and writes
them (SQLite by default, PostgreSQL when replicas share one outbox).
"""

from __future__ import annotations

from astro_xdeps.outbox.models import (
    ASSET_EVENT,
    DAG_RUN,
    DEAD,
    DELIVERED,
    KINDS,
    PENDING,
    STATES,
    EnqueueResult,
    Item,
    NewItem,
    StatusRow,
)
from astro_xdeps.outbox.store import DEFAULT_SQLITE_FILENAME, Outbox, OutboxError, new_owner_id

__all__ = [
    "ASSET_EVENT",
    "DAG_RUN",
    "DEAD",
    "DEFAULT_SQLITE_FILENAME",
    "DELIVERED",
    "KINDS",
    "PENDING",
    "STATES",
    "EnqueueResult",
    "Item",
    "NewItem",
    "Outbox",
    "OutboxError",
    "StatusRow",
    "new_owner_id",
]

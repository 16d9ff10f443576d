"""What the outbox stores: the item records it hands out and the one table that holds them.

Pure data and schema; no connection is opened here. :mod:`astro_xdeps.outbox.store` does the I/O.

Life of an item::

    enqueue ──► pending ──claim──► pending + lease ──mark_delivered──► delivered ──purge──► (gone)
                   ▲                  │    │
                   │   mark_failed    │    └──mark_dead──► dead
                   └──────────────────┘                      │
                   ▲        (lease expires: claimable again) │
                   └────────────────── retry ◄───────────────┘

There is no separate "in flight" state: an item being worked on is ``pending`` with a live
lease (``lease_owner`` set, ``lease_until`` in the future). A worker that dies simply lets its
lease run out, and the item becomes due again without anyone cleaning up.

Times are epoch seconds (``float``, as from :func:`time.time`) everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, fields
from typing import Any

import sqlalchemy as sa

from astro_xdeps.outbox.sa_compat import Double

PENDING = "pending"
DELIVERED = "delivered"
DEAD = "dead"
STATES = (PENDING, DELIVERED, DEAD)

ASSET_EVENT = "asset_event"
DAG_RUN = "dag_run"
KINDS = (ASSET_EVENT, DAG_RUN)

# Column sizes, checked in enqueue/claim so a too-long value fails the same way on both backends
# (SQLite would store it silently, PostgreSQL would refuse it).
MAX_TARGET_CHARS = 250
MAX_KEY_CHARS = 500
MAX_OWNER_CHARS = 200
MAX_ERROR_CHARS = 1000

DEFAULT_TABLE_PREFIX = "xdeps_"


@dataclass(frozen=True)
class NewItem:
    """An action to write to the outbox.

    ``idempotency_key`` identifies the action itself (a stable event id, a ``webhook-id``, a
    deterministic ``dag_run_id``), so enqueueing it again for the same target and kind is a no-op.
    """

    kind: str
    target: str
    payload: dict[str, Any]
    idempotency_key: str


@dataclass(frozen=True)
class EnqueueResult:
    """The id of the stored item, and whether this call stored it (False: it already existed)."""

    id: int
    created: bool


@dataclass(frozen=True, slots=True)
class Item:
    """One stored action and its delivery progress, as read from the store.

    ``attempts`` counts claims: :meth:`Outbox.claim` increments it before handing the item out,
    so the first delivery attempt sees ``attempts == 1``. Slotted: a worker holds hundreds of
    claimed items across a batch, and one object less each is less for the garbage collector.
    """

    id: int
    kind: str
    target: str
    payload: dict[str, Any]
    idempotency_key: str
    state: str
    attempts: int
    created_at: float
    next_attempt_at: float
    updated_at: float
    delivered_at: float | None
    last_error: str | None
    lease_owner: str | None
    lease_until: float | None
    result: Any
    # When an operator last revived it (``Outbox.retry``); None if never.
    retried_at: float | None = None

    @property
    def horizon_start(self) -> float:
        """Where the give-up horizon counts from: the last retry by an operator, else creation."""
        return self.created_at if self.retried_at is None else self.retried_at


@dataclass(frozen=True)
class StatusRow:
    """Counts for one (target, kind, state), for an operator's ``outbox status`` table.

    ``in_flight`` and ``due`` only count pending items: those under a live lease, and those
    that a worker may claim right now. ``next_attempt_at`` is the earliest one among pending
    items. ``last_error`` is the error of the most recently updated item that has one.
    """

    target: str
    kind: str
    state: str
    count: int
    oldest_created_at: float
    in_flight: int
    due: int
    next_attempt_at: float | None
    last_error: str | None
    last_error_at: float | None


def outbox_table(metadata: sa.MetaData, table_prefix: str = DEFAULT_TABLE_PREFIX) -> sa.Table:
    """Define the ``<prefix>outbox`` table (and its indexes) in ``metadata``.

    Index and constraint names derive from the table name so several prefixes can share one
    PostgreSQL schema (tests do that).
    """
    name = f"{table_prefix}outbox"
    # SQLite needs exactly INTEGER for the rowid alias; AUTOINCREMENT keeps ids from being reused
    # after a purge, so an id an operator once saw never names a different item.
    id_type = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    return sa.Table(
        name,
        metadata,
        sa.Column("id", id_type, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("target", sa.String(MAX_TARGET_CHARS), nullable=False),
        sa.Column("payload", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("idempotency_key", sa.String(MAX_KEY_CHARS), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, default=0),
        sa.Column("created_at", Double, nullable=False),
        sa.Column("next_attempt_at", Double, nullable=False),
        sa.Column("updated_at", Double, nullable=False),
        sa.Column("delivered_at", Double, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("lease_owner", sa.String(MAX_OWNER_CHARS), nullable=True),
        sa.Column("lease_until", Double, nullable=True),
        sa.Column("result", sa.JSON(none_as_null=True), nullable=True),
        # Added in outbox v2 (an upgrade on open adds it to older tables): see Item.retried_at.
        sa.Column("retried_at", Double, nullable=True),
        sa.UniqueConstraint("target", "kind", "idempotency_key", name=f"uq_{name}_key"),
        # Serves claim (state = pending AND next_attempt_at <= now) and next_due_at (MIN of it).
        sa.Index(f"ix_{name}_due", "state", "next_attempt_at"),
        *status_indexes(name),
        sqlite_autoincrement=True,
    )


@dataclass(frozen=True)
class Outcome:
    """What became of one claimed item, for :meth:`Outbox.finish_many`.

    ``state`` is where the item goes: ``delivered`` (keeping ``result``), ``pending`` again (to
    be tried at ``next_attempt_at``, keeping ``error``) or ``dead`` (keeping ``error``).
    """

    item_id: int
    state: str
    result: Any = None
    error: str | None = None
    next_attempt_at: float | None = None

    @classmethod
    def delivered(cls, item_id: int, result: Any = None) -> Outcome:
        return cls(item_id, DELIVERED, result=result)

    @classmethod
    def failed(cls, item_id: int, error: str, next_attempt_at: float) -> Outcome:
        return cls(item_id, PENDING, error=error, next_attempt_at=next_attempt_at)

    @classmethod
    def dead(cls, item_id: int, error: str) -> Outcome:
        return cls(item_id, DEAD, error=error)


def status_indexes(name: str) -> list[sa.Index]:
    """Small indexes that let ``Outbox.status`` answer with seeks, not by reading a million rows.

    Per (target, kind): the oldest item per state, the earliest pending ``next_attempt_at``, the
    number of due items (a range of the pending index), live leases (a partial index of leased
    rows, a few hundred at most) and the latest error (a partial index of rows that have one).
    """
    pending = sa.text("state = 'pending'")
    leased = sa.text("lease_until IS NOT NULL")
    has_error = sa.text("last_error IS NOT NULL")
    return [
        sa.Index(f"ix_{name}_group", "target", "kind", "state", "created_at"),
        sa.Index(
            f"ix_{name}_pending",
            "target",
            "kind",
            "next_attempt_at",
            "state",  # unused for order; makes the index cover the queries on it
            sqlite_where=pending,
            postgresql_where=pending,
        ),
        sa.Index(
            f"ix_{name}_leased",
            "target",
            "kind",
            "lease_until",
            "next_attempt_at",
            "state",
            sqlite_where=leased,
            postgresql_where=leased,
        ),
        sa.Index(
            f"ix_{name}_errors",
            "target",
            "kind",
            "state",
            "updated_at",
            sqlite_where=has_error,
            postgresql_where=has_error,
        ),
    ]


# -- checks and conversions (pure) -----------------------------------------------------------------


def item_from_row(row: Any) -> Item:
    m = row._mapping
    return Item(
        id=m["id"],
        kind=m["kind"],
        target=m["target"],
        payload=m["payload"],
        idempotency_key=m["idempotency_key"],
        state=m["state"],
        attempts=m["attempts"],
        created_at=m["created_at"],
        next_attempt_at=m["next_attempt_at"],
        updated_at=m["updated_at"],
        delivered_at=m["delivered_at"],
        last_error=m["last_error"],
        lease_owner=m["lease_owner"],
        lease_until=m["lease_until"],
        result=m["result"],
        retried_at=m.get("retried_at"),
    )


# The item's columns in field order, for reads that build Items from plain tuples.
ITEM_COLUMNS = tuple(f.name for f in fields(Item))
_JSON_COLUMNS = (ITEM_COLUMNS.index("payload"), ITEM_COLUMNS.index("result"))


def item_from_values(values: Sequence[Any]) -> Item:
    """An Item from its column values in ``ITEM_COLUMNS`` order, read raw from SQLite: the JSON
    columns are still text. Much cheaper than a SQLAlchemy row on the worker's claim path."""
    values = list(values)
    for i in _JSON_COLUMNS:
        if values[i] is not None:
            values[i] = json.loads(values[i])
    return Item(*values)


def cut_error(error: str) -> str:
    error = str(error)
    if len(error) <= MAX_ERROR_CHARS:
        return error
    return error[: MAX_ERROR_CHARS - 1] + "…"


def check_new_item(item: NewItem) -> None:
    if item.kind not in KINDS:
        raise ValueError(f"Outbox item kind {item.kind!r} is unknown; use one of {', '.join(KINDS)}.")
    if not isinstance(item.target, str) or not 0 < len(item.target) <= MAX_TARGET_CHARS:
        raise ValueError(f"Outbox item target must be a connection id of 1-{MAX_TARGET_CHARS} characters.")
    if not isinstance(item.idempotency_key, str) or not 0 < len(item.idempotency_key) <= MAX_KEY_CHARS:
        raise ValueError(
            f"Outbox item idempotency_key must be a string of 1-{MAX_KEY_CHARS} characters "
            f"(got {len(str(item.idempotency_key))}); hash longer keys."
        )
    if not isinstance(item.payload, dict):
        raise TypeError(f"Outbox item payload must be a dict, got {type(item.payload).__name__}.")


def check_owner(owner: str) -> None:
    if not isinstance(owner, str) or not 0 < len(owner) <= MAX_OWNER_CHARS:
        raise ValueError(f"Lease owner must be a string of 1-{MAX_OWNER_CHARS} characters.")


def check_targets(targets: Collection[str] | None) -> None:
    if isinstance(targets, str):
        raise TypeError(f"targets must be a collection of connection ids, e.g. [{targets!r}], not a string.")


def check_state(state: str) -> None:
    if state not in STATES:
        raise ValueError(f"Outbox state {state!r} is unknown; use one of {', '.join(STATES)}.")

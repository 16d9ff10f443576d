"""``Outbox.status`` fast at a million rows, and the schema upgrade that makes it so.

On SQLite the number of items per (target, kind, state) is kept in a small table,
``<prefix>outbox_counts``, by triggers: they run inside the very transaction that inserts,
changes the state of, or deletes an item, so the counts are exact whichever code writes. The
other columns of a status row come from small indexes (see ``models.status_indexes``): the
oldest item and the latest error per group are one index seek each, and the pending statistics
read only the pending rows' partial index. 1,000,000 delivered rows cost nothing.

On PostgreSQL (several processes write at once) a single counts row per group would make every
writer of that group wait for the others' row lock, and two transactions touching two groups in
opposite orders could deadlock; its planner also counts from the indexes by itself. There the
status stays one ``GROUP BY``.
"""

from __future__ import annotations

import time

import sqlalchemy as sa

from astro_xdeps.outbox.models import PENDING, StatusRow, status_indexes


def counts_table(metadata: sa.MetaData, outbox: sa.Table) -> sa.Table:
    return sa.Table(
        f"{outbox.name}_counts",
        metadata,
        sa.Column("target", sa.String(250), primary_key=True),
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("state", sa.String(16), primary_key=True),
        sa.Column("n", sa.Integer, nullable=False),
    )


def _sqlite_triggers(t: str, c: str) -> dict[str, str]:
    """The triggers that keep ``c`` (counts) in step with ``t`` (items), by name."""

    def add(row: str, delta: int) -> str:
        return (
            f"INSERT OR IGNORE INTO {c} (target, kind, state, n) VALUES ({row}.target, {row}.kind, {row}.state, 0); "
            f"UPDATE {c} SET n = n + ({delta}) WHERE target = {row}.target AND kind = {row}.kind AND state = {row}.state;"
        )

    return {
        f"{t}_count_insert": f"CREATE TRIGGER {t}_count_insert AFTER INSERT ON {t} BEGIN {add('NEW', 1)} END",
        f"{t}_count_delete": f"CREATE TRIGGER {t}_count_delete AFTER DELETE ON {t} BEGIN {add('OLD', -1)} END",
        f"{t}_count_update": (
            f"CREATE TRIGGER {t}_count_update AFTER UPDATE OF state, target, kind ON {t} "
            f"WHEN OLD.state IS NOT NEW.state OR OLD.target IS NOT NEW.target OR OLD.kind IS NOT NEW.kind "
            f"BEGIN {add('OLD', -1)} {add('NEW', 1)} END"
        ),
    }


def upgrade(conn: sa.Connection, table: sa.Table, counts: sa.Table) -> None:
    """Bring a table made by an older version up to date; run under the write lock at open.

    Adds ``retried_at``, the status indexes, and on SQLite the counts table and its triggers
    (filled once from the items already there, in the same transaction).
    """
    columns = {c["name"] for c in sa.inspect(conn).get_columns(table.name)}
    if "retried_at" not in columns:
        kind = "DOUBLE PRECISION" if conn.dialect.name == "postgresql" else "FLOAT"
        exists = " IF NOT EXISTS" if conn.dialect.name == "postgresql" else ""
        conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN{exists} retried_at {kind}")
    for index in status_indexes(table.name):
        index = next(i for i in table.indexes if i.name == index.name)
        conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))
    if conn.dialect.name != "sqlite":
        return
    counts.create(conn, checkfirst=True)
    present = set(
        conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?", (table.name,)
        ).scalars()
    )
    missing = {
        name: ddl for name, ddl in _sqlite_triggers(table.name, counts.name).items() if name not in present
    }
    if not missing:
        return
    for name in present & set(_sqlite_triggers(table.name, counts.name)):
        conn.exec_driver_sql(f"DROP TRIGGER {name}")
    for ddl in _sqlite_triggers(table.name, counts.name).values():
        conn.exec_driver_sql(ddl)
    conn.execute(sa.delete(counts))
    t = table
    conn.execute(
        sa.insert(counts).from_select(
            ["target", "kind", "state", "n"],
            sa.select(t.c.target, t.c.kind, t.c.state, sa.func.count()).group_by(
                t.c.target, t.c.kind, t.c.state
            ),
        )
    )


def status(conn: sa.Connection, t: sa.Table, counts: sa.Table, now: float | None = None) -> list[StatusRow]:
    """One row per (target, kind, state) with counts and the latest error, sorted by those keys."""
    now = time.time() if now is None else now
    if conn.dialect.name != "sqlite":
        return _status_group_by(conn, t, now)
    groups = conn.execute(
        sa.select(counts.c.target, counts.c.kind, counts.c.state, counts.c.n)
        .where(counts.c.n > 0)
        .order_by(counts.c.target, counts.c.kind, counts.c.state)
    ).all()
    target, kind, state = sa.bindparam("target"), sa.bindparam("kind"), sa.bindparam("state")
    # A literal 'pending' (not a bound parameter) lets SQLite use the partial indexes.
    pending = (t.c.target == target, t.c.kind == kind, t.c.state == sa.literal_column("'pending'"))
    in_group = (t.c.target == target, t.c.kind == kind, t.c.state == state)
    oldest = sa.select(sa.func.min(t.c.created_at)).where(*in_group)
    latest_error = (
        sa.select(t.c.last_error, t.c.updated_at)
        .where(*in_group, t.c.last_error.is_not(None))
        .order_by(t.c.updated_at.desc(), t.c.id.desc())
        .limit(1)
    )
    first_due = sa.select(sa.func.min(t.c.next_attempt_at)).where(*pending)
    due_by_time = sa.select(sa.func.count()).where(*pending, t.c.next_attempt_at <= now)
    # Live leases; those among them whose next_attempt_at has passed are not due (normally none:
    # claim and renew move next_attempt_at to the lease's end).
    live = sa.select(sa.func.count(), sa.func.sum(sa.case((t.c.next_attempt_at <= now, 1), else_=0))).where(
        *pending, t.c.lease_until > now
    )
    rows = []
    for g in groups:
        key = {"target": g.target, "kind": g.kind, "state": g.state}
        error = conn.execute(latest_error, key).first()
        in_flight = due = 0
        next_attempt_at = None
        if g.state == PENDING:
            where = {"target": g.target, "kind": g.kind}
            in_flight, live_due = conn.execute(live, where).one()
            in_flight, due = (
                int(in_flight or 0),
                conn.execute(due_by_time, where).scalar_one() - int(live_due or 0),
            )
            next_attempt_at = conn.execute(first_due, where).scalar()
        rows.append(
            StatusRow(
                target=g.target,
                kind=g.kind,
                state=g.state,
                count=int(g.n),
                oldest_created_at=float(conn.execute(oldest, key).scalar_one()),
                in_flight=in_flight,
                due=due,
                next_attempt_at=None if next_attempt_at is None else float(next_attempt_at),
                last_error=error.last_error if error else None,
                last_error_at=error.updated_at if error else None,
            )
        )
    return rows


def _status_group_by(conn: sa.Connection, t: sa.Table, now: float) -> list[StatusRow]:
    pending = t.c.state == PENDING
    leased = sa.and_(pending, t.c.lease_until.is_not(None), t.c.lease_until > now)
    due = sa.and_(
        pending, t.c.next_attempt_at <= now, sa.or_(t.c.lease_until.is_(None), t.c.lease_until <= now)
    )
    groups = (
        sa.select(
            t.c.target,
            t.c.kind,
            t.c.state,
            sa.func.count().label("total"),
            sa.func.min(t.c.created_at).label("oldest_created_at"),
            sa.func.sum(sa.case((leased, 1), else_=0)).label("in_flight"),
            sa.func.sum(sa.case((due, 1), else_=0)).label("due"),
            sa.func.min(sa.case((pending, t.c.next_attempt_at))).label("next_attempt_at"),
        )
        .group_by(t.c.target, t.c.kind, t.c.state)
        .order_by(t.c.target, t.c.kind, t.c.state)
    )
    ranked = (
        sa.select(
            t.c.target,
            t.c.kind,
            t.c.state,
            t.c.last_error,
            t.c.updated_at,
            sa.func.row_number()
            .over(
                partition_by=(t.c.target, t.c.kind, t.c.state),
                order_by=(t.c.updated_at.desc(), t.c.id.desc()),
            )
            .label("rn"),
        )
        .where(t.c.last_error.is_not(None))
        .subquery()
    )
    latest_errors = sa.select(
        ranked.c.target, ranked.c.kind, ranked.c.state, ranked.c.last_error, ranked.c.updated_at
    ).where(ranked.c.rn == 1)
    group_rows = conn.execute(groups).all()
    errors = {(r.target, r.kind, r.state): (r.last_error, r.updated_at) for r in conn.execute(latest_errors)}
    rows = []
    for r in group_rows:
        last_error, last_error_at = errors.get((r.target, r.kind, r.state), (None, None))
        rows.append(
            StatusRow(
                target=r.target,
                kind=r.kind,
                state=r.state,
                count=int(r.total),
                oldest_created_at=float(r.oldest_created_at),
                in_flight=int(r.in_flight or 0),
                due=int(r.due or 0),
                next_attempt_at=None if r.next_attempt_at is None else float(r.next_attempt_at),
                last_error=last_error,
                last_error_at=last_error_at,
            )
        )
    return rows

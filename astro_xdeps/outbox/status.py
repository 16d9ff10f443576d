"""``Outbox.status`` fast at a million rows, and the schema upgrade that makes it so.

The number of items per (target, kind, state) is kept in a small table,
``<prefix>outbox_counts``, by triggers: they run inside the very transaction that inserts,
changes the state of, or deletes an item, so the counts are exact whichever code writes. The
other columns of a status row come from small indexes (see ``models.status_indexes``): the
oldest item and the latest error per group are one index seek each, and the pending statistics
read only the pending rows' partial index. 1,000,000 delivered rows cost nothing.

On SQLite (one writer at a time) there is one counts row per group, kept by row triggers.

On PostgreSQL several processes write at once, and one counts row per group would make every
writer of a group wait for the others' row lock (and two transactions touching two groups in
opposite orders could deadlock). So each backend keeps its own rows there: the table is keyed
(target, kind, state, backend) with ``backend = pg_backend_pid()``, and statement triggers add
each statement's net change per group to the current backend's rows only. Writers never touch
each other's rows, so they neither wait nor deadlock on them; the status sums over backends.
Rows of backends that have gone are folded into backend 0 (:func:`fold`, at open and purge) so
the table stays at about groups x live backends.
"""

from __future__ import annotations

import time

import sqlalchemy as sa

from astro_xdeps.outbox.models import PENDING, StatusRow, status_indexes

#: The backend number that holds the counts of backends that have gone (PostgreSQL).
FOLDED = 0


def counts_table(metadata: sa.MetaData, outbox: sa.Table, dialect: str) -> sa.Table:
    per_backend = [sa.Column("backend", sa.Integer, primary_key=True)] if dialect == "postgresql" else []
    return sa.Table(
        f"{outbox.name}_counts",
        metadata,
        sa.Column("target", sa.String(250), primary_key=True),
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("state", sa.String(16), primary_key=True),
        *per_backend,
        sa.Column("n", sa.BigInteger, nullable=False),
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


def _pg_function(conn: sa.Connection, table: str, counts: str) -> tuple[str, str]:
    """(name, CREATE OR REPLACE) of the trigger function that adds a statement's net change per
    group to the current backend's counts rows.

    PostgreSQL allows transition tables only on single-event triggers without a column list, so
    three triggers share it; on UPDATE the rows whose group did not change cancel out.
    """
    q = conn.dialect.identifier_preparer.quote
    name, c = q(f"{table}_count"), q(counts)
    changes = {
        "INSERT": "SELECT target, kind, state, 1 AS d FROM new_rows",
        "DELETE": "SELECT target, kind, state, -1 AS d FROM old_rows",
        "UPDATE": (
            "SELECT target, kind, state, 1 AS d FROM new_rows "
            "UNION ALL SELECT target, kind, state, -1 FROM old_rows"
        ),
    }
    branches = "\n  ELS".join(
        f"""IF TG_OP = '{op}' THEN
    INSERT INTO {c} AS c (target, kind, state, backend, n)
    SELECT target, kind, state, pg_backend_pid(), sum(d) FROM ({rows}) AS x
    GROUP BY target, kind, state HAVING sum(d) <> 0
    ORDER BY target, kind, state
    ON CONFLICT (target, kind, state, backend) DO UPDATE SET n = c.n + EXCLUDED.n;"""
        for op, rows in changes.items()
    )
    ddl = f"""CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  {branches}
  END IF;
  RETURN NULL;
END $$"""
    return name, ddl


def _pg_triggers(conn: sa.Connection, table: str, function: str) -> dict[str, str]:
    q = conn.dialect.identifier_preparer.quote
    ref = {"INSERT": "NEW TABLE AS new_rows", "DELETE": "OLD TABLE AS old_rows"}
    ref["UPDATE"] = f"{ref['INSERT']} {ref['DELETE']}"
    return {
        f"{table}_count_{op.lower()}": (
            f"CREATE TRIGGER {q(f'{table}_count_{op.lower()}')} AFTER {op} ON {q(table)} "
            f"REFERENCING {refs} FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
        )
        for op, refs in ref.items()
    }


def upgrade(conn: sa.Connection, table: sa.Table, counts: sa.Table) -> None:
    """Bring a table made by an older version up to date; run under the write lock at open.

    Adds ``retried_at``, the status indexes, the counts table and its triggers (filled once from
    the items already there, in the same transaction; on PostgreSQL under a lock that stops
    writers meanwhile, and an advisory lock so that processes opening together take turns).
    """
    postgres = conn.dialect.name == "postgresql"
    q = conn.dialect.identifier_preparer.quote
    if postgres and _pg_up_to_date(conn, table, counts):
        fold(conn, counts)
        return
    if postgres:
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": f"upgrade {table.name}"}
        )
    columns = {c["name"] for c in sa.inspect(conn).get_columns(table.name)}
    if "retried_at" not in columns:
        kind = "DOUBLE PRECISION" if postgres else "FLOAT"
        exists = " IF NOT EXISTS" if postgres else ""
        conn.exec_driver_sql(f"ALTER TABLE {q(table.name)} ADD COLUMN{exists} retried_at {kind}")
    for index in status_indexes(table.name):
        index = next(i for i in table.indexes if i.name == index.name)
        conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))
    counts.create(conn, checkfirst=True)
    if postgres:
        function, create_function = _pg_function(conn, table.name, counts.name)
        wanted = _pg_triggers(conn, table.name, function)
        present = set(
            conn.execute(
                sa.text(
                    "SELECT tgname FROM pg_trigger WHERE tgrelid = CAST(:t AS regclass) AND NOT tgisinternal"
                ),
                {"t": q(table.name)},
            ).scalars()
        )
    else:
        wanted = _sqlite_triggers(table.name, counts.name)
        present = set(
            conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?", (table.name,)
            ).scalars()
        )
    if wanted.keys() <= present:
        return
    if postgres:
        # Writers wait from here to commit, so the fill below counts exactly what the triggers
        # will then keep up to date.
        conn.exec_driver_sql(f"LOCK TABLE {q(table.name)} IN SHARE ROW EXCLUSIVE MODE")
        conn.exec_driver_sql(create_function)
    for name in present & wanted.keys():
        conn.exec_driver_sql(
            f"DROP TRIGGER {q(name)} ON {q(table.name)}" if postgres else f"DROP TRIGGER {name}"
        )
    for ddl in wanted.values():
        conn.exec_driver_sql(ddl)
    conn.execute(sa.delete(counts))
    t = table
    backend = [sa.literal(FOLDED)] if postgres else []
    conn.execute(
        sa.insert(counts).from_select(
            ["target", "kind", "state", *(["backend"] if postgres else []), "n"],
            sa.select(t.c.target, t.c.kind, t.c.state, *backend, sa.func.count()).group_by(
                t.c.target, t.c.kind, t.c.state
            ),
        )
    )


def _pg_up_to_date(conn: sa.Connection, table: sa.Table, counts: sa.Table) -> bool:
    """Whether the column, indexes, counts table and triggers are all there: one catalog query, so
    that opening an up-to-date outbox (every ``astro-xdeps`` command) stays cheap and lock-free."""
    q = conn.dialect.identifier_preparer.quote
    relations = [counts.name, *(i.name for i in status_indexes(table.name))]
    triggers = [f"{table.name}_count_{op}" for op in ("insert", "update", "delete")]
    checks = [
        "EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) "
        "AND attname = 'retried_at' AND NOT attisdropped)",
        *(f"to_regclass(:r{i}) IS NOT NULL" for i in range(len(relations))),
        "(SELECT count(*) FROM pg_trigger WHERE tgrelid = CAST(:t AS regclass) "
        f"AND tgname IN ({', '.join(f':g{i}' for i in range(len(triggers)))})) = {len(triggers)}",
    ]
    params = {"t": q(table.name)}
    params.update({f"r{i}": q(name) for i, name in enumerate(relations)})
    params.update({f"g{i}": name for i, name in enumerate(triggers)})
    return bool(conn.execute(sa.text(f"SELECT {' AND '.join(checks)}"), params).scalar())


def fold(conn: sa.Connection, counts: sa.Table) -> None:
    """PostgreSQL: move the counts of backends that have gone into backend 0's rows.

    Skipped while another process folds (a transaction-level advisory lock), so callers never
    wait on each other. Only the fold writes backend 0's rows, and no live backend writes a gone
    backend's rows, so this takes no lock a writer holds.
    """
    got = conn.execute(
        sa.text("SELECT pg_try_advisory_xact_lock(hashtext(:name))"), {"name": f"fold {counts.name}"}
    ).scalar()
    if not got:
        return
    c = conn.dialect.identifier_preparer.quote(counts.name)
    conn.exec_driver_sql(
        f"""WITH gone AS (
    DELETE FROM {c} WHERE backend <> {FOLDED}
    AND backend NOT IN (SELECT pid FROM pg_stat_activity WHERE pid IS NOT NULL)
    RETURNING target, kind, state, n)
INSERT INTO {c} AS c (target, kind, state, backend, n)
SELECT target, kind, state, {FOLDED}, sum(n) FROM gone GROUP BY target, kind, state
ORDER BY target, kind, state
ON CONFLICT (target, kind, state, backend) DO UPDATE SET n = c.n + EXCLUDED.n"""
    )


def status(conn: sa.Connection, t: sa.Table, counts: sa.Table, now: float | None = None) -> list[StatusRow]:
    """One row per (target, kind, state) with counts and the latest error, sorted by those keys.

    One statement: the groups from the counts table, each column a correlated seek in an index
    (one round trip, not a few per group).
    """
    now = time.time() if now is None else now
    n = sa.func.sum(counts.c.n) if "backend" in counts.c else counts.c.n
    key = (counts.c.target, counts.c.kind, counts.c.state)
    g = sa.select(*key, n.label("n"))
    g = (g.group_by(*key).having(n > 0) if "backend" in counts.c else g.where(n > 0)).subquery("g")
    # A literal 'pending' (not a bound parameter) lets SQLite use the partial indexes.
    pending = (t.c.target == g.c.target, t.c.kind == g.c.kind, t.c.state == sa.literal_column("'pending'"))
    in_group = (t.c.target == g.c.target, t.c.kind == g.c.kind, t.c.state == g.c.state)

    def latest_error(column: sa.Column) -> sa.ScalarSelect:
        return (
            sa.select(column)
            .where(*in_group, t.c.last_error.is_not(None))
            .order_by(t.c.updated_at.desc(), t.c.id.desc())
            .limit(1)
            .scalar_subquery()
        )

    def if_pending(column: sa.ColumnElement, *where: sa.ColumnElement[bool]) -> sa.ColumnElement:
        return sa.case((g.c.state == PENDING, sa.select(column).where(*pending, *where).scalar_subquery()))

    # Live leases; those among them whose next_attempt_at has passed are not due (normally none:
    # claim and renew move next_attempt_at to the lease's end).
    query = sa.select(
        g.c.target,
        g.c.kind,
        g.c.state,
        g.c.n,
        sa.select(sa.func.min(t.c.created_at)).where(*in_group).scalar_subquery().label("oldest"),
        if_pending(sa.func.count(), t.c.lease_until > now).label("in_flight"),
        if_pending(sa.func.count(), t.c.next_attempt_at <= now).label("due_by_time"),
        if_pending(sa.func.count(), t.c.lease_until > now, t.c.next_attempt_at <= now).label("live_due"),
        if_pending(sa.func.min(t.c.next_attempt_at)).label("next_attempt_at"),
        latest_error(t.c.last_error).label("last_error"),
        latest_error(t.c.updated_at).label("last_error_at"),
    ).order_by(g.c.target, g.c.kind, g.c.state)
    if conn.dialect.name == "postgresql":
        # The planner's cost for the due counts (a range of up to all pending rows) passes JIT's
        # threshold, and compiling the plan (~250 ms) costs far more than running it (a few ms).
        conn.exec_driver_sql("SET LOCAL jit = off")
    return [
        StatusRow(
            target=r.target,
            kind=r.kind,
            state=r.state,
            count=int(r.n),
            oldest_created_at=float(r.oldest),
            in_flight=int(r.in_flight or 0),
            due=int(r.due_by_time or 0) - int(r.live_due or 0),
            next_attempt_at=None if r.next_attempt_at is None else float(r.next_attempt_at),
            last_error=r.last_error,
            last_error_at=r.last_error_at,
        )
        for r in conn.execute(query)
    ]

"""PostgreSQL specifics: SKIP LOCKED claims, unreachable servers, and passwords kept out of sight.

The behavioural tests in test_outbox_store.py run on PostgreSQL too (the ``store`` fixture).
"""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from astro_xdeps.exceptions import ConfigError
from astro_xdeps.outbox import ASSET_EVENT, Item, NewItem, Outbox, OutboxError
from astro_xdeps.outbox.sa_compat import make_url


def test_claim_skips_rows_another_transaction_has_locked(pg_url: str, pg_prefix: str) -> None:
    with Outbox.from_url(pg_url, table_prefix=pg_prefix) as outbox:
        ids = [r.id for r in outbox.enqueue([NewItem(ASSET_EVENT, "prod", {}, f"k{i}") for i in range(3)])]
        engine = sa.create_engine(pg_url)
        try:
            with engine.begin() as other:
                # Another worker in the middle of its claim holds the oldest row.
                other.exec_driver_sql(f"SELECT id FROM {pg_prefix}outbox WHERE id = {ids[0]} FOR UPDATE")
                claimed: list[list[Item]] = []
                worker = threading.Thread(
                    target=lambda: claimed.append(outbox.claim("w", limit=10, lease_seconds=30))
                )
                worker.start()
                worker.join(15)
                assert not worker.is_alive(), "claim waited for a locked row instead of skipping it"
        finally:
            engine.dispose()
        assert [i.id for i in claimed[0]] == ids[1:]


def test_password_never_shows_in_url_repr_or_errors(pg_url: str, pg_prefix: str) -> None:
    with_password = make_url(pg_url).set(password="s3cret-pw")  # trust auth ignores it
    with Outbox.from_url(with_password, table_prefix=pg_prefix) as outbox:
        assert outbox.dialect == "postgresql"
        assert "s3cret-pw" not in outbox.url and "***" in outbox.url
        assert "s3cret-pw" not in repr(outbox)


def test_unreachable_server_is_an_outbox_error_that_says_what_to_check() -> None:
    url = "postgresql+psycopg2://xdeps:s3cret-pw@127.0.0.1:1/outbox?connect_timeout=3"
    with pytest.raises(OutboxError) as caught:
        Outbox.from_url(url)
    message = str(caught.value)
    assert "s3cret-pw" not in message
    assert "127.0.0.1:1" in message and "could not open" in message
    assert "running and reachable" in message


def test_missing_driver_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"astro-xdeps\[postgres\]") as caught:
        Outbox.from_url("postgresql+pg8000://xdeps:s3cret-pw@db/outbox")
    assert "s3cret-pw" not in str(caught.value)

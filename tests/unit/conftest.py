"""Fixtures shared by the unit tests: mocked HTTP, instant recorded retry waits, the PostgreSQL test database."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import responses
import tenacity.nap
from responses.registries import OrderedRegistry


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Make tenacity's backoff instant and record every wait it asked for, in seconds.

    ``time.sleep`` is patched process-wide, so modules opt in (``pytestmark``) rather than
    every unit test getting it.
    """
    waited: list[float] = []
    monkeypatch.setattr(tenacity.nap.time, "sleep", waited.append)
    return waited


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    """Mocked HTTP: a request nothing matches fails, and every registered response must be used."""
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


@pytest.fixture
def ordered() -> Iterator[responses.RequestsMock]:
    """Like ``rsps``, but the registered responses answer strictly in order (retry sequences)."""
    with responses.RequestsMock(assert_all_requests_are_fired=True, registry=OrderedRegistry) as mock:
        yield mock


@pytest.fixture(scope="session", autouse=True)
def _airflow2_connection_table() -> None:
    """Give Airflow 2 the connection table in the throwaway AIRFLOW_HOME.

    Airflow 2 looks connections up in the metadata DB after the environment and logs a traceback
    (to stdout) when the table is missing; a real deployment always has it. Airflow 3 needs none.
    """
    from astro_xdeps.version_compat import AIRFLOW_V_3_0_PLUS

    if AIRFLOW_V_3_0_PLUS:
        return
    from airflow import settings
    from airflow.models.connection import Connection

    Connection.__table__.create(settings.engine, checkfirst=True)


@pytest.fixture(autouse=True)
def _root_log_handlers() -> Iterator[None]:
    """Undo what an in-process ``astro-xdeps`` call adds to the root logger.

    The CLI's ``logging.basicConfig`` binds a handler to the ``sys.stderr`` of the test that ran
    it; pytest closes that stream afterwards, and a later test's log record would hit it.
    """
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


PG_URL = os.environ.get("XDEPS_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


@functools.cache
def _pg_unreachable_reason() -> str | None:
    import sqlalchemy as sa

    engine = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            return None
    except Exception as exc:
        return " ".join(str(getattr(exc, "orig", exc)).split())[:200]
    finally:
        engine.dispose()


@pytest.fixture
def pg_url() -> str:
    """``XDEPS_TEST_PG_URL`` (default: the local test database); skips when the server cannot be
    reached, except under ``CI`` where the PostgreSQL tests must run, so it fails."""
    reason = _pg_unreachable_reason()
    if reason is not None:
        from astro_xdeps.outbox.sa_compat import make_url

        where = make_url(PG_URL).render_as_string(hide_password=True)
        message = f"PostgreSQL at {where} is unreachable ({reason})"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI is set, so the PostgreSQL tests must run.")
        pytest.skip(f"{message}; start it or set XDEPS_TEST_PG_URL to run the PostgreSQL tests.")
    return PG_URL


XDEPS_ENV = "AIRFLOW__ASTRO_XDEPS__"


@pytest.fixture
def xdeps_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[..., None]]:
    """A clean ``[astro_xdeps]`` section: no option from the environment but an SQLite outbox in
    ``tmp_path`` and no delivery thread; the runtime's per-process state reset before and after.

    Yields ``set_options(**options)``, which sets options by name: ``set_options(max_hops=3)``.
    """
    from astro_xdeps import runtime

    for name in list(os.environ):
        if name.startswith(XDEPS_ENV):
            monkeypatch.delenv(name)

    def set_options(**options: object) -> None:
        for name, value in options.items():
            monkeypatch.setenv(f"{XDEPS_ENV}{name.upper()}", str(value))

    set_options(outbox_url=f"sqlite:///{tmp_path / 'outbox.db'}", delivery_worker="false")
    runtime.reset()
    yield set_options
    runtime.reset()


@pytest.fixture
def up_conn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Connection ``xdeps_up`` to the upstream deployment of ``tests/unit/deployments.py``."""
    from tests.unit.deployments import set_up_conn

    set_up_conn(monkeypatch)

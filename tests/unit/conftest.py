"""Fixtures shared by the unit tests: mocked HTTP and instant, recorded retry waits."""

from __future__ import annotations

from collections.abc import Iterator

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

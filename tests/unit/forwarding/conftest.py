"""Forwarding fixtures: a clean ``[astro_xdeps]`` environment and per-process runtime state."""

from __future__ import annotations

from collections.abc import Callable

import pytest


@pytest.fixture
def xdeps_env(xdeps_options: Callable[..., None], monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No forwarding switch set, an SQLite outbox in ``tmp_path``, no delivery thread.

    Returns the monkeypatch so a test can set more options; runtime state is reset around it.
    """
    for name in ("DEPLOYMENT_URL", "API_TOKEN", "AIRFLOW_CONN_XDEPS_DEFAULT", "ASTRO_DEPLOYMENT_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    xdeps_options(deployment_name="upstream-test")
    return monkeypatch

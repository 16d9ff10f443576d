"""Forwarding fixtures: a clean ``[astro_xdeps]`` environment and per-process runtime state."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from astro_xdeps import runtime

ENV_PREFIX = "AIRFLOW__ASTRO_XDEPS__"


@pytest.fixture
def xdeps_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """No forwarding switch set, an SQLite outbox in ``tmp_path``, no delivery thread.

    Returns the monkeypatch so a test can set more options; runtime state is reset around it.
    """
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name in ("DEPLOYMENT_URL", "API_TOKEN", "AIRFLOW_CONN_XDEPS_DEFAULT", "ASTRO_DEPLOYMENT_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(f"{ENV_PREFIX}OUTBOX_URL", f"sqlite:///{tmp_path / 'outbox.db'}")
    monkeypatch.setenv(f"{ENV_PREFIX}DELIVERY_WORKER", "false")
    monkeypatch.setenv(f"{ENV_PREFIX}DEPLOYMENT_NAME", "upstream-test")
    runtime.reset()
    yield monkeypatch
    runtime.reset()

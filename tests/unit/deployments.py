"""The upstream deployment the operator and sensor tests talk to (connection ``xdeps_up``)."""

from __future__ import annotations

import json

import pytest

UP = "https://up.example"
UP_TOKEN = "tok-secret-123"


def set_up_conn(monkeypatch: pytest.MonkeyPatch) -> None:
    """``AIRFLOW_CONN_XDEPS_UP``: ``UP`` with a static token, API v2 and one retry."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_XDEPS_UP",
        json.dumps(
            {
                "conn_type": "xdeps_deployment",
                "host": UP,
                "password": UP_TOKEN,
                "extra": {"api_version": "v2", "retries": 1},
            }
        ),
    )

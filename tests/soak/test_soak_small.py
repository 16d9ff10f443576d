"""The soak suite at its CI size (``python -m bench.soak --small``), with its figures asserted.

- faults: 1,000 events, 30% of downstream calls failing (500, 502/504 after recording, 503,
  resets, read timeouts, slow answers), two delivery processes on one PostgreSQL outbox;
- kills: 1,000 events, the delivering process SIGKILLed 3 times;
- relay_fuzz: its 5,000-request run is tests/soak/test_relay_fuzz_small.py; here only its verdict.

The real-Airflow downtime scenario is full-size only; the integration suite covers a
downstream stop and restart. Runs in about a minute and a half.
"""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

from bench import soak

pytestmark = pytest.mark.soak


@pytest.fixture(scope="module")
def pg_available() -> None:
    engine = sa.create_engine(soak.pg_url(), connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            pass
    except Exception as exc:
        message = f"PostgreSQL at {sa.make_url(soak.pg_url()).render_as_string(hide_password=True)} is unreachable ({exc})"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI is set, so the soak must run.")
        pytest.skip(f"{message}; start it or set XDEPS_SOAK_PG_URL.")
    finally:
        engine.dispose()


@pytest.mark.usefixtures("pg_available")
@pytest.mark.timeout(240)
def test_faults_1000_events_two_processes_30_percent_failing_calls_none_lost_none_twice() -> None:
    figures, problems = soak.run_scenario("faults", small=True, seed=1)
    assert problems == [], figures
    assert figures["delivered"] == figures["created_downstream"] == 1000
    assert figures["duplicates"] == 0 and figures["lost"] == 0
    assert 0.25 <= figures["fault_share"] <= 0.35
    assert set(figures["faults_by_kind"]) == {
        "500",
        "502_after",
        "503",
        "504_after",
        "reset",
        "reset_after",
        "timeout",
        "slow",
    }


@pytest.mark.timeout(240)
def test_kills_1000_events_3_sigkills_none_lost_none_twice() -> None:
    figures, problems = soak.run_scenario("kills", small=True, seed=1)
    assert problems == [], figures
    assert figures["kills"] == 3
    assert figures["delivered"] == figures["created_downstream"] == 1000
    assert figures["duplicates"] == 0 and figures["lost"] == 0


def test_the_relay_fuzz_check_flags_every_broken_promise() -> None:
    """The fuzz itself runs in test_relay_fuzz_small.py; here: its soak verdict can fail."""
    clean = {
        "5xx": 0,
        "transport_errors": 0,
        "accepted_without_valid_auth": 0,
        "actions_without_valid_signature": 0,
        "valid_auth_refused_401": 0,
        "outbox_items": 7,
        "new_actions_reported": 7,
    }
    assert soak.check_relay_fuzz(clean) == []
    for key in ("5xx", "accepted_without_valid_auth", "actions_without_valid_signature"):
        assert soak.check_relay_fuzz({**clean, key: 1}), key
    assert soak.check_relay_fuzz({**clean, "outbox_items": 8})


def test_the_downtime_scenario_is_full_size_only_and_says_why() -> None:
    assert "integration suite" in soak.SCENARIOS["downtime"].small_skip_reason

"""Shared test settings: keep Airflow's own state out of the developer's home."""

from __future__ import annotations

import os
import tempfile

# Airflow reads AIRFLOW_HOME at import; point it at a throwaway folder before any test imports it.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="xdeps-test-airflow-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")

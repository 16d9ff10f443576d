"""Helpers to run real Airflow locally: the test suite and the demo share them."""

"""Sensors of astro-xdeps (Airflow provider layout)."""

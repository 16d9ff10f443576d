"""Triggers of astro-xdeps (Airflow provider layout)."""

"""Operators of astro-xdeps (Airflow provider layout)."""

"""astro-xdeps: dependable dependencies between Airflow deployments."""

__version__ = "0.1.0"

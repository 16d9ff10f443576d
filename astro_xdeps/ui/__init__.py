"""The astro-xdeps page in the Airflow UI (Airflow 3.1+): its app, access checks and outbox queries."""

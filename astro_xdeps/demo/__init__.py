"""The one-command demo: real local Airflow deployments on loopback."""

"""Listener adapters: turn Airflow hook calls into outbox items. Never raise, never block."""

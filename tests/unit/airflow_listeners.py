"""Airflow's own listener manager, for tests that check our hooks against its pluggy specs.

pluggy refuses a hookimpl whose name or arguments the spec does not have, so registering with
the installed version's specs is what proves the hooks fit that version.
"""

from __future__ import annotations

from typing import Any


def airflow_listener_manager() -> Any:
    """A fresh ListenerManager with every spec of the installed Airflow registered."""
    try:  # Airflow 3.2+: the manager and the shared specs moved to airflow._shared
        from airflow._shared.listeners.listener import ListenerManager
        from airflow._shared.listeners.spec import lifecycle, taskinstance
    except ImportError:  # Airflow 2.x (and 3.0/3.1): the manager registers its specs itself
        from airflow.listeners.listener import ListenerManager

        return ListenerManager()
    from airflow.listeners.spec import asset, dagrun

    manager = ListenerManager()
    for spec in (lifecycle, taskinstance, asset, dagrun):
        manager.add_hookspecs(spec)
    return manager

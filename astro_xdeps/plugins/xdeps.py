"""The Airflow plugin, loaded through the ``airflow.plugins`` entry point in every component."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin


class XdepsPlugin(AirflowPlugin):
    name = "astro_xdeps"
    listeners: list = []

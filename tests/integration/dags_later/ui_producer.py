"""Upstream: updates an asset the downstream deployment does not have until the page's test deploys it."""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, dag, task

UI_BEARS = Asset("file://include/ui_bears")


@dag(start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), schedule=None, catchup=False)
def ui_producer():
    @task(outlets=[UI_BEARS])
    def produce():
        print("bears for the page")

    produce()


ui_producer()

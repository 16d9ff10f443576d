"""Downstream, deployed during the page's test: its schedule makes the asset exist there."""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, dag, task

UI_BEARS = Asset("file://include/ui_bears")


@dag(start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), schedule=[UI_BEARS], catchup=False)
def ui_consumer():
    @task
    def consume():
        print("consumed bears for the page")

    consume()


ui_consumer()

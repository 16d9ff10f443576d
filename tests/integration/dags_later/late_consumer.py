"""Downstream, deployed only during the test: its schedule makes the asset exist there."""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, dag, task

LATE = Asset("file://include/late_bears")


@dag(start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), schedule=[LATE], catchup=False)
def late_consumer():
    @task
    def consume():
        print("consumed late bears")

    consume()


late_consumer()

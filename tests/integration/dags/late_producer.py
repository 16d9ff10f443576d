"""Upstream: updates an asset that the downstream deployment does not know yet."""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, dag, task

LATE = Asset("file://include/late_bears")


@dag(start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), schedule=None, catchup=False)
def late_producer():
    @task(outlets=[LATE])
    def produce():
        print("late bears")

    produce()


late_producer()

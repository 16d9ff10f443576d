"""Downstream: makes the asset of the partition test known here (it is never run)."""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, dag, task


@dag(start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), schedule=None, catchup=False)
def partition_sink():
    @task(outlets=[Asset("file://include/partitioned_bears")])
    def sink():
        print("never run by the tests")

    sink()


partition_sink()

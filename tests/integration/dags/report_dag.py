"""Downstream of the many-to-one test: runs once both extracts succeeded upstream."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@dag(start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), schedule=None, catchup=False)
def report_dag():
    @task
    def report():
        print("report built")

    report()


report_dag()

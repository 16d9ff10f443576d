"""Upstream half of the many-to-one test: succeeds when triggered."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@dag(start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), schedule=None, catchup=False)
def extract_a():
    @task
    def extract():
        print("extracted")

    extract()


extract_a()

"""The Airflow 2.11 side of the mixed-version tests (Airflow 2 style: Dataset, airflow.decorators)."""

from __future__ import annotations

import pendulum
from airflow.datasets import Dataset
from airflow.decorators import dag, task

FROM_AF2 = Dataset("file://mixed/from_af2")
FROM_AF3 = Dataset("file://mixed/from_af3")
START = pendulum.datetime(2024, 1, 1, tz="UTC")


@dag(start_date=START, schedule=None, catchup=False)
def af2_producer():
    @task(outlets=[FROM_AF2])
    def write():
        print("updated file://mixed/from_af2")

    write()


@dag(start_date=START, schedule=[FROM_AF3], catchup=False)
def af2_consumer():
    """Consumes what the 3.3 deployment forwards; its schedule is what makes the dataset exist here."""

    @task
    def read():
        print("file://mixed/from_af3 was updated on the Airflow 3 deployment")

    read()


@dag(start_date=START, schedule=None, catchup=False)
def af2_fails():
    @task(retries=0)
    def boom():
        raise RuntimeError("the Airflow 2 upstream fails on purpose")

    boom()


af2_producer()
af2_consumer()
af2_fails()

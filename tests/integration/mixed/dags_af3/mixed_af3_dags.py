"""The Airflow 3.3 side of the mixed-version tests (Task SDK style)."""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, dag, task

FROM_AF2 = Asset("file://mixed/from_af2")
FROM_AF3 = Asset("file://mixed/from_af3")
START = pendulum.datetime(2024, 1, 1, tz="UTC")


@dag(start_date=START, schedule=None, catchup=False)
def af3_producer():
    @task(outlets=[FROM_AF3])
    def write():
        print("updated file://mixed/from_af3")

    write()


@dag(start_date=START, schedule=[FROM_AF2], catchup=False)
def af3_consumer():
    """Consumes what the 2.11 deployment forwards; its schedule is what makes the asset exist here."""

    @task
    def read():
        print("file://mixed/from_af2 was updated on the Airflow 2 deployment")

    read()


@dag(start_date=START, schedule=None, catchup=False)
def af3_recovery():
    """Started by the relay rule of the 2.11 deployment when af2_fails fails there."""

    @task
    def recover(**context):
        print("recovering after", (context["dag_run"].conf or {}).get("failed_run"))

    recover()


af3_producer()
af3_consumer()
af3_recovery()

"""Downstream: started by the relay when a DAG fails upstream; the conf says which one."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@dag(start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), schedule=None, catchup=False, tags=["xdeps-example"])
def recovery_dag():
    @task
    def recover(**context):
        conf = context["dag_run"].conf or {}
        print(f"recovering after {conf.get('failed_dag')} run {conf.get('failed_run')} failed upstream")
        print("provenance:", conf.get("xdeps"))

    recover()


recovery_dag()

"""Upstream: the DAG the pull-side sensor waits on and the operator triggers.

conf: ``seconds`` (how long the task works, default 1) and ``fail`` (truthy: the task fails).
"""

from __future__ import annotations

import time

import pendulum
from airflow.sdk import dag, task


@dag(start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), schedule=None, catchup=False)
def pull_target():
    @task
    def work(**context):
        conf = context["dag_run"].conf or {}
        time.sleep(float(conf.get("seconds", 1)))
        if str(conf.get("fail", "")).lower() in ("1", "true", "yes"):
            raise RuntimeError("pull_target was asked to fail")
        print("pull_target worked")

    work()


pull_target()

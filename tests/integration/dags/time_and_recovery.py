"""Upstream DAGs of the deadline and count tests (issue 14).

deadline_watched: never runs before its deadline (the relay's deadline rule misses it);
deadline_met: runs before its deadline; count_failer: fails every time it runs;
partitioned_producer: emits a partitioned asset event (the partition test).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, dag, task

START = pendulum.datetime(2024, 1, 1, tz="UTC")
# On a loaded machine a task can fail to start (the execution API times out): try again soon.
AGAIN = {"retries": 2, "retry_delay": timedelta(seconds=3)}


@dag(start_date=START, schedule=None, catchup=False)
def deadline_watched():
    @task(**AGAIN)
    def work():
        print("finally done")

    work()


@dag(start_date=START, schedule=None, catchup=False)
def deadline_met():
    @task(**AGAIN)
    def work():
        print("done in time")

    work()


@dag(start_date=START, schedule=None, catchup=False)
def count_failer():
    @task(retries=0)
    def fail():
        raise RuntimeError("fails on purpose (count rule test)")

    fail()


deadline_watched()
deadline_met()
count_failer()


PARTITIONED = Asset("file://include/partitioned_bears")


@dag(start_date=START, schedule=None, catchup=False)
def partitioned_producer():
    """Emits one event of PARTITIONED with the partition key of conf["partition"] (Airflow 3.2+)."""

    @task(outlets=[PARTITIONED], **AGAIN)
    def produce(**context):
        context["outlet_events"][PARTITIONED].add_partitions(context["dag_run"].conf["partition"])

    produce()


partitioned_producer()

"""Upstream: updates an asset this deployment does NOT forward (routes match file:// only).

The downstream learns of each update only by pulling (DeploymentAssetEventTrigger).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, Metadata, dag, task

PULLED = Asset("s3://upstream-only/pulled_bears")


@dag(start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), schedule=None, catchup=False)
def pull_producer():
    @task(outlets=[PULLED])
    def produce(**context):
        n = (context["dag_run"].conf or {}).get("n")
        yield Metadata(PULLED, extra={"n": n})

    produce()


pull_producer()

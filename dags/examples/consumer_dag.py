"""Downstream: runs whenever the `bears` asset is updated, here or in another deployment.

Asset events forwarded by astro-xdeps carry their provenance in `extra["xdeps"]`
(source deployment, DAG, task, run), so the consumer can tell where an update came from.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, dag, task

BEARS = Asset("file://include/bears")


@dag(
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    schedule=[BEARS],
    catchup=False,
    tags=["xdeps-example"],
)
def consumer_dag():
    @task
    def wait_for_bears(**context):
        for event in context["triggering_asset_events"][BEARS]:
            print("bears updated:", event.extra)

    wait_for_bears()


consumer_dag()

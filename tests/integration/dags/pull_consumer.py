"""Downstream: runs on each upstream update of s3://upstream-only/pulled_bears, pulled by a watcher."""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, AssetWatcher, dag, task

from astro_xdeps.triggers.deployment import DeploymentAssetEventTrigger

PULLED_HERE = Asset(
    "s3://downstream/pulled_bears",
    watchers=[
        AssetWatcher(
            name="pulled_bears_from_upstream",
            trigger=DeploymentAssetEventTrigger(
                uri="s3://upstream-only/pulled_bears", xdeps_conn_id="xdeps_upstream", poll_interval=2
            ),
        )
    ],
)


@dag(start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), schedule=[PULLED_HERE], catchup=False)
def pull_consumer():
    @task
    def consume(**context):
        for event in context["triggering_asset_events"][PULLED_HERE]:
            print("pulled:", event.extra)

    consume()


pull_consumer()

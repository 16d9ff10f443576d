"""Downstream, pull side (Airflow 3.3+): run on every update of the upstream's `bears` asset.

An asset watcher polls the upstream deployment's events of `file://include/bears`; each new
one becomes exactly one event of `xdeps-pull://upstream/bears` here, also across triggerer
restarts, with its provenance in `extra["payload"]["xdeps"]["source"]`. Nothing is installed
upstream (compare `consumer_dag`, fed by push forwarding from an upstream that has astro-xdeps).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, AssetWatcher, dag, task

from astro_xdeps.triggers.deployment import DeploymentAssetEventTrigger

PULLED_BEARS = Asset(
    "xdeps-pull://upstream/bears",
    watchers=[
        AssetWatcher(
            name="bears_from_upstream",
            trigger=DeploymentAssetEventTrigger(
                uri="file://include/bears", xdeps_conn_id="xdeps_upstream", poll_interval=30
            ),
        )
    ],
)


@dag(
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    schedule=[PULLED_BEARS],
    catchup=False,
    tags=["xdeps-example"],
)
def pulled_consumer_dag():
    @task
    def use_bears(**context):
        for event in context["triggering_asset_events"][PULLED_BEARS]:
            source = event.extra["payload"]["xdeps"]["source"]
            print(f"bears updated by {source['dag_id']}/{source['run_id']} in {source['deployment']}")

    use_bears()


pulled_consumer_dag()

"""Upstream: the producer from Astronomer's cross-deployment example, in Airflow 3 SDK style.

`get_bear` updates the `bears` asset. With astro-xdeps installed in this deployment and
`DEPLOYMENT_URL`/`API_TOKEN` (or the `xdeps_default` connection) pointing at the downstream
deployment, every update is forwarded there: no listener code, no API call in the DAG.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, dag, task

BEARS = Asset("file://include/bears")


@dag(start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), schedule=None, catchup=False, tags=["xdeps-example"])
def producer_dag():
    @task(outlets=[BEARS])
    def get_bear():
        print("Update the bears asset")

    get_bear()


producer_dag()

"""Downstream: waits (deferred) on the upstream run named in conf ``upstream_run_id``."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag

from astro_xdeps.sensors.deployment import DeploymentDagRunSensor


@dag(start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), schedule=None, catchup=False)
def pull_sensor_dag():
    DeploymentDagRunSensor(
        task_id="wait_upstream",
        xdeps_conn_id="xdeps_upstream",
        external_dag_id="pull_target",
        external_run_id="{{ dag_run.conf['upstream_run_id'] }}",
        poke_interval=2,
        timeout=600,
        # The shared test machine sometimes fails a task before it starts (execution API
        # timeouts under load); a retry re-defers, it never changes what the sensor decides.
        retries=2,
        retry_delay=timedelta(seconds=2),
    )


pull_sensor_dag()

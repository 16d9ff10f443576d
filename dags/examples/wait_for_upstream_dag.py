"""Downstream, pull side: wait (deferred, no worker slot) until `producer_dag` succeeded upstream.

Nothing is installed upstream: the `xdeps_upstream` connection (type `xdeps_deployment`,
Host = the upstream URL, Password = a token that may read its DAG runs) is all it takes.
`producer_dag` runs manually there, so this waits for its newest run of the last six hours;
a scheduled upstream DAG would use the default (the run with this run's logical date).
A failed upstream run fails this task at once, with the upstream run's URL in the message.
Works on Airflow 2.10+ and 3.x (deferred needs a triggerer; else `deferrable=False`).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from astro_xdeps.sensors.deployment import DeploymentDagRunSensor


@dag(start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), schedule=None, catchup=False, tags=["xdeps-example"])
def wait_for_upstream_dag():
    wait = DeploymentDagRunSensor(
        task_id="wait_for_producer",
        xdeps_conn_id="xdeps_upstream",
        external_dag_id="producer_dag",
        latest_after="{{ (dag_run.run_after - macros.timedelta(hours=6)).isoformat() }}",
        poke_interval=30,
        timeout=6 * 3600,
    )

    @task
    def build(**context):
        print("the upstream run:", context["ti"].xcom_pull(task_ids="wait_for_producer"))

    wait >> build()


wait_for_upstream_dag()

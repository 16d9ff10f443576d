"""Downstream, pull side: start `producer_dag` in the upstream deployment and wait for it (deferred).

The upstream run id is derived from this task instance, so a retry of this task never starts a
second upstream run; the task's "Remote DAG run" link opens that run in the upstream UI.
Works on Airflow 2.10+ and 3.x.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag

from astro_xdeps.operators.deployment import TriggerDeploymentDagRunOperator


@dag(start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), schedule=None, catchup=False, tags=["xdeps-example"])
def trigger_upstream_dag():
    TriggerDeploymentDagRunOperator(
        task_id="run_producer",
        xdeps_conn_id="xdeps_upstream",
        trigger_dag_id="producer_dag",
        conf={"requested_by": "{{ dag.dag_id }}", "run": "{{ run_id }}"},
        note="requested by {{ dag.dag_id }} / {{ run_id }}",
        wait_for_completion=True,
        poke_interval=15,
        retries=2,
    )


trigger_upstream_dag()

"""Downstream: triggers pull_target upstream and waits (deferred).

The first try "crashes" after the remote run finished (execute_complete raises on try 1), so
the retry must find the run it started instead of starting a second one.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag

from astro_xdeps.operators.deployment import TriggerDeploymentDagRunOperator


class CrashOnFirstTry(TriggerDeploymentDagRunOperator):
    def execute_complete(self, context, event=None):
        if context["ti"].try_number == 1:
            raise RuntimeError("simulated worker crash after the remote run finished")
        return super().execute_complete(context, event)


@dag(start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), schedule=None, catchup=False)
def pull_trigger_dag():
    CrashOnFirstTry(
        task_id="run_upstream",
        xdeps_conn_id="xdeps_upstream",
        trigger_dag_id="pull_target",
        conf={
            "seconds": "{{ dag_run.conf.get('seconds', 1) }}",
            "fail": "{{ dag_run.conf.get('fail', '') }}",
        },
        note="from pull_trigger_dag {{ run_id }}",
        wait_for_completion=True,
        poke_interval=2,
        retries=3,  # 1 for the simulated crash, the rest for a loaded test machine
        retry_delay=timedelta(seconds=1),
    )


pull_trigger_dag()

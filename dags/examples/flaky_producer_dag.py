"""Upstream: a producer that fails when asked to (conf {"fail": true}), to show state triggers.

With the relay configured in this deployment (``[astro_xdeps] relay_config``), a rule such as

    - name: recover-flaky-producer
      when: {type: dag_run.failed, dag_id: flaky_producer_dag}
      then:
        - trigger_dag: {target: xdeps_default, dag_id: recovery_dag,
                        conf: {failed_dag: "{dag_id}", failed_run: "{run_id}"}}

makes the scheduler's own "run failed" event start ``recovery_dag`` in the downstream
deployment: no alerting tool in between, and exactly one recovery run per failure.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@dag(start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), schedule=None, catchup=False, tags=["xdeps-example"])
def flaky_producer_dag():
    @task(retries=0)
    def produce(**context):
        if (context["dag_run"].conf or {}).get("fail"):
            raise RuntimeError("asked to fail (conf fail=true)")
        print("produced")

    produce()


flaky_producer_dag()

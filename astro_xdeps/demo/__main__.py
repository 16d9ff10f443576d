"""``./dev demo``: two real Airflow 3 deployments on loopback, and the story astro-xdeps tells.

1. The producer runs upstream; its asset event crosses; the consumer runs downstream.
2. A DAG fails upstream; the scheduler's own event reaches the relay rules; a recovery DAG
   runs downstream — no alerting tool in between.
3. The downstream is stopped; two more producer runs happen; it comes back; nothing is lost.

Each hop's latency is printed. Every process is stopped at the end unless ``--keep``.
``--summary FILE`` writes the outcome as JSON (the CI test reads it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import suppress
from datetime import datetime
from pathlib import Path

from astro_xdeps.testing.local_deployment import COMPONENTS, LocalDeployment

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "dags" / "examples"
BEARS = "file://include/bears"
RELAY_RULES = """\
rules:
  - name: recover-flaky-producer
    when: {type: dag_run.failed, dag_id: flaky_producer_dag}
    then:
      - trigger_dag:
          target: xdeps_default
          dag_id: recovery_dag
          conf: {failed_dag: "{dag_id}", failed_run: "{run_id}"}
          note: "{dag_id} failed in {deployment}"
"""


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def _ms(a: float | None, b: float | None) -> str:
    return "   n/a" if a is None or b is None else f"{(b - a) * 1000:6.0f} ms"


class Demo:
    def __init__(self, home: Path, out=sys.stdout) -> None:
        self.out = out
        self.started = time.monotonic()
        self.up = LocalDeployment(
            "upstream",
            home / "upstream",
            dags=[EXAMPLES / "producer_dag.py", EXAMPLES / "flaky_producer_dag.py"],
        )
        self.down = LocalDeployment(
            "downstream",
            home / "downstream",
            dags=[EXAMPLES / "consumer_dag.py", EXAMPLES / "recovery_dag.py"],
        )
        rules = home / "relay.yaml"
        rules.parent.mkdir(parents=True, exist_ok=True)
        rules.write_text(RELAY_RULES)
        self.up.extra_env.update(
            AIRFLOW_CONN_XDEPS_DEFAULT=self.down.connection_json(),
            AIRFLOW__ASTRO_XDEPS__DEPLOYMENT_NAME="upstream",
            AIRFLOW__ASTRO_XDEPS__RELAY_CONFIG=str(rules),
            AIRFLOW__ASTRO_XDEPS__RETRY_MAX_DELAY="3",
        )
        self.summary: dict = {"forwarding": {}, "relay": {}, "outage": {}}

    def say(self, text: str = "") -> None:
        self.out.write(f"[{time.monotonic() - self.started:5.0f}s] {text}\n" if text else "\n")
        self.out.flush()

    # -- setup --------------------------------------------------------------------------------
    def start(self) -> None:
        self.say("preparing two Airflow 3 deployments (SQLite, LocalExecutor) on 127.0.0.1")
        for d in (self.up, self.down):
            d.prepare()
        self.say("starting api-server, scheduler, dag-processor and triggerer of each (~30 s)")
        for d in (self.up, self.down):
            for component in COMPONENTS:
                d.start_component(component)
        for d in (self.up, self.down):
            d.wait_ready(timeout=180)
            self.say(f"  {d.name:<10} ready at {d.url}")
        for d, dags in (
            (self.up, ("producer_dag", "flaky_producer_dag")),
            (self.down, ("consumer_dag", "recovery_dag")),
        ):
            for dag_id in dags:
                d.wait_for_dag(dag_id, timeout=180)
        self.say(
            "  DAGs parsed: upstream producer_dag, flaky_producer_dag; downstream consumer_dag, recovery_dag"
        )
        self.say()

    # -- story --------------------------------------------------------------------------------
    def _event_for(self, run_id: str, timeout: float = 90) -> dict | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.down.asset_events(BEARS, limit=50):
                if (event.get("extra") or {}).get("xdeps", {}).get("source", {}).get("run_id") == run_id:
                    return event
            time.sleep(0.5)
        return None

    def _consumer_run_after(self, since: float, timeout: float = 90) -> dict | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = [
                r for r in self.down.dag_runs("consumer_dag") if (_ts(r.get("queued_at")) or 0) >= since - 1
            ]
            if runs:
                run = min(runs, key=lambda r: _ts(r["queued_at"]) or 0)
                return self.down.wait_for_run("consumer_dag", run["dag_run_id"])
            time.sleep(0.5)
        return None

    def forwarding(self) -> None:
        self.say("1) asset forwarding: producer_dag runs upstream")
        run_id = self.up.trigger("producer_dag", run_id=f"demo_{uuid.uuid4().hex[:6]}")
        self.up.wait_for_run("producer_dag", run_id)
        ti = self.up.api("GET", f"/dags/producer_dag/dagRuns/{run_id}/taskInstances/get_bear").json()
        task_done = _ts(ti.get("end_date"))
        event = self._event_for(run_id)
        arrived = _ts(event["timestamp"]) if event else None
        consumer = self._consumer_run_after(arrived) if arrived else None
        queued = _ts(consumer.get("queued_at")) if consumer else None
        finished = _ts(consumer.get("end_date")) if consumer else None
        self.say(
            f"   upstream task get_bear done            {datetime.fromtimestamp(task_done or 0):%H:%M:%S.%f}"[
                :-3
            ]
        )
        self.say(f"   -> asset event created downstream      +{_ms(task_done, arrived)}")
        self.say(f"   -> consumer_dag run queued downstream  +{_ms(arrived, queued)}")
        self.say(
            f"   -> consumer_dag run finished           +{_ms(queued, finished)}  ({consumer['state'] if consumer else 'missing'})"
        )
        if event:
            src = event["extra"]["xdeps"]["source"]
            self.say(
                f"   provenance: {src['deployment']} / {src['dag_id']} / {src['task_id']} / {src['run_id']}"
            )
        self.summary["forwarding"] = {
            "event_arrived": event is not None,
            "consumer_state": consumer["state"] if consumer else None,
            "task_to_event_ms": None if not (task_done and arrived) else round((arrived - task_done) * 1000),
            "event_to_consumer_queued_ms": None
            if not (arrived and queued)
            else round((queued - arrived) * 1000),
            "consumer_run_ms": None if not (queued and finished) else round((finished - queued) * 1000),
        }
        self.say()

    def relay(self) -> None:
        self.say("2) state trigger: flaky_producer_dag fails upstream")
        run_id = self.up.trigger(
            "flaky_producer_dag", run_id=f"demo_fail_{uuid.uuid4().hex[:6]}", conf={"fail": True}
        )
        failed = self.up.wait_for_run("flaky_producer_dag", run_id)
        failed_at = _ts(failed.get("end_date"))
        recovery = None
        deadline = time.monotonic() + 90
        while recovery is None and time.monotonic() < deadline:
            recovery = next(
                (
                    r
                    for r in self.down.dag_runs("recovery_dag")
                    if (r.get("conf") or {}).get("failed_run") == run_id
                ),
                None,
            )
            time.sleep(0.5)
        if recovery:
            recovery = self.down.wait_for_run("recovery_dag", recovery["dag_run_id"])
        queued = _ts(recovery.get("queued_at")) if recovery else None
        finished = _ts(recovery.get("end_date")) if recovery else None
        self.say(
            f"   upstream run {failed['state']} (scheduler listener -> relay rule recover-flaky-producer)"
        )
        self.say(
            f"   -> recovery_dag run queued downstream  +{_ms(failed_at, queued)}  run id {recovery['dag_run_id'] if recovery else '-'}"
        )
        self.say(
            f"   -> recovery_dag run finished           +{_ms(queued, finished)}  ({recovery['state'] if recovery else 'missing'})"
        )
        self.summary["relay"] = {
            "upstream_state": failed["state"],
            "recovery_state": recovery["state"] if recovery else None,
            "failure_to_recovery_queued_ms": None
            if not (failed_at and queued)
            else round((queued - failed_at) * 1000),
        }
        self.say()

    def outage(self) -> None:
        self.say("3) outage: the downstream deployment is stopped")
        self.down.stop()
        run_ids = []
        for _ in range(2):
            run_id = self.up.trigger("producer_dag", run_id=f"demo_outage_{uuid.uuid4().hex[:6]}")
            self.up.wait_for_run("producer_dag", run_id)
            run_ids.append(run_id)
        self.say("   two producer runs finished upstream while downstream was down; upstream outbox:")
        status = subprocess.run(
            [str(Path(sys.executable).with_name("astro-xdeps")), "outbox", "status"],
            env={**self.up.env()},
            capture_output=True,
            text=True,
            timeout=60,
        )
        for line in status.stdout.splitlines():
            self.say(f"     {line[:150]}")
        self.say("   starting the downstream deployment again")
        back = time.monotonic()
        self.down.start()
        arrived = [self._event_for(r, timeout=120) is not None for r in run_ids]
        counts = []
        events = self.down.asset_events(BEARS, limit=100)
        for r in run_ids:
            counts.append(
                sum(
                    1
                    for e in events
                    if (e.get("extra") or {}).get("xdeps", {}).get("source", {}).get("run_id") == r
                )
            )
        self.say(
            f"   -> {sum(arrived)} of 2 events arrived {time.monotonic() - back:.0f}s after restart; duplicates: {sum(c - 1 for c in counts if c > 1)}"
        )
        self.summary["outage"] = {"sent": 2, "arrived": sum(arrived), "per_run_counts": counts}
        self.say()

    def report(self) -> bool:
        f, r, o = self.summary["forwarding"], self.summary["relay"], self.summary["outage"]
        ok = (
            f.get("event_arrived")
            and f.get("consumer_state") == "success"
            and r.get("recovery_state") == "success"
            and o.get("arrived") == 2
            and o.get("per_run_counts") == [1, 1]
        )
        self.summary["ok"] = bool(ok)
        self.summary["seconds"] = round(time.monotonic() - self.started)
        self.say("summary")
        self.say(
            f"   asset forwarding      {'OK' if f.get('consumer_state') == 'success' else 'FAILED'}   task -> event {f.get('task_to_event_ms')} ms, event -> consumer queued {f.get('event_to_consumer_queued_ms')} ms"
        )
        self.say(
            f"   failure -> recovery   {'OK' if r.get('recovery_state') == 'success' else 'FAILED'}   failure -> recovery queued {r.get('failure_to_recovery_queued_ms')} ms"
        )
        self.say(
            f"   downstream outage     {'OK' if o.get('per_run_counts') == [1, 1] else 'FAILED'}   {o.get('arrived')} of 2 delivered after restart, none twice"
        )
        self.say(f"   {'all good' if ok else 'SOMETHING FAILED'} in {self.summary['seconds']} s")
        return bool(ok)

    def stop(self) -> None:
        for d in (self.up, self.down):
            with suppress(Exception):
                d.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./dev demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--keep", action="store_true", help="leave both deployments running and print their URLs"
    )
    parser.add_argument("--summary", type=Path, help="write the outcome as JSON to this file")
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="xdeps-demo-"))
    demo = Demo(home)
    ok = False
    try:
        demo.start()
        demo.forwarding()
        demo.relay()
        demo.outage()
        ok = demo.report()
        if args.keep:
            demo.say()
            for d in (demo.up, demo.down):
                demo.say(f"{d.name:<10} {d.url}  login admin / {d.password}  (AIRFLOW_HOME={d.home})")
            demo.say("both keep running; press Ctrl-C to stop them")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        demo.say("interrupted")
    finally:
        demo.say("stopping every process")
        demo.stop()
        if args.summary:
            demo.summary["process_groups"] = demo.up.started_groups + demo.down.started_groups
            args.summary.write_text(json.dumps(demo.summary, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

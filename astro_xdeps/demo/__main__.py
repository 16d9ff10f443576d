"""``./dev demo``: start a real local Airflow 3 deployment and run ``astro-xdeps doctor`` on it."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from astro_xdeps.testing.local_deployment import LocalDeployment

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./dev demo")
    parser.add_argument("--keep", action="store_true", help="leave the deployment running at the end")
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="xdeps-demo-"))
    downstream = LocalDeployment(
        "downstream", home / "downstream", dags=[ROOT / "dags/examples/consumer_dag.py"]
    )
    started = time.monotonic()
    try:
        print("==> preparing the downstream deployment (db migrate)", flush=True)
        downstream.prepare()
        print("==> starting api-server, scheduler, dag-processor", flush=True)
        downstream.start()
        downstream.wait_for_dag("consumer_dag")
        print(f"==> ready in {time.monotonic() - started:.0f}s at {downstream.url}\n", flush=True)
        os.environ["AIRFLOW_CONN_XDEPS_DEFAULT"] = downstream.connection_json()
        from astro_xdeps.cli.doctor import run_doctor

        code = run_doctor("xdeps_default", assets=["file://include/bears"], dags=["consumer_dag"])
        if args.keep:
            print(f"\nkept running: {downstream.url}  login admin / {downstream.password}  (home {home})")
            print("stop it with Ctrl-C")
            while True:
                time.sleep(3600)
        return code
    except KeyboardInterrupt:
        return 130
    finally:
        downstream.stop()


if __name__ == "__main__":
    sys.exit(main())

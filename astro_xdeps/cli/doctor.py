"""``astro-xdeps doctor``: is the target deployment reachable, authenticated and ready?"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TextIO

from astro_xdeps.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, add_conn_id
from astro_xdeps.client import DeploymentClient
from astro_xdeps.exceptions import ConfigError, NotFoundError, XdepsError


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def run_checks(
    client: DeploymentClient, *, assets: Iterable[str] = (), dags: Iterable[str] = ()
) -> list[Check]:
    """Run the checks in order; stop early when a later check could only repeat an earlier failure."""
    checks: list[Check] = []
    started = time.monotonic()
    try:
        version = client.api_version
    except XdepsError as exc:
        return [Check("reachable", False, str(exc))]
    checks.append(
        Check(
            "reachable",
            True,
            f"{client.config.base_url} answered in {(time.monotonic() - started) * 1000:.0f} ms",
        )
    )
    try:
        server = client.version().get("version", "?")
        checks.append(Check("API version", True, f"{version} (Airflow {server})"))
        checks.append(partitions_check(version, server))
    except XdepsError as exc:
        checks.append(Check("API version", False, str(exc)))
    try:
        health = client.health()
        parts = {k: v.get("status") for k, v in health.items() if isinstance(v, dict) and v.get("status")}
        bad = {k: s for k, s in parts.items() if s != "healthy"}
        detail = ", ".join(f"{k} {s}" for k, s in parts.items()) or "ok"
        checks.append(Check("health", not bad, detail))
    except XdepsError as exc:
        checks.append(Check("health", False, str(exc)))
    try:
        client.check_auth()
        who = f" as {client.config.username}" if client.config.username else ""
        checks.append(Check("authentication", True, f"{client.transport.auth_mode}{who} accepted"))
    except XdepsError as exc:
        checks.append(Check("authentication", False, str(exc)))
        return checks
    for uri in assets:
        try:
            asset = client.resolve_asset(uri)
            checks.append(Check(f"asset {uri}", True, f"exists (id {asset.id})"))
        except XdepsError as exc:
            checks.append(Check(f"asset {uri}", False, str(exc)))
    for dag_id in dags:
        try:
            dag = client.get_dag(dag_id)
        except NotFoundError:
            checks.append(Check(f"DAG {dag_id}", False, "not found: deploy it, or check the DAG id"))
            continue
        except XdepsError as exc:
            checks.append(Check(f"DAG {dag_id}", False, str(exc)))
            continue
        if dag.get("is_paused"):
            checks.append(Check(f"DAG {dag_id}", False, "is paused: runs will never start; unpause it"))
        else:
            checks.append(Check(f"DAG {dag_id}", True, "exists and is unpaused"))
    return checks


def partitions_check(api_version: str, server: str) -> Check:
    """A note, never a failure: whether partition keys arrive as keys or in the extra."""
    from astro_xdeps.client.api import PARTITION_EXTRA_KEY, airflow_at_least

    if api_version == "v2" and airflow_at_least(server, (3, 2)):
        return Check("partitions", True, "partition keys of forwarded events are kept (Airflow 3.2+)")
    return Check(
        "partitions",
        True,
        f"note: Airflow {server} has no partition keys (3.2+); a forwarded event's key arrives "
        f"in its extra as {PARTITION_EXTRA_KEY!r}, and partitioned schedules there will not see it",
    )


def render(checks: list[Check], target: str, out: TextIO) -> None:
    out.write(f"astro-xdeps doctor: {target}\n")
    width = max(len(c.name) for c in checks)
    for c in checks:
        out.write(f"  {'OK  ' if c.ok else 'FAIL'}  {c.name.ljust(width)}  {c.detail}\n")
    failed = sum(not c.ok for c in checks)
    out.write(
        f"{len(checks) - failed} passed, {failed} failed\n"
        if failed
        else f"all {len(checks)} checks passed\n"
    )


def run_doctor(
    conn_id: str, *, assets: Iterable[str] = (), dags: Iterable[str] = (), out: TextIO | None = None
) -> int:
    from astro_xdeps.hooks.deployment import DeploymentHook

    out = out or sys.stdout
    try:
        client = DeploymentHook(conn_id, retries=1).get_conn()
    except ConfigError as exc:
        sys.stderr.write(f"astro-xdeps doctor: {exc}\n")
        return EXIT_USAGE
    checks = run_checks(client, assets=assets, dags=dags)
    render(checks, f"{conn_id} ({client.config.base_url})", out)
    return EXIT_OK if all(c.ok for c in checks) else EXIT_FAILED


def add_parser(sub: argparse._SubParsersAction) -> None:
    doctor = sub.add_parser("doctor", help="check that a target deployment is reachable and usable")
    add_conn_id(doctor)
    doctor.add_argument(
        "--asset", action="append", default=[], metavar="URI", help="check the asset exists there"
    )
    doctor.add_argument(
        "--dag", action="append", default=[], metavar="DAG_ID", help="check the DAG exists, unpaused"
    )
    doctor.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    return run_doctor(args.conn_id, assets=args.asset, dags=args.dag)

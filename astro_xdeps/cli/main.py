"""``astro-xdeps``: the operator's command line.

Every command that talks to a deployment takes ``--conn-id`` (default ``xdeps_default``,
then ``DEPLOYMENT_URL``/``API_TOKEN``). Exit codes: 0 success, 1 the check or action
failed, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from astro_xdeps import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _add_conn_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--conn-id",
        default="xdeps_default",
        help="Airflow connection of the target deployment (default: xdeps_default, "
        "else the DEPLOYMENT_URL and API_TOKEN environment variables)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="astro-xdeps", description="Dependable dependencies between Airflow deployments."
    )
    parser.add_argument("--version", action="version", version=f"astro-xdeps {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each HTTP retry and step")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    doctor = sub.add_parser("doctor", help="check that a target deployment is reachable and usable")
    _add_conn_id(doctor)
    doctor.add_argument(
        "--asset", action="append", default=[], metavar="URI", help="check the asset exists there"
    )
    doctor.add_argument(
        "--dag", action="append", default=[], metavar="DAG_ID", help="check the DAG exists, unpaused"
    )

    emit = sub.add_parser("emit", help="create one asset event in the target deployment now")
    _add_conn_id(emit)
    emit.add_argument("uri", help="the asset's uri in the target deployment")
    emit.add_argument("--extra", default="{}", metavar="JSON", help="JSON object stored as the event's extra")
    emit.add_argument("--partition-key", default=None, help="partition key (Airflow 3.2+ targets)")
    emit.add_argument(
        "--event-id",
        default=None,
        help="stable id for this event (default: a new UUID); a retried emit with the same id "
        "is not created twice after an ambiguous failure",
    )
    outbox = sub.add_parser("outbox", help="inspect and operate the outbox of this deployment")
    outbox_sub = outbox.add_subparsers(dest="outbox_command", metavar="ACTION", required=True)
    status = outbox_sub.add_parser("status", help="counts per target and state, oldest age, last error")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    listing = outbox_sub.add_parser("list", help="list items")
    listing.add_argument("--state", choices=["pending", "delivered", "dead"], default=None)
    listing.add_argument("--target", default=None, help="only items for this connection id")
    listing.add_argument("--limit", type=int, default=50)
    retry = outbox_sub.add_parser("retry", help="queue dead (or waiting) items for delivery now")
    retry.add_argument("ids", nargs="*", type=int, help="item ids")
    retry.add_argument("--all-dead", action="store_true", help="every dead item")
    drain = outbox_sub.add_parser("drain", help="deliver due items from this process")
    drain.add_argument("--follow", action="store_true", help="keep running as a standalone delivery worker")
    drain.add_argument("--timeout", type=float, default=None, help="stop after this many seconds")
    relay = sub.add_parser("relay", help="the state-based trigger relay")
    relay_sub = relay.add_subparsers(dest="relay_command", metavar="ACTION", required=True)
    serve = relay_sub.add_parser("serve", help="run the relay's HTTP endpoint and delivery worker")
    serve.add_argument("--config", required=True, help="rules file (YAML or JSON)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8787)
    check = relay_sub.add_parser("check", help="validate a rules file")
    check.add_argument("config", help="rules file (YAML or JSON)")
    explain = relay_sub.add_parser("explain", help="which rules an event matches and what they would do")
    explain.add_argument("event", help="the event as JSON, or @file")
    explain.add_argument("--config", required=True, help="rules file (YAML or JSON)")
    explain.add_argument(
        "--source",
        default=None,
        help="the configured source the event comes through (run ids count per source); "
        "default: the only source, if the file has one",
    )
    from astro_xdeps.cli import graph as graph_cli

    graph_cli.add_parser(sub)
    from astro_xdeps.cli import replay as replay_cli

    replay_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Importing Airflow configures its logging, and Airflow 2 logs to stdout: import it first and
    # replace its root handlers, so stdout carries only results (an event id, a table, JSON).
    import airflow  # noqa: F401

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    if args.command == "doctor":
        from astro_xdeps.cli.doctor import run_doctor

        return run_doctor(args.conn_id, assets=args.asset, dags=args.dag)
    if args.command == "emit":
        from astro_xdeps.cli.emit import run_emit

        return run_emit(
            args.conn_id,
            args.uri,
            extra_json=args.extra,
            partition_key=args.partition_key,
            event_id=args.event_id,
        )
    if args.command == "outbox":
        from astro_xdeps.cli import outbox as outbox_cli
        from astro_xdeps.exceptions import XdepsError

        try:
            return outbox_cli.main(args)
        except XdepsError as exc:
            sys.stderr.write(f"astro-xdeps outbox: {exc}\n")
            return EXIT_USAGE
    if args.command == "relay":
        from astro_xdeps.cli import relay as relay_cli

        return relay_cli.main(args)
    if args.command == "graph":
        from astro_xdeps.cli import graph as graph_cli
        from astro_xdeps.exceptions import XdepsError

        try:
            return graph_cli.run(args)
        except XdepsError as exc:
            sys.stderr.write(f"astro-xdeps graph: {exc}\n")
            return EXIT_USAGE
    if args.command == "replay":
        from astro_xdeps.cli import replay as replay_cli

        return replay_cli.main(args)
    parser.error(f"unknown command {args.command}")  # pragma: no cover - argparse rejects first
    return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

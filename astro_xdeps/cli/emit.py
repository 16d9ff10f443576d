"""``astro-xdeps emit``: create one asset event in the target deployment (CI jobs, external systems)."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from typing import TextIO

from astro_xdeps.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, add_conn_id
from astro_xdeps.exceptions import ConfigError, XdepsError

EVENT_ID_KEY = "xdeps_event_id"


def parse_extra(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"--extra is not valid JSON ({exc.msg} at char {exc.pos}); pass an object like '{{\"k\": 1}}'."
        ) from None
    if not isinstance(value, dict):
        raise ConfigError(f"--extra must be a JSON object, got {type(value).__name__}.")
    return value


def run_emit(
    conn_id: str,
    uri: str,
    *,
    extra_json: str = "{}",
    partition_key: str | None = None,
    event_id: str | None = None,
    out: TextIO | None = None,
) -> int:
    from astro_xdeps.hooks.deployment import DeploymentHook

    out = out or sys.stdout
    try:
        extra = parse_extra(extra_json)
        client = DeploymentHook(conn_id).get_conn()
    except ConfigError as exc:
        sys.stderr.write(f"astro-xdeps emit: {exc}\n")
        return EXIT_USAGE
    event_id = event_id or str(uuid.uuid4())
    try:
        event = client.create_asset_event(
            uri, extra, partition_key=partition_key, dedupe=(EVENT_ID_KEY, event_id)
        )
    except XdepsError as exc:
        sys.stderr.write(f"astro-xdeps emit: failed to create the event for {uri!r}: {exc}\n")
        return EXIT_FAILED
    out.write(f"{event.get('id')}\n")
    sys.stderr.write(
        f"created asset event {event.get('id')} for {uri} in {conn_id} (xdeps_event_id {event_id})\n"
    )
    return EXIT_OK


def add_parser(sub: argparse._SubParsersAction) -> None:
    emit = sub.add_parser("emit", help="create one asset event in the target deployment now")
    add_conn_id(emit)
    emit.add_argument("uri", help="the asset's uri in the target deployment")
    emit.add_argument("--extra", default="{}", metavar="JSON", help="JSON object stored as the event's extra")
    emit.add_argument("--partition-key", default=None, help="partition key (Airflow 3.2+ targets)")
    emit.add_argument(
        "--event-id",
        default=None,
        help="stable id for this event (default: a new UUID); a retried emit with the same id "
        "is not created twice after an ambiguous failure",
    )
    emit.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    return run_emit(
        args.conn_id,
        args.uri,
        extra_json=args.extra,
        partition_key=args.partition_key,
        event_id=args.event_id,
    )

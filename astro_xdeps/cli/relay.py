"""``astro-xdeps relay``: run the relay standalone, validate its rules, dry-run an event."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from astro_xdeps.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from astro_xdeps.exceptions import ConfigError, XdepsError


def run_check(path: str, out: TextIO) -> int:
    from astro_xdeps.relay.config import load_config

    try:
        config = load_config(path)
    except ConfigError as exc:
        sys.stderr.write(f"{exc}\n")
        return EXIT_FAILED
    out.write(f"{path}: OK — {len(config.sources)} source(s), {len(config.rules)} rule(s)\n")
    for rule in config.rules:
        if rule.deadline is not None:
            d = rule.deadline
            kind = f"deadline '{d.cron}' {d.timezone} for {'/'.join(rule.conditions[0].types)} {rule.conditions[0].dag_id}"
        elif rule.stateful:
            counts = [c.count for c in rule.conditions]
            kind = (
                f"{'all' if rule.required == len(counts) else rule.required} of {len(counts)}"
                f"{' (counts ' + '/'.join(map(str, counts)) + ')' if max(counts) > 1 else ''}"
                f" within {rule.within_seconds:g}s"
            )
        else:
            kind = "any match"
        targets = ", ".join(f"{a.kind} {a.dag_id or a.uri} on {a.target}" for a in rule.actions)
        out.write(f"  {rule.name}: {kind} -> {targets}\n")
    return EXIT_OK


def run_explain(path: str, event_json: str, out: TextIO, source_name: str | None = None) -> int:
    from astro_xdeps import runtime
    from astro_xdeps.exceptions import PayloadError
    from astro_xdeps.relay.config import load_config
    from astro_xdeps.relay.engine import RelayEngine
    from astro_xdeps.relay.payloads import parse_event

    try:
        config = load_config(path)
        text = event_json
        if event_json.startswith("@"):
            with open(event_json[1:]) as f:
                text = f.read()
        if source_name is None and len(config.sources) == 1:
            source_name = config.sources[0].name
        source = config.source(source_name) if source_name is not None else None
        if source_name is not None and source is None:
            known = ", ".join(s.name for s in config.sources) or "none"
            raise ConfigError(f"--source {source_name!r} is not a source of {path} (sources: {known}).")
        event = parse_event(
            json.loads(text),
            webhook_id="explain",
            default_deployment=source.deployment if source else None,
            source=source.name if source else None,
        )
    except (ConfigError, PayloadError) as exc:
        sys.stderr.write(f"{exc}\n")
        return EXIT_USAGE
    except (json.JSONDecodeError, OSError) as exc:
        sys.stderr.write(f"the event is not readable JSON: {exc}\n")
        return EXIT_USAGE
    try:
        engine = RelayEngine(config, runtime.get_outbox())
        lines = engine.explain(event)
    except XdepsError as exc:
        sys.stderr.write(f"astro-xdeps relay explain: {exc}\n")
        return EXIT_FAILED
    out.write(
        f"event: {event.type} dag_id={event.dag_id} run_id={event.run_id} deployment={event.deployment}\n"
    )
    for line in lines:
        out.write(line + "\n")
    if event.source is None and config.sources:
        out.write("(run ids depend on the source the event comes through: pass --source)\n")
    return EXIT_OK


def run_serve(path: str, host: str, port: int) -> int:
    import uvicorn

    from astro_xdeps import runtime
    from astro_xdeps.relay.app import create_app

    try:
        rt = runtime.relay_runtime(path)
    except XdepsError as exc:
        sys.stderr.write(f"astro-xdeps relay serve: {exc}\n")
        return EXIT_USAGE
    runtime.ensure_worker()  # deliver what the relay enqueues (and what was left before)
    runtime.ensure_deadline_clock(rt.engine)  # deadline rules: decide missed deadlines
    # Monitoring without a token only where no one else can reach it (see README: /metrics).
    app = create_app(lambda: rt, open_monitoring=_is_loopback(host), freeze_heap=True)
    sys.stderr.write(
        f"astro-xdeps relay: POST http://{host}:{port}/events/<source>  ({len(rt.config.rules)} rules)\n"
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return EXIT_OK


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def add_parser(sub: argparse._SubParsersAction) -> None:
    relay = sub.add_parser("relay", help="the state-based trigger relay")
    relay.set_defaults(func=main)
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


def main(args) -> int:
    out = sys.stdout
    if args.relay_command == "check":
        return run_check(args.config, out)
    if args.relay_command == "explain":
        return run_explain(args.config, args.event, out, args.source)
    return run_serve(args.config, args.host, args.port)

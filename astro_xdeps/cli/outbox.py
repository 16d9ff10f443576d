"""``astro-xdeps outbox``: what is pending, what failed and why, replay, and a standalone drainer."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from typing import TextIO

from astro_xdeps.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from astro_xdeps.exceptions import XdepsError
from astro_xdeps.outbox.loss import Losses, losses_path, read_losses
from astro_xdeps.outbox.models import Item, StatusRow
from astro_xdeps.outbox.store import Outbox


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n")


def render_status(rows: list[StatusRow], outbox_url: str, out: TextIO, now: float | None = None) -> None:
    now = time.time() if now is None else now
    out.write(f"outbox: {outbox_url}\n")
    if not rows:
        out.write("empty: nothing pending, nothing failed\n")
        return
    table = [["TARGET", "KIND", "STATE", "COUNT", "DUE", "OLDEST", "NEXT TRY", "LAST ERROR"]]
    for r in rows:
        next_try = (
            "-"
            if r.next_attempt_at is None
            else ("now" if r.next_attempt_at <= now else f"in {_ago(r.next_attempt_at - now)}")
        )
        error = (r.last_error or "").replace("\n", " ")
        table.append(
            [
                r.target,
                r.kind,
                r.state,
                str(r.count),
                str(r.due) if r.state == "pending" else "-",
                _ago(now - r.oldest_created_at),
                next_try if r.state == "pending" else "-",
                error[:140] + ("…" if len(error) > 140 else ""),
            ]
        )
    _table(table, out)


def render_items(items: list[Item], out: TextIO, now: float | None = None) -> None:
    now = time.time() if now is None else now
    if not items:
        out.write("no items\n")
        return
    for it in items:
        what = it.payload.get("uri") or f"{it.payload.get('dag_id')}/{it.payload.get('dag_run_id')}"
        out.write(
            f"#{it.id}  {it.state}  {it.kind} -> {it.target}  {what}  attempts={it.attempts}  age={_ago(now - it.created_at)}\n"
        )
        if it.last_error:
            out.write(f"    last error: {it.last_error}\n")


def render_losses(losses: Losses, out: TextIO, now: float | None = None) -> None:
    """The listener's lost events, if any: they never reached the outbox, so no row shows them."""
    if not losses.lost_events:
        return
    now = time.time() if now is None else now
    last = losses.recent[-1] if losses.recent else {}
    out.write(
        f"LOST: {losses.lost_events} asset event(s) could not be written to the outbox and were not "
        f"forwarded (last {_ago(now - (losses.last_at or now))} ago"
        + (f", {last.get('uri')}: {last.get('error')}" if last else "")
        + f"). Details: {losses_path()}; delete that file to reset the count.\n"
    )


def run_status(outbox: Outbox, out: TextIO, *, as_json: bool = False, losses: Losses | None = None) -> int:
    rows = outbox.status()
    losses = read_losses() if losses is None else losses
    if as_json:
        out.write(
            json.dumps(
                {
                    "outbox": outbox.url,
                    "items": [r.__dict__ for r in rows],
                    "listener_losses": losses.__dict__,
                },
                indent=2,
            )
            + "\n"
        )
    else:
        render_status(rows, outbox.url, out)
        render_losses(losses, out)
    return EXIT_OK


def run_list(outbox: Outbox, out: TextIO, *, state: str | None, target: str | None, limit: int) -> int:
    render_items(outbox.list_items(state=state, target=target, limit=limit), out)
    return EXIT_OK


def run_retry(outbox: Outbox, out: TextIO, *, ids: list[int], all_dead: bool) -> int:
    count = outbox.retry(ids or None, all_dead=all_dead)
    out.write(f"{count} item(s) queued for delivery again\n")
    return EXIT_OK if count or not ids else EXIT_FAILED


def run_drain(outbox: Outbox, out: TextIO, *, follow: bool, timeout: float | None) -> int:
    from astro_xdeps import runtime

    worker = runtime.build_worker(outbox)
    if not follow:
        stats = worker.drain(timeout=timeout)
        out.write(f"delivered {stats.delivered}, to retry later {stats.retried}, dead {stats.dead}\n")
        worker.stop()
        return EXIT_OK if stats.dead == 0 else EXIT_FAILED
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    worker.start()
    out.write(f"draining {outbox.url} until stopped (Ctrl-C)\n")
    out.flush()
    stopped.wait(timeout)
    worker.stop()
    return EXIT_OK


def add_parser(sub: argparse._SubParsersAction) -> None:
    outbox = sub.add_parser("outbox", help="inspect and operate the outbox of this deployment")
    outbox.set_defaults(func=main)
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


def main(args) -> int:
    from astro_xdeps import runtime

    out = sys.stdout
    if args.outbox_command == "status":
        losses = read_losses()
        try:
            outbox = runtime.get_outbox()
        except XdepsError:
            render_losses(losses, out)  # the count lives outside the outbox: show it anyway
            raise
        return run_status(outbox, out, as_json=args.json, losses=losses)
    outbox = runtime.get_outbox()
    if args.outbox_command == "list":
        return run_list(outbox, out, state=args.state, target=args.target, limit=args.limit)
    if args.outbox_command == "retry":
        if not args.ids and not args.all_dead:
            sys.stderr.write("astro-xdeps outbox retry: give item ids or --all-dead\n")
            return EXIT_USAGE
        return run_retry(outbox, out, ids=args.ids, all_dead=args.all_dead)
    return run_drain(outbox, out, follow=args.follow, timeout=args.timeout)

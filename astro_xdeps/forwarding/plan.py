"""The forwarding plan: where this deployment's asset events go, decided once from the options.

:func:`build_forwarding_plan` reads ``[astro_xdeps]`` (``runtime.forwarding_plan`` caches it per
process); :func:`plan_items` turns one event into its outbox items without I/O.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from astro_xdeps import settings
from astro_xdeps.forwarding.payload import SourceEvent, may_forward, outbox_item
from astro_xdeps.forwarding.routes import (
    Route,
    all_targets,
    default_routes,
    destinations,
    load_routes_file,
    load_routes_text,
)
from astro_xdeps.outbox.models import NewItem


@dataclass(frozen=True)
class ForwardingPlan:
    """Everything the asset listener needs to decide, without I/O, where an event goes."""

    enabled: bool
    routes: tuple[Route, ...]
    deployment: str
    max_hops: int
    reason: str


def build_forwarding_plan() -> ForwardingPlan:
    """Read the options once. Raises :class:`ConfigError` on invalid routes or switch."""
    conn_id = settings.conn_id()
    routes_text, routes_file = settings.routes(), settings.routes_file()
    routes: list[Route] = []
    if routes_text:
        routes += load_routes_text(routes_text, source="[astro_xdeps] routes")
    if routes_file:
        routes += load_routes_file(routes_file)
    switch = settings.forward_assets()
    if routes:
        reason = f"{len(routes)} route(s) to {', '.join(sorted(all_targets(routes)))}"
    else:
        routes = default_routes(conn_id)
        reason = f"every asset to {conn_id}"
    if switch is True:
        enabled = True
    elif switch is False:
        enabled, reason = False, "forward_assets is false"
    else:  # auto
        explicit = bool(routes_text or routes_file)
        env_conn = f"AIRFLOW_CONN_{conn_id.upper()}" in os.environ
        env_url = bool(os.environ.get("DEPLOYMENT_URL"))
        enabled = explicit or env_conn or env_url
        if not enabled:
            reason = (
                "no routes, no DEPLOYMENT_URL and no AIRFLOW_CONN_* for the default connection "
                "(set forward_assets=true to use a connection stored in the metadata DB)"
            )
    return ForwardingPlan(
        enabled=enabled,
        routes=tuple(routes),
        deployment=settings.deployment_name(),
        max_hops=settings.max_hops(),
        reason=reason,
    )


def plan_items(event: SourceEvent, plan: ForwardingPlan, *, event_id: str) -> list[NewItem]:
    """The outbox items for one event under ``plan`` (pure)."""
    if not plan.enabled or not may_forward(event, max_hops=plan.max_hops):
        return []
    return [
        outbox_item(event, dest, event_id=event_id, deployment=plan.deployment)
        for dest in destinations(plan.routes, event.uri, event.name, received=event.received)
    ]

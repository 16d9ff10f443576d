"""The page in the Airflow UI: outbox, relay and dependency graph, under Airflow's auth.

Mounted by the plugin in the Airflow 3.1+ api-server at ``/xdeps/ui`` and shown inside the UI
as an external view (Browse → Cross-deployment). Endpoints (all need a logged-in Airflow user
who may read DAG runs; see :mod:`astro_xdeps.ui.access`):

- ``GET /`` — the page (one HTML file with its CSS and JS inline: no CDN, no network);
- ``GET /api/summary`` — per target: pending / delivered / dead, oldest pending, next try,
  last error in plain words; plus what this user may retry;
- ``GET /api/items?state=&target=&before=&limit=`` — items newest first, keyset-paged;
- ``GET /api/items/{id}`` — one item with payload and provenance;
- ``POST /api/retry`` ``{"ids": [...]}`` or ``{"all_dead": true}`` — needs permission to create
  asset events / DAG runs for the kinds retried (403 otherwise); JSON only, so a cross-site
  form cannot post it with the user's cookie;
- ``GET /api/relay?before=&limit=`` — sources, rules and recent events with what was done;
- ``GET /api/graph`` — the dependency graph with a layout to draw.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from astro_xdeps.exceptions import XdepsError
from astro_xdeps.outbox.models import KINDS, STATES
from astro_xdeps.outbox.store import Outbox
from astro_xdeps.ui.access import Access

log = logging.getLogger(__name__)

MAX_RETRY_IDS = 1000

_bearer = HTTPBearer(auto_error=False)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def _reader(request: Request, credentials: Credentials) -> Any:
    """The logged-in Airflow user, if they may read DAG runs: the gate of every endpoint."""
    access: Access = request.app.state.xdeps_access
    user = await access.user(request, credentials)
    if not await run_in_threadpool(access.can_read, user):
        raise HTTPException(403, "Your Airflow user may not read DAG runs, so it may not see this page.")
    return user


Reader = Annotated[Any, Depends(_reader)]


@dataclass
class UiRuntime:
    """What the page reads, built on the first request so that mounting costs nothing."""

    outbox: Outbox
    deployment: str
    relay_config: Any = None  # RelayConfig | None
    journal: Any = None  # RelayJournal | None
    graph_inputs: Callable[[], Any] | None = None  # () -> GraphInputs
    wake: Callable[[], None] | None = None  # wake the delivery worker after a retry


def create_app(load: Callable[[], UiRuntime], access: Access) -> FastAPI:
    app = FastAPI(title="astro-xdeps page", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.xdeps_access = access
    holder: dict[str, Any] = {}
    lock = threading.Lock()

    def runtime() -> UiRuntime:
        with lock:
            if "rt" not in holder:
                from astro_xdeps.ui.queries import OutboxQueries

                rt = load()
                holder["rt"], holder["q"] = rt, OutboxQueries(rt.outbox)
            return holder["rt"]

    def queries():
        runtime()
        return holder["q"]

    @app.exception_handler(XdepsError)
    async def xdeps_error(_request: Request, exc: XdepsError) -> JSONResponse:
        log.warning("astro-xdeps page: %s", exc)
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(ValueError)
    async def bad_value(_request: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.get("/", response_class=HTMLResponse)
    async def page(request: Request, credentials: Credentials):
        try:
            await _reader(request, credentials)
        except HTTPException as exc:
            return HTMLResponse(_refused_page(exc.status_code, str(exc.detail)), status_code=exc.status_code)
        return HTMLResponse(_page_html(), headers={"Cache-Control": "no-store"})

    @app.get("/api/summary")
    def summary(user: Reader) -> dict[str, Any]:
        rt = runtime()
        now = time.time()
        targets = [t.to_dict() for t in queries().summary(now)]
        return {
            "deployment": rt.deployment,
            "outbox": rt.outbox.url,
            "now": now,
            "user": access.name(user),
            "can_retry": {kind: access.can_retry(user, kind) for kind in KINDS},
            "targets": targets,
            "totals": {s: sum(t[s] for t in targets) for s in STATES},
        }

    @app.get("/api/items")
    def items(
        _user: Reader,
        state: Annotated[str | None, Query()] = None,
        target: Annotated[str | None, Query()] = None,
        before: Annotated[int | None, Query()] = None,
        limit: Annotated[int, Query()] = 50,
    ) -> dict[str, Any]:
        rows, next_before = queries().items(
            state=state or None, target=target or None, before=before, limit=limit
        )
        return {"items": [r.to_dict() for r in rows], "next_before": next_before}

    @app.get("/api/items/{item_id}")
    def item(item_id: int, _user: Reader) -> dict[str, Any]:
        row = queries().item(item_id)
        if row is None:
            raise HTTPException(404, f"No outbox item {item_id} (never stored, or purged after delivery).")
        return row.to_dict()

    @app.post("/api/retry")
    async def retry(request: Request, user: Reader) -> dict[str, Any]:
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            raise HTTPException(415, 'Send the retry as JSON: {"ids": [1, 2]} or {"all_dead": true}.')
        try:
            body = json.loads(await request.body() or b"{}")
        except json.JSONDecodeError as exc:
            raise HTTPException(400, f"The body is not valid JSON: {exc.msg}.") from None
        ids = body.get("ids") if isinstance(body, dict) else None
        all_dead = isinstance(body, dict) and body.get("all_dead") is True
        if ids is not None and (
            not isinstance(ids, list)
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
            or len(ids) > MAX_RETRY_IDS
        ):
            raise HTTPException(400, f"ids must be a list of at most {MAX_RETRY_IDS} item ids (integers).")
        if not ids and not all_dead:
            raise HTTPException(400, 'Say what to retry: {"ids": [1, 2]} or {"all_dead": true}.')
        q = queries()

        def check_and_retry() -> int:
            if not any(access.can_retry(user, k) for k in KINDS):
                raise HTTPException(
                    403,
                    "Your Airflow user may neither create asset events nor trigger DAG runs: it may not retry.",
                )
            kinds = set(q.kinds_of(ids).values()) if ids else set()
            if all_dead:
                kinds |= q.dead_kinds()
            refused = sorted(k for k in kinds if not access.can_retry(user, k))
            if refused:
                what = " and ".join(
                    "create asset events" if k == "asset_event" else "trigger DAG runs" for k in refused
                )
                raise HTTPException(
                    403, f"Retrying these items needs permission to {what} in this deployment."
                )
            return runtime().outbox.retry(ids or None, all_dead=all_dead)

        count = await run_in_threadpool(check_and_retry)
        log.info("astro-xdeps page: %s queued %d item(s) for delivery again", access.name(user), count)
        rt = runtime()
        if count and rt.wake is not None:
            try:
                rt.wake()
            except Exception:
                log.exception("astro-xdeps could not wake the delivery worker")
        return {"retried": count}

    @app.get("/api/relay")
    def relay(
        _user: Reader, before: Annotated[int | None, Query()] = None, limit: Annotated[int, Query()] = 50
    ) -> dict[str, Any]:
        rt = runtime()
        out: dict[str, Any] = {"configured": rt.relay_config is not None, "sources": [], "rules": []}
        if rt.relay_config is not None:
            out["sources"] = [_describe_source(s) for s in rt.relay_config.sources]
            out["rules"] = [_describe_rule(r) for r in rt.relay_config.rules]
        events, next_before = rt.journal.recent(before=before, limit=limit) if rt.journal else ([], None)
        out["events"], out["next_before"] = events, next_before
        return out

    @app.get("/api/graph")
    def graph(_user: Reader) -> dict[str, Any]:
        from astro_xdeps.graph.layout import layout
        from astro_xdeps.graph.model import HEALTH_COLOURS

        rt = runtime()
        if rt.graph_inputs is None:
            return {"graph": {"nodes": [], "edges": []}, "layout": None, "notes": ["no graph source"]}
        inputs = rt.graph_inputs()
        g = inputs.graph()
        return {
            "graph": g.to_dict(),
            "layout": layout(g).to_dict(),
            "notes": inputs.notes,
            "colours": HEALTH_COLOURS,
        }

    return app


def _describe_source(source: Any) -> dict[str, Any]:
    secret_from = ", ".join(source.secrets_env) or f"connection {source.secrets_conn}"
    return {
        "name": source.name,
        "auth": source.auth,
        "deployment": source.deployment,
        "path": f"/events/{source.name}",
        "secret_from": secret_from,  # names only, never values
    }


def _describe_rule(rule: Any) -> dict[str, Any]:
    from astro_xdeps.relay.journal import describe_condition

    actions = []
    for a in rule.actions:
        actions.append(
            f"trigger {a.dag_id} on {a.target}"
            if a.kind == "trigger_dag"
            else f"asset event {a.uri} on {a.target}"
        )
    return {
        "name": rule.name,
        "mode": f"all of, within {rule.within_seconds:g}s" if rule.all_of else "any of",
        "when": [describe_condition(c) for c in rule.conditions],
        "then": actions,
    }


_PAGE: dict[str, str] = {}


def _page_html() -> str:
    if "html" not in _PAGE:
        _PAGE["html"] = resources.files("astro_xdeps.ui").joinpath("page.html").read_text(encoding="utf-8")
    return _PAGE["html"]


def _refused_page(status: int, detail: str) -> str:
    from html import escape

    what = "Log in to Airflow first" if status == 401 else "Not allowed"
    return (
        "<!doctype html><meta charset='utf-8'><title>astro-xdeps</title>"
        "<body style='font-family:sans-serif;margin:2em'>"
        f"<h1>{escape(what)}</h1><p>{escape(detail)}</p>"
        "<p>This page shows astro-xdeps inside the Airflow UI and uses Airflow's login. "
        "<a href='/auth/login' target='_top'>Log in</a></p></body>"
    )


def runtime_from_settings() -> UiRuntime:
    """The runtime of a page mounted in the api-server: this deployment's outbox and relay."""
    from astro_xdeps import runtime, settings
    from astro_xdeps.graph.sources import collect
    from astro_xdeps.relay.journal import RelayJournal
    from astro_xdeps.ui.queries import OutboxQueries

    outbox = runtime.get_outbox()
    relay_config = None
    if settings.relay_config():
        from astro_xdeps.relay.config import load_config

        relay_config = load_config(settings.relay_config())
    return UiRuntime(
        outbox=outbox,
        deployment=settings.deployment_name(),
        relay_config=relay_config,
        journal=RelayJournal(outbox.db),
        graph_inputs=lambda: collect(OutboxQueries(outbox).sample()),
        wake=lambda: runtime.ensure_worker(),
    )

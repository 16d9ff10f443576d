"""The relay's HTTP door: a FastAPI app that verifies, parses, evaluates rules and enqueues.

Endpoints (prefix ``/xdeps/relay`` when mounted in the Airflow 3 api-server):

- ``POST /events/{source}`` — an event from a configured source. Answers **202** only after
  the resulting actions are durably in the outbox; a repeated ``webhook-id`` (or event id)
  answers 202 again with ``"new_actions": 0``. Errors: 401 bad or missing signature/token,
  404 unknown source, 413 body too large, 415 not JSON, 400 malformed JSON, 422 an invalid
  event, 500 the relay itself is misconfigured (e.g. a secret env var unset), 503 the outbox
  is unavailable (retry later).
- ``GET /health`` — 200 when the outbox answers.
- ``GET /metrics`` — Prometheus text format.

Not protected by Airflow's auth when mounted (Airflow does not guard plugin apps): every
request to ``/events`` must carry a valid signature or bearer secret of its source.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from astro_xdeps.exceptions import ConfigError, XdepsError
from astro_xdeps.outbox import loss
from astro_xdeps.outbox.store import Outbox
from astro_xdeps.relay.engine import RelayEngine
from astro_xdeps.relay.events import PayloadError, parse_event, parse_json_body
from astro_xdeps.relay.rules import RelayConfig, Source
from astro_xdeps.relay.signing import SignatureError, verify_bearer, verify_standard_webhook

log = logging.getLogger(__name__)
_SECRET_CACHE_SECONDS = 60.0


@dataclass
class RelayRuntime:
    """What the app needs, built on first use so that mounting the app costs nothing."""

    config: RelayConfig
    engine: RelayEngine
    on_enqueue: Callable[[], None] | None = None


class SecretResolver:
    """Secrets of a source from env vars or an Airflow connection's password; never logged."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[float, list[str]]] = {}
        self._lock = threading.Lock()

    def __call__(self, source: Source) -> list[str]:
        secrets = [os.environ[name] for name in source.secrets_env if os.environ.get(name)]
        if source.secrets_conn:
            secrets += self._from_connection(source.secrets_conn)
        if not secrets:
            where = ", ".join(source.secrets_env) or f"connection {source.secrets_conn}"
            raise ConfigError(f"source {source.name!r} has no secret: set {where}.")
        return secrets

    def _from_connection(self, conn_id: str) -> list[str]:
        with self._lock:
            cached = self._cache.get(conn_id)
            if cached and time.monotonic() - cached[0] < _SECRET_CACHE_SECONDS:
                return cached[1]
        from astro_xdeps.version_compat import BaseHook

        try:
            password = BaseHook.get_connection(conn_id).password
        except Exception as exc:
            raise ConfigError(
                f"connection {conn_id!r} for a relay secret cannot be read ({type(exc).__name__})."
            ) from None
        value = [password] if password else []
        with self._lock:
            self._cache[conn_id] = (time.monotonic(), value)
        return value


class Metrics:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()
        self.actions: Counter[str] = Counter()
        self.lock = threading.Lock()

    def request(self, source: str, status: int) -> None:
        with self.lock:
            self.requests[(source, status)] += 1

    def render(self, outbox: Outbox | None) -> str:
        lines = [
            "# HELP xdeps_relay_requests_total Event requests by source and HTTP status.",
            "# TYPE xdeps_relay_requests_total counter",
        ]
        with self.lock:
            for (source, status), n in sorted(self.requests.items()):
                lines.append(f'xdeps_relay_requests_total{{source="{_label(source)}",status="{status}"}} {n}')
            lines += [
                "# HELP xdeps_relay_actions_total New actions written to the outbox, by rule.",
                "# TYPE xdeps_relay_actions_total counter",
            ]
            for rule, n in sorted(self.actions.items()):
                lines.append(f'xdeps_relay_actions_total{{rule="{_label(rule)}"}} {n}')
        if outbox is not None:
            lines += [
                "# HELP xdeps_outbox_items Outbox items by target, kind and state.",
                "# TYPE xdeps_outbox_items gauge",
            ]
            try:
                for row in outbox.status():
                    lines.append(
                        f'xdeps_outbox_items{{target="{_label(row.target)}",kind="{row.kind}",state="{row.state}"}} {row.count}'
                    )
            except XdepsError:
                lines.append("# outbox unavailable")
        lines += loss.prometheus_lines()
        return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def _error(status: int, reason: str, metrics: Metrics, source: str) -> JSONResponse:
    metrics.request(source, status)
    return JSONResponse({"error": reason}, status_code=status)


def create_app(load: Callable[[], RelayRuntime]) -> FastAPI:
    """The relay app. ``load`` builds the runtime on the first request (and again after a failure)."""
    app = FastAPI(title="astro-xdeps relay", docs_url=None, redoc_url=None, openapi_url=None)
    metrics = Metrics()
    secrets = SecretResolver()
    holder: dict[str, RelayRuntime] = {}
    lock = threading.Lock()

    def runtime() -> RelayRuntime:
        with lock:
            if "rt" not in holder:
                holder["rt"] = load()
            return holder["rt"]

    @app.post("/events/{source_name}", status_code=202)
    async def post_event(source_name: str, request: Request):
        try:
            rt = runtime()
        except XdepsError as exc:
            log.error("Relay is misconfigured: %s", exc)
            return _error(500, f"relay misconfigured: {exc}", metrics, "-")
        source = rt.config.source(source_name)
        if source is None:
            return _error(
                404,
                f"unknown source {source_name!r}; configured: {', '.join(s.name for s in rt.config.sources)}",
                metrics,
                "-",
            )
        max_bytes = rt.config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            return _error(413, f"body is {declared} bytes; the limit is {max_bytes}", metrics, source.name)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_bytes:
                return _error(413, f"body exceeds the limit of {max_bytes} bytes", metrics, source.name)
        ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if ctype != "application/json":
            return _error(415, f"content-type must be application/json, got {ctype!r}", metrics, source.name)
        try:
            source_secrets = await run_in_threadpool(secrets, source)
        except ConfigError as exc:
            log.error("Relay source %s: %s", source.name, exc)
            return _error(500, f"relay misconfigured: {exc}", metrics, source.name)
        headers = dict(request.headers)
        try:
            if source.auth == "bearer":
                verify_bearer(headers, source_secrets)
                webhook_id = headers.get("webhook-id")
            else:
                webhook_id = verify_standard_webhook(
                    headers, body, source_secrets, tolerance=source.tolerance_seconds
                )
        except SignatureError as exc:
            return _error(401, str(exc), metrics, source.name)
        except ConfigError as exc:
            log.error("Relay source %s: %s", source.name, exc)
            return _error(500, f"relay misconfigured: {exc}", metrics, source.name)
        try:
            payload = parse_json_body(body, max_bytes=max_bytes)
        except PayloadError as exc:
            return _error(400, str(exc), metrics, source.name)
        try:
            event = parse_event(payload, webhook_id=webhook_id, default_deployment=source.deployment)
        except PayloadError as exc:
            return _error(422, str(exc), metrics, source.name)
        try:
            # Database work off the event loop: a mounted relay must not stall the api-server.
            result = await run_in_threadpool(rt.engine.ingest, event)
        except XdepsError as exc:
            log.error("Relay could not record event %s: %s", event.id, exc)
            metrics.request(source.name, 503)
            return JSONResponse(
                {"error": f"could not record the event, retry later: {exc}"},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        if result.new_actions and rt.on_enqueue is not None:
            rt.on_enqueue()
        with metrics.lock:
            for planned, enq in zip(result.planned, result.enqueued, strict=True):
                if enq.created:
                    metrics.actions[planned.rule] += 1
        metrics.request(source.name, 202)
        return JSONResponse(
            {
                "event_id": event.id,
                "type": event.type,
                "matched": result.matched,
                "waiting": result.waiting,
                "new_actions": result.new_actions,
                "actions": [e.id for e in result.enqueued],
            },
            status_code=202,
        )

    @app.get("/health")
    def health():
        try:
            rt = runtime()
            rt.engine.outbox.next_due_at()
        except XdepsError as exc:
            return JSONResponse({"status": "unhealthy", "error": str(exc)}, status_code=503)
        return {"status": "ok", "sources": [s.name for s in rt.config.sources], "rules": len(rt.config.rules)}

    @app.get("/metrics")
    def prometheus():
        outbox = holder["rt"].engine.outbox if "rt" in holder else None
        return PlainTextResponse(metrics.render(outbox), media_type="text/plain; version=0.0.4")

    return app


def runtime_from_settings(config_path: str | None = None) -> RelayRuntime:
    """The runtime for a relay configured through ``[astro_xdeps] relay_config`` (or a path)."""
    from astro_xdeps import runtime, settings
    from astro_xdeps.relay.rules import load_config

    if not (config_path or settings.get("relay_config")):
        raise ConfigError(
            "no relay config: set [astro_xdeps] relay_config (AIRFLOW__ASTRO_XDEPS__RELAY_CONFIG) to a file."
        )
    if config_path:
        engine = RelayEngine(load_config(config_path), runtime.get_outbox())
    else:
        engine = runtime.relay_engine()
        assert engine is not None
    return RelayRuntime(config=engine.config, engine=engine, on_enqueue=lambda: runtime.ensure_worker())

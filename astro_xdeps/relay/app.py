"""The relay's HTTP door: a FastAPI app that verifies, parses, evaluates rules and enqueues.

Endpoints (prefix ``/xdeps/relay`` when mounted in the Airflow 3 api-server):

- ``POST /events/{source}`` — an event from a configured source. Answers **202** only after
  the resulting actions are durably in the outbox; a repeated ``webhook-id`` (or event id)
  on the same source answers 202 again with ``"new_actions": 0``. Every refusal is raised as a
  ``Problem`` and answered by one handler as RFC 9457 ``application/problem+json``
  (``problems.py``): 401 bad or missing signature/token, 404 unknown source, 413 body too
  large, 415 not JSON, 400 malformed JSON, 422 an invalid event, 503 + ``Retry-After`` when
  the relay cannot take events now (outbox unavailable or still opening, or the relay/source
  misconfigured: the details go to the server log, never to the caller).
- ``GET /health`` — 200 when the outbox answers, 503 otherwise; only ``status`` unless the
  caller may read monitoring (below).
- ``GET /metrics`` — Prometheus text format, for callers that may read monitoring.

Monitoring (``/metrics``, the details of ``/health``) is open to a caller with
``Authorization: Bearer <[astro_xdeps] relay_metrics_token>``; without a token configured it
is open only on a standalone relay listening on loopback (``open_monitoring``), never when
mounted. Airflow does not guard plugin apps: every request to ``/events`` must carry a valid
signature or bearer secret of its source.

The runtime (rules and outbox) is built on first use, in a worker thread: opening a locked
or slow outbox must not stall the event loop of the api-server the relay is mounted in.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers

from astro_xdeps.exceptions import ConfigError, PayloadError, SignatureError, XdepsError
from astro_xdeps.relay.body import parse_json_body
from astro_xdeps.relay.engine import RelayEngine
from astro_xdeps.relay.metrics import DB_ERRORS, Metrics
from astro_xdeps.relay.payloads import parse_event
from astro_xdeps.relay.problems import (
    BODY_TOO_LARGE,
    INVALID_EVENT,
    MALFORMED_BODY,
    NOT_AUTHENTICATED,
    NOT_JSON,
    UNKNOWN_SOURCE,
    Problem,
    problem_response,
)
from astro_xdeps.relay.rules import RelayConfig, Source
from astro_xdeps.relay.signing import HEADER_ID, single_header, verify_bearer, verify_standard_webhook
from astro_xdeps.state_events import StateEvent

log = logging.getLogger(__name__)
_SECRET_CACHE_SECONDS = 60.0
# How long an event request waits for another request that is opening the outbox.
LOAD_WAIT_SECONDS = 15.0
RETRY_AFTER_UNAVAILABLE = "5"
RETRY_AFTER_MISCONFIGURED = "60"


class RelayUnavailable(Exception):
    """The relay cannot serve now. ``detail`` is for the server log only; callers get 503."""

    def __init__(self, detail: str, retry_after: str = RETRY_AFTER_UNAVAILABLE) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


@dataclass
class RelayRuntime:
    """What the app needs, built on first use so that mounting the app costs nothing."""

    engine: RelayEngine
    on_enqueue: Callable[[], None] | None = None

    @property
    def config(self) -> RelayConfig:
        return self.engine.config


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


class _Busy(RelayUnavailable):
    """Another request is building the runtime right now."""


class _RuntimeHolder:
    """Builds the runtime once, in a worker thread; later callers get it at once.

    One thread builds; nobody else waits in a thread (the thread pool also serves /health and
    /metrics): event requests poll from the event loop while ``building``.
    """

    def __init__(self, load: Callable[[], RelayRuntime], *, freeze_heap: bool = False) -> None:
        self._load = load
        self._freeze_heap = freeze_heap
        self._lock = threading.Lock()  # acquired and released in the same worker thread
        self.current: RelayRuntime | None = None

    @property
    def building(self) -> bool:
        return self._lock.locked()

    def get(self) -> RelayRuntime:
        """The runtime, built now if needed (call off the event loop).

        Raises RelayUnavailable (never a raw error) when it cannot be built, ``_Busy`` at once
        when another thread is building it.
        """
        if self.current is not None:
            return self.current
        if not self._lock.acquire(blocking=False):
            raise _Busy("the relay is still opening its outbox (another request is opening it)")
        try:
            if self.current is None:
                self.current = self._build()
            return self.current
        finally:
            self._lock.release()

    async def aget(self) -> RelayRuntime:
        """``get`` for the event loop: builds in a worker thread, or waits (polling) for the builder."""
        deadline = time.monotonic() + LOAD_WAIT_SECONDS
        while True:
            if self.current is not None:
                return self.current
            if not self.building:
                try:
                    return await run_in_threadpool(self.get)
                except _Busy:
                    pass  # another request started building in between: wait for it
            if time.monotonic() >= deadline:
                raise RelayUnavailable("the relay is still opening its outbox")
            await asyncio.sleep(0.05)

    def _build(self) -> RelayRuntime:
        try:
            runtime = self._load()
            if self._freeze_heap:
                _freeze_heap()
            return runtime
        except DB_ERRORS as exc:
            log.error("The relay cannot open its outbox; answering 503 until it can: %s", _one_line(exc))
            raise RelayUnavailable(f"outbox unavailable: {_one_line(exc)}") from exc
        except Exception as exc:
            log.error(
                "The relay is misconfigured; answering 503 until it is fixed: %s",
                _one_line(exc),
                exc_info=not isinstance(exc, XdepsError),  # a bug rather than a config: keep the trace
            )
            raise RelayUnavailable(
                f"relay misconfigured: {_one_line(exc)}", retry_after=RETRY_AFTER_MISCONFIGURED
            ) from exc


def _freeze_heap() -> None:
    """Move every object alive now (the loaded server: Airflow, SQLAlchemy, FastAPI, the rules)
    out of the garbage collector's sight, once, when the runtime is built.

    Each request allocates enough for a full (generation 2) collection several times a second
    under load, and walking the whole loaded heap stopped the event loop for 55 to 90 ms each time:
    every request in flight waited (the relay's p99 at 16 connections). What is frozen is
    long-lived anyway; the objects of requests stay collectable.
    """
    gc.collect()
    gc.freeze()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:500] or type(exc).__name__


def create_app(
    load: Callable[[], RelayRuntime], *, open_monitoring: bool = False, freeze_heap: bool = False
) -> FastAPI:
    """The relay app. ``load`` builds the runtime on the first request (and again after a failure).

    ``open_monitoring``: ``/metrics`` and the details of ``/health`` need no token when
    ``[astro_xdeps] relay_metrics_token`` is unset. Only for a server that listens on loopback.
    ``freeze_heap``: once the runtime is built, freeze the process's heap (:func:`_freeze_heap`).
    Only for a process that is the relay alone (``relay serve``): it is a process-wide setting
    (``gc.get_referrers`` no longer sees frozen objects), not one for the api-server a mounted
    relay shares.
    """
    app = FastAPI(title="astro-xdeps relay", docs_url=None, redoc_url=None, openapi_url=None)
    metrics = Metrics()
    secrets = SecretResolver()
    holder = _RuntimeHolder(load, freeze_heap=freeze_heap)

    async def runtime() -> RelayRuntime:
        rt = holder.current
        return rt if rt is not None else await holder.aget()

    def may_monitor(request: Request) -> bool:
        """Whether this caller may read /metrics and the details of /health (run in a thread)."""
        from astro_xdeps import settings

        try:
            token = settings.relay_metrics_token()
        except Exception as exc:
            log.error("The relay cannot read [astro_xdeps] relay_metrics_token: %s", _one_line(exc))
            return False
        if not token:
            return open_monitoring
        try:
            verify_bearer(request.headers, [token])
        except SignatureError:
            return False
        except ConfigError as exc:
            log.error("[astro_xdeps] relay_metrics_token is unusable: %s", exc)
            return False
        return True

    @app.exception_handler(Problem)
    async def refuse(request: Request, problem: Problem) -> JSONResponse:
        metrics.request(problem.source, problem.kind.status)
        return problem_response(problem)

    async def post_event(request: Request) -> JSONResponse:
        source_name = request.path_params["source_name"]
        try:
            rt = await runtime()
        except RelayUnavailable as exc:
            raise Problem.unavailable(exc.retry_after) from exc
        source = rt.config.source(source_name)
        if source is None:
            # The configured sources are not listed: the caller may not know them.
            raise Problem(UNKNOWN_SOURCE, "unknown source: POST to /events/<source> of a configured source")
        body = await _read_body(request, source.name, rt.config.max_body_bytes)
        try:
            # Env-var secrets are read in the loop; only a connection lookup may block (a thread).
            source_secrets = (
                await run_in_threadpool(secrets, source) if source.secrets_conn else secrets(source)
            )
        except ConfigError as exc:
            raise _misconfigured(source, exc) from exc
        webhook_id = _authenticate(source, request.headers, body, source_secrets)
        event = _parse(body, source, webhook_id, rt.config.max_body_bytes)
        try:
            # The outbox's writer does the database work; the event loop only awaits its commit.
            result = await rt.engine.ingest_async(event)
        except (XdepsError, *DB_ERRORS) as exc:
            log.error(
                "Relay could not record event %s of source %s: %s", event.id, source.name, _one_line(exc)
            )
            raise Problem.unavailable(RETRY_AFTER_UNAVAILABLE, source=source.name) from exc
        if result.new_actions and rt.on_enqueue is not None:
            rt.on_enqueue()
        metrics.ingested(source.name, result)
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

    # A plain Starlette route: FastAPI's parameter resolution and validation cost about a tenth of
    # the request's CPU, and the endpoint reads its one path parameter and the raw body itself.
    app.router.add_route("/events/{source_name}", post_event, methods=["POST"])

    @app.get("/health")
    def health(request: Request):
        # A worker thread; it does not wait for another request that is opening the outbox.
        detailed = may_monitor(request)
        try:
            rt = holder.get()
            rt.engine.outbox.next_due_at()
        except (RelayUnavailable, *DB_ERRORS) as exc:
            detail = (
                exc.detail if isinstance(exc, RelayUnavailable) else f"outbox unavailable: {_one_line(exc)}"
            )
            answer = {"status": "unhealthy", "error": detail} if detailed else {"status": "unhealthy"}
            return JSONResponse(answer, status_code=503, headers={"Retry-After": RETRY_AFTER_UNAVAILABLE})
        if not detailed:
            return {"status": "ok"}
        return {"status": "ok", "sources": [s.name for s in rt.config.sources], "rules": len(rt.config.rules)}

    @app.get("/metrics")
    def prometheus(request: Request):
        if not may_monitor(request):
            return PlainTextResponse(
                "/metrics needs 'Authorization: Bearer <token>' with the token of [astro_xdeps] "
                "relay_metrics_token\n",
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        outbox = holder.current.engine.outbox if holder.current is not None else None
        return PlainTextResponse(metrics.render(outbox), media_type="text/plain; version=0.0.4")

    return app


async def _read_body(request: Request, source: str, max_bytes: int) -> bytes:
    """The raw body, refused (413) as soon as it is known to exceed ``max_bytes``; must be JSON (415)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise Problem(BODY_TOO_LARGE, f"body is {declared} bytes; the limit is {max_bytes}", source=source)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise Problem(BODY_TOO_LARGE, f"body exceeds the limit of {max_bytes} bytes", source=source)
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise Problem(NOT_JSON, f"content-type must be application/json, got {ctype!r}", source=source)
    return body


def _authenticate(source: Source, headers: Headers, body: bytes, secrets: list[str]) -> str | None:
    """The verified ``webhook-id`` (None: a bearer request without one); 401 if not authentic.

    Starlette's Headers keep every value of a repeated header (dict() would keep one), so a
    webhook-id or webhook-timestamp sent twice with different values is refused.
    """
    try:
        if source.auth == "bearer":
            verify_bearer(headers, secrets)
            return single_header(headers, HEADER_ID)
        return verify_standard_webhook(headers, body, secrets, tolerance=source.tolerance_seconds)
    except SignatureError as exc:
        raise Problem(NOT_AUTHENTICATED, exc.reason, source=source.name) from exc
    except ConfigError as exc:
        raise _misconfigured(source, exc) from exc


def _parse(body: bytes, source: Source, webhook_id: str | None, max_bytes: int) -> StateEvent:
    """The event the body reports: 400 if the body is not JSON, 422 if it is no event."""
    try:
        payload = parse_json_body(body, max_bytes=max_bytes)
    except PayloadError as exc:
        raise Problem(MALFORMED_BODY, exc.reason, source=source.name) from exc
    try:
        return parse_event(
            payload, webhook_id=webhook_id, default_deployment=source.deployment, source=source.name
        )
    except PayloadError as exc:
        raise Problem(INVALID_EVENT, exc.reason, source=source.name) from exc


def _misconfigured(source: Source, exc: ConfigError) -> Problem:
    """A source whose secret cannot be used: a 503 for the caller, the reason in the log only."""
    log.error("Relay source %s is misconfigured; answering 503: %s", source.name, exc)
    return Problem.unavailable(RETRY_AFTER_MISCONFIGURED, source=source.name)

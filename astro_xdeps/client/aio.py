"""The async client the triggers use: httpx (shipped with Airflow 3), same rules as the sync one.

Same auth (static token, JWT login with one re-login on 401, basic), same error classes and
retry policy (``error_for_response``, ``retry_policy``, ``token_from_login``), same ``Retry-After``
handling, timeouts and secret scrubbing: those are imported from the sync client, and paths
come from :mod:`astro_xdeps.client.common`. Only sending differs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import httpx
from tenacity import (
    AsyncRetrying,
    wait_exponential_jitter,
)

from astro_xdeps import __version__
from astro_xdeps.client import common
from astro_xdeps.client.api import Asset
from astro_xdeps.client.config import DeploymentConfig
from astro_xdeps.client.http import RetryMode, error_for_response, retry_policy, token_from_login
from astro_xdeps.exceptions import NotFoundError, RequestRejected, TransientError

log = logging.getLogger(__name__)

_PAGE = 100


class AsyncTransport:
    """Sends requests to one deployment from an event loop. Create it inside the loop that uses it."""

    def __init__(
        self,
        config: DeploymentConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.config = config
        self._sleep = sleep or asyncio.sleep
        t = config.timeouts
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(t.read, connect=t.connect),
            verify=config.verify,
            headers={"User-Agent": f"astro-xdeps/{__version__}"},
            transport=transport,
        )
        self._backoff = wait_exponential_jitter(
            initial=backoff_initial, max=backoff_max, jitter=backoff_initial
        )
        self._jwt: str | None = None
        self.api_version: str | None = None if config.api_version == "auto" else config.api_version

    @property
    def auth_mode(self) -> str:
        return common.auth_mode(self.config, self.api_version)

    @property
    def secrets(self) -> tuple[str, ...]:
        return (*self.config.secrets, self._jwt) if self._jwt else self.config.secrets

    def url(self, path: str) -> str:
        return f"{self.config.base_url}{path}"

    async def _auth_headers(self) -> dict[str, str]:
        mode = self.auth_mode
        if mode == "jwt":
            return {"Authorization": f"Bearer {self._jwt or await self._login()}"}
        return common.static_auth_headers(self.config, mode)

    async def _login(self) -> str:
        try:
            response = await self.client.post(
                self.url(common.LOGIN_PATH), json=common.login_payload(self.config)
            )
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, common.LOGIN_CALL, sent=False) from exc
        self._jwt = token_from_login(response, self.config)
        return self._jwt

    def _transport_error(self, exc: httpx.HTTPError, call: str, *, sent: bool) -> TransientError:
        return common.transport_error(
            self.config,
            exc,
            call,
            # Connect errors and connect timeouts: the server never saw the request.
            unsent=isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)),
            timed_out=isinstance(exc, httpx.TimeoutException),
            sent=sent,
        )

    async def _send_once(
        self, method: str, path: str, call: str, *, auth: bool, **kwargs: Any
    ) -> httpx.Response:
        headers = await self._auth_headers() if auth else {}
        try:
            response = await self.client.request(method, self.url(path), headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, call, sent=True) from exc
        if response.status_code == 401 and auth and self.auth_mode == "jwt" and self._jwt:
            log.info("Token for %s was refused; logging in again", self.config.name)
            self._jwt = None
            headers = await self._auth_headers()
            try:
                response = await self.client.request(method, self.url(path), headers=headers, **kwargs)
            except httpx.HTTPError as exc:
                raise self._transport_error(exc, call, sent=True) from exc
        return response

    async def request(
        self,
        method: str,
        path: str,
        *,
        ok: tuple[int, ...] = (200, 201),
        passthrough: tuple[int, ...] = (),
        retry: RetryMode = "all",
        auth: bool = True,
        retries: int | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send, retrying per ``retry``; return the response if its status is in ``ok`` or
        ``passthrough``, else raise the matching :class:`DeploymentError`."""
        call = f"{method} {path.split('?')[0]}"
        async for attempt in self.retrying(retry, retries):
            with attempt:
                response = await self._send_once(method, path, call, auth=auth, **kwargs)
                if response.status_code in ok or response.status_code in passthrough:
                    return response
                raise error_for_response(
                    response, deployment=self.config.name, call=call, secrets=self.secrets
                )
        raise AssertionError("unreachable")  # pragma: no cover - AsyncRetrying reraises

    def retrying(self, mode: RetryMode = "all", retries: int | None = None) -> AsyncRetrying:
        return AsyncRetrying(
            **retry_policy(self.config, self._backoff, mode, retries, log), sleep=self._sleep
        )

    async def aclose(self) -> None:
        await self.client.aclose()


class AsyncDeploymentClient:
    """The read calls the triggers make, in Airflow 3 (``/api/v2``) and 2 (``/api/v1``) form."""

    def __init__(self, config: DeploymentConfig, *, transport: AsyncTransport | None = None) -> None:
        self.config = config
        self.transport = transport or AsyncTransport(config)
        self._asset_cache: dict[str, Asset] = {}

    @property
    def name(self) -> str:
        return self.config.name

    async def api_version(self) -> str:
        if self.transport.api_version is None:
            r = await self.transport.request("GET", "/api/v2/version", auth=False, passthrough=(404,))
            if r.status_code == 200:
                self.transport.api_version = "v2"
            else:
                r = await self.transport.request(
                    "GET", "/api/v1/version", auth=False, passthrough=(401, 403, 404), ok=(200,)
                )
                if r.status_code == 404:
                    raise RequestRejected(
                        "No Airflow REST API found at this URL (both /api/v2/version and /api/v1/version "
                        "gave 404)",
                        deployment=self.name,
                        call="GET /api/v2/version",
                        status=404,
                        hint="check the deployment URL; with [api] base_url carrying a path, include that path",
                    )
                self.transport.api_version = "v1"
        return self.transport.api_version

    async def get_dag(self, dag_id: str) -> dict[str, Any]:
        api = await self.api_version()
        return (await self.transport.request("GET", common.dag_path(api, dag_id))).json()

    async def get_dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        api = await self.api_version()
        return (await self.transport.request("GET", common.dag_run_path(api, dag_id, run_id))).json()

    async def find_dag_runs(self, dag_id: str, **query: Any) -> list[dict[str, Any]]:
        """Runs of ``dag_id`` matching :func:`common.dag_runs_query` (``logical_date``, ``run_after_gte``)."""
        api = await self.api_version()
        path, params = common.dag_runs_query(api, dag_id, **query)
        return (await self.transport.request("GET", path, params=params)).json()["dag_runs"]

    async def get_task_instance(
        self, dag_id: str, run_id: str, task_id: str, map_index: int | None = None
    ) -> dict[str, Any]:
        api = await self.api_version()
        path = common.task_instance_path(api, dag_id, run_id, task_id, map_index)
        return (await self.transport.request("GET", path)).json()

    async def resolve_asset(self, uri: str) -> Asset:
        """The asset whose uri is exactly ``uri`` (see :meth:`DeploymentClient.resolve_asset`)."""
        if uri in self._asset_cache:
            return self._asset_cache[uri]
        api = await self.api_version()
        asset: Asset | None = None
        if api == "v2":
            offset = 0
            while asset is None:
                page = (
                    await self.transport.request(
                        "GET",
                        "/api/v2/assets",
                        params={"uri_pattern": uri, "limit": _PAGE, "offset": offset, "order_by": "id"},
                    )
                ).json()
                items = page.get("assets", [])
                asset = next(
                    (Asset(id=a["id"], uri=uri, name=a.get("name")) for a in items if a.get("uri") == uri),
                    None,
                )
                offset += len(items)
                if not items or offset >= page.get("total_entries", 0):
                    break
        else:
            r = await self.transport.request(
                "GET", f"/api/v1/datasets/{quote(uri, safe='')}", passthrough=(404,)
            )
            if r.status_code == 200:
                body = r.json()
                asset = Asset(id=body.get("id"), uri=body.get("uri", uri))
        if asset is None:
            raise NotFoundError(
                f"No asset with uri {uri!r} in the deployment",
                deployment=self.name,
                call="resolve asset",
                hint="an asset exists there only while a parsed DAG references it: check the uri",
            )
        self._asset_cache[uri] = asset
        return asset

    async def asset_events_since(
        self, uri: str, since: str | None, *, max_pages: int = 10
    ) -> list[dict[str, Any]]:
        """Events of ``uri`` at or after ``since`` (ISO time; None = all), oldest first, paged."""
        asset = await self.resolve_asset(uri)
        api = await self.api_version()
        key = "asset_events" if api == "v2" else "dataset_events"
        out: list[dict[str, Any]] = []
        for page in range(max_pages):
            path, params = common.asset_events_query(
                api, asset.id, since=since, limit=_PAGE, offset=page * _PAGE
            )
            body = (await self.transport.request("GET", path, params=params)).json()
            items = body.get(key, [])
            out.extend(items)
            if len(items) < _PAGE or len(out) >= body.get("total_entries", 0):
                break
        return out

    async def recent_asset_events(self, uri: str, *, limit: int = _PAGE) -> list[dict[str, Any]]:
        """The newest ``limit`` events of ``uri``, newest first."""
        asset = await self.resolve_asset(uri)
        api = await self.api_version()
        path, params = common.asset_events_query(api, asset.id, since=None, limit=limit, newest_first=True)
        body = (await self.transport.request("GET", path, params=params)).json()
        return body.get("asset_events" if api == "v2" else "dataset_events", [])

    async def aclose(self) -> None:
        await self.transport.aclose()

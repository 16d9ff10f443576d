"""The async (httpx) client: the same auth, errors, retries, Retry-After and scrubbing as the sync one."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from astro_xdeps.client import DeploymentConfig
from astro_xdeps.client.aio import AsyncDeploymentClient, AsyncTransport
from astro_xdeps.exceptions import AuthError, NotFoundError, RequestRejected, TransientError

BASE = "https://up.example"


class Server:
    """An httpx MockTransport that answers from a list of (method, path) -> response handlers."""

    def __init__(self) -> None:
        self.calls: list[httpx.Request] = []
        self.routes: dict[tuple[str, str], list[Callable[[httpx.Request], httpx.Response]]] = {}

    def add(self, method: str, path: str, *answers: Any) -> None:
        for answer in answers:
            handler = answer if callable(answer) else (lambda req, a=answer: a)
            self.routes.setdefault((method, path), []).append(handler)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        queue = self.routes.get((request.method, request.url.path))
        if not queue:
            raise AssertionError(f"unexpected {request.method} {request.url}")
        handler = queue.pop(0) if len(queue) > 1 else queue[0]
        return handler(request)


def resp(status: int, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    content = json.dumps(body).encode() if body is not None else b""
    return httpx.Response(status, content=content, headers=headers or {})


def make(server: Server, sleeps: list[float] | None = None, **cfg: Any) -> AsyncDeploymentClient:
    cfg.setdefault("token", "tok-secret-123")
    cfg.setdefault("api_version", "v2")
    config = DeploymentConfig(name="up", base_url=BASE, **cfg)

    async def sleep(seconds: float) -> None:
        (sleeps if sleeps is not None else []).append(seconds)

    transport = AsyncTransport(config, transport=httpx.MockTransport(server), sleep=sleep)
    return AsyncDeploymentClient(config, transport=transport)


def run(coro):
    return asyncio.run(coro)


async def _call(client: AsyncDeploymentClient, fn: str, *args: Any, **kw: Any) -> Any:
    try:
        return await getattr(client, fn)(*args, **kw)
    finally:
        await client.aclose()


def test_static_token_is_sent_as_bearer_with_timeouts_and_user_agent() -> None:
    server = Server()
    server.add("GET", "/api/v2/dags/d/dagRuns/r", resp(200, {"dag_run_id": "r", "state": "running"}))
    client = make(server)
    assert run(_call(client, "get_dag_run", "d", "r"))["state"] == "running"
    (req,) = server.calls
    assert req.headers["Authorization"] == "Bearer tok-secret-123"
    assert req.headers["User-Agent"].startswith("astro-xdeps/")
    assert req.extensions["timeout"] == {"connect": 5.0, "read": 30.0, "write": 30.0, "pool": 30.0}


def test_jwt_login_then_relogin_once_on_401() -> None:
    server = Server()
    tokens = iter(["jwt-1", "jwt-2"])
    server.add("POST", "/auth/token", lambda req: resp(201, {"access_token": next(tokens)}))
    server.add(
        "GET", "/api/v2/dags/d", resp(200, {"dag_id": "d"}), resp(401, {"detail": "expired"}), resp(200, {})
    )
    client = make(server, token=None, username="admin", password="pw-secret")

    async def two_calls():
        await client.get_dag("d")
        await client.get_dag("d")
        await client.aclose()

    run(two_calls())
    auths = [c.headers.get("Authorization") for c in server.calls if c.url.path == "/api/v2/dags/d"]
    assert auths == ["Bearer jwt-1", "Bearer jwt-1", "Bearer jwt-2"]
    assert json.loads(server.calls[0].content) == {"username": "admin", "password": "pw-secret"}


def test_failed_login_is_an_auth_error_that_never_echoes_the_password() -> None:
    server = Server()
    server.add("POST", "/auth/token", resp(401, {"detail": "bad pw-secret"}))
    client = make(server, token=None, username="admin", password="pw-secret")
    with pytest.raises(AuthError) as err:
        run(_call(client, "get_dag", "d"))
    assert "Logging in failed" in str(err.value) and "pw-secret" not in str(err.value)


def test_basic_auth_on_airflow_2() -> None:
    server = Server()
    server.add("GET", "/api/v1/dags/d", resp(200, {"dag_id": "d"}))
    client = make(server, token=None, username="admin", password="pw", api_version="v1")
    run(_call(client, "get_dag", "d"))
    assert server.calls[0].headers["Authorization"] == "Basic " + base64.b64encode(b"admin:pw").decode()


@pytest.mark.parametrize(
    ("status", "error"), [(401, AuthError), (403, AuthError), (404, NotFoundError), (422, RequestRejected)]
)
def test_4xx_maps_to_the_error_class_and_is_never_retried(status: int, error: type) -> None:
    server = Server()
    server.add("GET", "/api/v2/dags/d", resp(status, {"detail": "no"}))
    client = make(server)
    with pytest.raises(error) as err:
        run(_call(client, "get_dag", "d"))
    assert len(server.calls) == 1
    assert f"HTTP {status}" in str(err.value) and "GET /api/v2/dags/d on up" in str(err.value)


def test_error_bodies_are_scrubbed_of_the_token() -> None:
    server = Server()
    server.add("GET", "/api/v2/dags/d", resp(403, {"detail": "token tok-secret-123 not allowed"}))
    with pytest.raises(AuthError) as err:
        run(_call(make(server), "get_dag", "d"))
    assert "tok-secret-123" not in str(err.value) and "***" in str(err.value)


def test_5xx_is_retried_then_succeeds() -> None:
    server = Server()
    server.add("GET", "/api/v2/dags/d", resp(503), resp(500), resp(200, {"dag_id": "d"}))
    sleeps: list[float] = []
    assert run(_call(make(server, sleeps), "get_dag", "d")) == {"dag_id": "d"}
    assert len(server.calls) == 3 and len(sleeps) == 2


def test_5xx_that_persists_is_a_transient_error_after_retries_plus_one_attempts() -> None:
    server = Server()
    server.add("GET", "/api/v2/dags/d", resp(502))
    with pytest.raises(TransientError):
        run(_call(make(server, retries=2), "get_dag", "d"))
    assert len(server.calls) == 3


def test_retry_after_is_honoured() -> None:
    server = Server()
    server.add("GET", "/api/v2/dags/d", resp(429, headers={"Retry-After": "7"}), resp(200, {}))
    sleeps: list[float] = []
    run(_call(make(server, sleeps), "get_dag", "d"))
    assert sleeps == [pytest.approx(7.0, abs=1.0)] and sleeps[0] >= 7.0


@pytest.mark.parametrize(
    ("exc", "ambiguous"),
    [
        (httpx.ConnectError("refused"), False),
        (httpx.ConnectTimeout("slow"), False),
        (httpx.ReadTimeout("slow"), True),
    ],
)
def test_network_failures_and_timeouts_are_transient_and_retried(exc: Exception, ambiguous: bool) -> None:
    server = Server()

    def fail(request: httpx.Request) -> httpx.Response:
        raise exc

    server.add("GET", "/api/v2/dags/d", fail)
    with pytest.raises(TransientError) as err:
        run(_call(make(server, retries=1), "get_dag", "d"))
    assert err.value.ambiguous is ambiguous
    assert len(server.calls) == 2
    assert ("timed out" if "Timeout" in type(exc).__name__ else "could not be reached") in str(err.value)


def test_version_is_detected_v2_then_v1() -> None:
    server = Server()
    server.add("GET", "/api/v2/version", resp(404))
    server.add("GET", "/api/v1/version", resp(401))
    client = make(server, api_version="auto")
    assert run(_call(client, "api_version")) == "v1"


def test_find_dag_runs_by_logical_date_sends_the_exact_window() -> None:
    import datetime

    server = Server()
    server.add(
        "GET", "/api/v2/dags/d/dagRuns", resp(200, {"dag_runs": [{"dag_run_id": "r"}], "total_entries": 1})
    )
    when = datetime.datetime(2026, 1, 2, 3, 4, tzinfo=datetime.timezone.utc)
    runs = run(_call(make(server), "find_dag_runs", "d", logical_date=when))
    assert runs == [{"dag_run_id": "r"}]
    params = dict(server.calls[0].url.params)
    assert params["logical_date_gte"] == params["logical_date_lte"] == when.isoformat()


def test_mapped_task_instance_is_addressed_by_map_index() -> None:
    server = Server()
    server.add("GET", "/api/v2/dags/d/dagRuns/r/taskInstances/t/3", resp(200, {"state": "success"}))
    assert run(_call(make(server), "get_task_instance", "d", "r", "t", 3)) == {"state": "success"}


def test_asset_events_since_resolves_the_uri_exactly_and_pages() -> None:
    server = Server()
    server.add(
        "GET",
        "/api/v2/assets",
        resp(
            200, {"assets": [{"id": 1, "uri": "s3://a_b"}, {"id": 2, "uri": "s3://a/b"}], "total_entries": 2}
        ),
    )
    page1 = [{"id": i, "timestamp": f"2026-01-01T00:00:{i % 60:02d}+00:00"} for i in range(100)]
    server.add(
        "GET",
        "/api/v2/assets/events",
        resp(200, {"asset_events": page1, "total_entries": 101}),
        resp(
            200,
            {"asset_events": [{"id": 100, "timestamp": "2026-01-01T00:02:00+00:00"}], "total_entries": 101},
        ),
    )
    events = run(_call(make(server), "asset_events_since", "s3://a/b", "2026-01-01T00:00:00+00:00"))
    assert len(events) == 101
    first, second = (dict(c.url.params) for c in server.calls if c.url.path == "/api/v2/assets/events")
    assert first["asset_id"] == "2" and first["order_by"] == "timestamp"
    assert first["timestamp_gte"] == "2026-01-01T00:00:00+00:00" and second["offset"] == "100"


def test_unknown_asset_is_not_found_with_a_hint() -> None:
    server = Server()
    server.add("GET", "/api/v2/assets", resp(200, {"assets": [], "total_entries": 0}))
    with pytest.raises(NotFoundError, match="No asset with uri 's3://x'"):
        run(_call(make(server), "asset_events_since", "s3://x", None))

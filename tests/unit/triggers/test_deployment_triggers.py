"""The triggers, driven with httpx's MockTransport: what they wait out and what ends the wait."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from astro_xdeps.client import DeploymentConfig
from astro_xdeps.client.aio import AsyncDeploymentClient, AsyncTransport
from astro_xdeps.exceptions import AuthError, ConfigError
from astro_xdeps.forwarding import pull
from astro_xdeps.triggers import deployment as triggers
from astro_xdeps.triggers.deployment import DeploymentAssetEventTrigger, DeploymentDagRunTrigger
from astro_xdeps.version_compat import AIRFLOW_V_3_3_PLUS
from tests.unit.client.test_client_aio import Server, resp

needs_3_3 = pytest.mark.skipif(
    not AIRFLOW_V_3_3_PLUS, reason="the asset watcher needs Airflow 3.3+ (its asset state store)"
)

BASE = "https://up.example"
CONFIG = DeploymentConfig(name="xdeps_up", base_url=BASE, token="tok-secret-123", api_version="v2", retries=0)


@pytest.fixture(autouse=True)
def config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(triggers, "resolve_config", lambda conn_id: CONFIG)


def wire(trigger: Any, server: Server) -> Any:
    async def no_sleep(seconds: float) -> None:
        return None

    def client(config: DeploymentConfig) -> AsyncDeploymentClient:
        t = AsyncTransport(config, transport=httpx.MockTransport(server), sleep=no_sleep)
        return AsyncDeploymentClient(config, transport=t)

    trigger._client = client
    return trigger


async def first_event(trigger: Any, *, max_seconds: float = 5) -> dict:
    """Run the trigger until its first event (poll_interval is 0 in these tests)."""
    agen = trigger.run()
    try:
        event = await asyncio.wait_for(agen.__anext__(), max_seconds)
    finally:
        await agen.aclose()
    return event.payload


def dagrun_trigger(**kw: Any) -> DeploymentDagRunTrigger:
    kw.setdefault("dag_id", "d")
    kw.setdefault("run_id", "r")
    return DeploymentDagRunTrigger(xdeps_conn_id="xdeps_up", poll_interval=0, **kw)


def test_serialize_round_trips() -> None:
    trigger = dagrun_trigger(external_task_id="t", map_index=2, allowed_states=["success", "skipped"])
    classpath, kwargs = trigger.serialize()
    assert classpath == "astro_xdeps.triggers.deployment.DeploymentDagRunTrigger"
    assert DeploymentDagRunTrigger(**kwargs).serialize() == (classpath, kwargs)
    json.dumps(kwargs)


def test_success_after_waiting_through_running_and_a_5xx() -> None:
    server = Server()
    server.add(
        "GET",
        "/api/v2/dags/d/dagRuns/r",
        resp(200, {"dag_run_id": "r", "state": "running"}),
        resp(503),
        resp(200, {"dag_run_id": "r", "state": "success"}),
    )
    trigger = wire(dagrun_trigger(), server)
    event = asyncio.run(first_event(trigger))
    assert event["status"] == "success" and event["url"] == f"{BASE}/dags/d/runs/r"
    assert trigger.polls == 3


def test_failed_run_ends_the_wait_with_its_url() -> None:
    server = Server()
    server.add("GET", "/api/v2/dags/d/dagRuns/r", resp(200, {"dag_run_id": "r", "state": "failed"}))
    event = asyncio.run(first_event(wire(dagrun_trigger(), server)))
    assert event["status"] == "failed"
    assert f"{BASE}/dags/d/runs/r" in event["message"] and "is failed" in event["message"]


def test_connection_refused_is_waited_out() -> None:
    server = Server()
    answers = iter([httpx.ConnectError("refused"), httpx.ReadTimeout("slow")])

    def flaky(request: httpx.Request) -> httpx.Response:
        exc = next(answers, None)
        if exc:
            raise exc
        return resp(200, {"dag_run_id": "r", "state": "success"})

    server.add("GET", "/api/v2/dags/d/dagRuns/r", flaky)
    trigger = wire(dagrun_trigger(), server)
    assert asyncio.run(first_event(trigger))["status"] == "success"
    assert trigger.polls == 3


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_end_the_wait_at_once_without_the_token(status: int) -> None:
    server = Server()
    server.add("GET", "/api/v2/dags/d/dagRuns/r", resp(status, {"detail": "tok-secret-123 refused"}))
    trigger = wire(dagrun_trigger(), server)
    event = asyncio.run(first_event(trigger))
    assert event["status"] == "error" and f"HTTP {status}" in event["message"]
    assert "tok-secret-123" not in event["message"]
    assert trigger.polls == 1


def test_missing_run_of_an_existing_dag_is_waited_for() -> None:
    server = Server()
    server.add(
        "GET", "/api/v2/dags/d/dagRuns/r", resp(404), resp(200, {"dag_run_id": "r", "state": "success"})
    )
    server.add("GET", "/api/v2/dags/d", resp(200, {"dag_id": "d"}))
    assert asyncio.run(first_event(wire(dagrun_trigger(), server)))["status"] == "success"


def test_missing_dag_is_waited_out_then_fails_after_missing_dag_timeout() -> None:
    server = Server()
    server.add("GET", "/api/v2/dags/d/dagRuns/r", resp(404))
    server.add("GET", "/api/v2/dags/d", resp(404), resp(200, {"dag_id": "d"}), resp(404))
    # Present again in between: the deploy window resets; a missing DAG with timeout 0 fails.
    trigger = wire(dagrun_trigger(missing_dag_timeout=0), server)
    event = asyncio.run(first_event(trigger))
    assert event["status"] == "error" and "DAG d is missing in xdeps_up" in event["message"]


def test_missing_dag_within_the_window_keeps_waiting() -> None:
    server = Server()
    server.add(
        "GET",
        "/api/v2/dags/d/dagRuns/r",
        resp(404),
        resp(404),
        resp(200, {"dag_run_id": "r", "state": "success"}),
    )
    server.add("GET", "/api/v2/dags/d", resp(404))
    assert (
        asyncio.run(first_event(wire(dagrun_trigger(missing_dag_timeout=600), server)))["status"] == "success"
    )


def test_task_level_wait_reads_the_mapped_task_instance() -> None:
    server = Server()
    server.add("GET", "/api/v2/dags/d/dagRuns/r", resp(200, {"dag_run_id": "r", "state": "running"}))
    server.add(
        "GET",
        "/api/v2/dags/d/dagRuns/r/taskInstances/t/4",
        resp(404),
        resp(200, {"state": "running"}),
        resp(200, {"state": "upstream_failed"}),
    )
    trigger = wire(
        dagrun_trigger(external_task_id="t", map_index=4, failed_states=["failed", "upstream_failed"]), server
    )
    event = asyncio.run(first_event(trigger))
    assert event["status"] == "failed" and "task t[4] of DAG run d/r" in event["message"]


def test_run_by_logical_date_and_latest_after() -> None:
    server = Server()
    server.add(
        "GET",
        "/api/v2/dags/d/dagRuns",
        resp(200, {"dag_runs": []}),
        resp(200, {"dag_runs": [{"dag_run_id": "x", "state": "success"}]}),
    )
    trigger = wire(
        DeploymentDagRunTrigger(
            dag_id="d", xdeps_conn_id="c", logical_date="2026-01-02T00:00:00+00:00", poll_interval=0
        ),
        server,
    )
    assert asyncio.run(first_event(trigger))["run_id"] == "x"
    params = dict(server.calls[0].url.params)
    assert params["logical_date_gte"] == "2026-01-02T00:00:00+00:00"


def test_bad_connection_config_is_an_error_event(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(conn_id: str) -> DeploymentConfig:
        raise ConfigError("Connection 'nope' does not exist.")

    monkeypatch.setattr(triggers, "resolve_config", broken)
    event = asyncio.run(first_event(dagrun_trigger()))
    assert event == {"status": "error", "message": "Connection 'nope' does not exist."}


# -- the asset watcher ---------------------------------------------------------------------------
class Accessor:
    """Stands in for the asset state store accessor Airflow injects into watchers."""

    def __init__(self, data: dict | None = None) -> None:
        self.data = dict(data or {})
        self.writes: list[tuple[str, Any]] = []

    async def aget(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    async def aset(self, key: str, value: Any) -> None:
        self.writes.append((key, value))
        self.data[key] = value


def ev(i: int, second: int, **kw: Any) -> dict:
    return {
        "id": i,
        "uri": "s3://up/a",
        "timestamp": f"2026-01-01T00:00:{second:02d}+00:00",
        "extra": {"n": i},
        "source_dag_id": "prod",
        "source_task_id": "t",
        "source_run_id": f"run{i}",
        "source_map_index": -1,
        "partition_key": None,
        **kw,
    }


def watcher_server(*pages: list[dict], recent: list[dict] | None = None) -> Server:
    server = Server()
    server.add(
        "GET", "/api/v2/assets", resp(200, {"assets": [{"id": 9, "uri": "s3://up/a"}], "total_entries": 1})
    )

    def events(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("order_by") == "-timestamp":
            return resp(200, {"asset_events": recent or [], "total_entries": len(recent or [])})
        page = pages[min(events.n, len(pages) - 1)]
        events.n += 1
        return resp(200, {"asset_events": page, "total_entries": len(page)})

    events.n = 0
    server.add("GET", "/api/v2/assets/events", events)
    return server


async def take(trigger: DeploymentAssetEventTrigger, n: int, max_seconds: float = 5) -> list[dict]:
    agen = trigger.run()
    out = []
    try:
        while len(out) < n:
            out.append((await asyncio.wait_for(agen.__anext__(), max_seconds)).payload)
    finally:
        await agen.aclose()
    return out


def watcher(store: Accessor, **kw: Any) -> DeploymentAssetEventTrigger:
    t = DeploymentAssetEventTrigger(uri="s3://up/a", xdeps_conn_id="xdeps_up", poll_interval=0.001, **kw)
    t.asset_state_store = store
    return t


@needs_3_3
def test_watcher_starts_after_existing_events_and_emits_new_ones_with_provenance() -> None:
    store = Accessor()
    server = watcher_server([ev(1, 1)], [ev(1, 1), ev(2, 5), ev(3, 5)], recent=[ev(1, 1)])
    trigger = wire(watcher(store), server)
    payloads = asyncio.run(take(trigger, 2))
    assert [p["xdeps"]["source"]["event_id"] for p in payloads] == [2, 3]
    first = payloads[0]
    assert first["xdeps_event_id"] == f"pull:{BASE}:2"
    src = first["xdeps"]["source"]
    assert src["deployment"] == BASE and src["uri"] == "s3://up/a" and src["run_id"] == "run2"
    assert src["extra"] == {"n": 2} and src["dag_id"] == "prod" and "partition_key" in src
    assert first["n"] == 2  # the original extra stays readable at the top, as with push
    # The baseline was stored by the trigger; later watermarks travel with each event.
    key = pull.state_key("xdeps_up", "s3://up/a")
    assert store.writes == [
        (key, {"since": "2026-01-01T00:00:01+00:00", "seen": {"1": "2026-01-01T00:00:01+00:00"}})
    ]
    assert payloads[1][pull.PULL_KEY]["key"] == key
    assert set(payloads[1][pull.PULL_KEY]["watermark"]["seen"]) == {"1", "2", "3"}


@needs_3_3
def test_watcher_resumes_from_the_stored_watermark_without_repeats() -> None:
    key = pull.state_key("xdeps_up", "s3://up/a")
    mark = pull.Watermark().advance(ev(1, 1), 300).advance(ev(2, 5), 300)
    store = Accessor({key: mark.to_json()})
    server = watcher_server([ev(1, 1), ev(2, 5), ev(4, 5), ev(3, 9)])
    payloads = asyncio.run(take(wire(watcher(store), server), 2))
    assert [p["xdeps"]["source"]["event_id"] for p in payloads] == [4, 3]
    assert store.writes == []  # nothing written by the trigger: the listener stores watermarks
    # The query starts a look-back window before the watermark.
    q = next(dict(c.url.params) for c in server.calls if c.url.path.endswith("/events"))
    assert q["timestamp_gte"] == "2025-12-31T23:55:05+00:00"


@needs_3_3
def test_watcher_start_from_beginning_emits_history() -> None:
    store = Accessor()
    server = watcher_server([ev(1, 1), ev(2, 2)])
    payloads = asyncio.run(take(wire(watcher(store, start_from="beginning"), server), 2))
    assert [p["xdeps"]["source"]["event_id"] for p in payloads] == [1, 2]


@needs_3_3
def test_watcher_rides_out_5xx_and_raises_on_auth_errors() -> None:
    store = Accessor({pull.state_key("xdeps_up", "s3://up/a"): pull.Watermark().to_json()})
    server = Server()
    server.add(
        "GET", "/api/v2/assets", resp(200, {"assets": [{"id": 9, "uri": "s3://up/a"}], "total_entries": 1})
    )
    server.add(
        "GET", "/api/v2/assets/events", resp(500), resp(200, {"asset_events": [ev(1, 1)], "total_entries": 1})
    )
    assert asyncio.run(take(wire(watcher(store), server), 1))[0]["xdeps"]["source"]["event_id"] == 1
    server = Server()
    server.add("GET", "/api/v2/assets", resp(403, {"detail": "no"}))
    with pytest.raises(AuthError):
        asyncio.run(take(wire(watcher(store), server), 1))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"uri": ""}, "uri must be"),
        ({"uri": "s3://a", "poll_interval": 0}, "poll_interval must be"),
        ({"uri": "s3://a", "lookback": -1}, "lookback must be"),
        ({"uri": "s3://a", "start_from": "yesterday"}, "start_from must be"),
        ({"uri": "s3://a", "xdeps_conn_id": ""}, "xdeps_conn_id must"),
    ],
)
@needs_3_3
def test_watcher_bad_arguments_fail_when_the_dag_is_parsed(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DeploymentAssetEventTrigger(**kwargs)


@needs_3_3
def test_watcher_serialize_round_trips() -> None:
    t = DeploymentAssetEventTrigger(
        uri="s3://a", xdeps_conn_id="c", poll_interval=5, lookback=60, start_from="beginning"
    )
    classpath, kwargs = t.serialize()
    assert DeploymentAssetEventTrigger(**kwargs).serialize() == (classpath, kwargs)


def test_the_deferring_tasks_own_task_id_does_not_turn_a_run_wait_into_a_task_wait() -> None:
    # In the triggerer, BaseTrigger sets trigger.task_id to the *deferring* task's id.
    server = Server()
    server.add("GET", "/api/v2/dags/d/dagRuns/r", resp(200, {"dag_run_id": "r", "state": "success"}))
    trigger = wire(dagrun_trigger(), server)
    trigger.task_id = "wait_upstream"
    assert asyncio.run(first_event(trigger))["status"] == "success"
    assert [c.url.path for c in server.calls] == ["/api/v2/dags/d/dagRuns/r"]

"""The page's HTTP API on a real SQLite outbox, with roles standing in for Airflow's auth manager.

The real Airflow auth (login cookie, SimpleAuthManager roles) is proven against a real
api-server in tests/integration/test_ui_real_airflow.py; here, every endpoint's gate and the
permission rules per item kind.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import HTTPException
from starlette.exceptions import StarletteDeprecationWarning

from astro_xdeps.graph.sources import GraphInputs
from astro_xdeps.outbox import NewItem, Outbox
from astro_xdeps.relay.config import parse_config
from astro_xdeps.relay.journal import RelayJournal
from astro_xdeps.ui.app import UiRuntime, create_app

with warnings.catch_warnings():
    # Starlette asks for httpx2 instead of httpx: about the test tool, not this package.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

ROLES = {"viewer": set(), "user": {"dag_run"}, "op": {"asset_event", "dag_run"}}


class RoleAccess:
    """Users named by their bearer token; ``nobody`` is logged in but may not read."""

    async def user(self, request, credentials) -> Any:
        if credentials is None:
            raise HTTPException(401, "Not authenticated")
        if credentials.credentials not in (*ROLES, "nobody"):
            raise HTTPException(403, "Invalid JWT token")
        return credentials.credentials

    def can_read(self, user: Any) -> bool:
        return user in ROLES

    def can_retry(self, user: Any, kind: str) -> bool:
        return kind in ROLES.get(user, set())

    def name(self, user: Any) -> str:
        return user


def _as(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {user}"}


@pytest.fixture
def outbox(tmp_path) -> Iterator[Outbox]:
    ob = Outbox.sqlite(tmp_path / "outbox.db")
    yield ob
    ob.close()


@pytest.fixture
def client(outbox: Outbox) -> Iterator[TestClient]:
    config = parse_config(
        {
            "sources": [{"name": "alerts", "auth": "bearer", "secrets_env": ["SECRET_VAR"]}],
            "rules": [
                {
                    "name": "both",
                    "when_all": [
                        {"type": "dag_run.success", "dag_id": "a"},
                        {"type": "dag_run.success", "dag_id": "b"},
                    ],
                    "within": "1h",
                    "then": [{"trigger_dag": {"target": "down", "dag_id": "report"}}],
                }
            ],
        }
    )
    woken: list[int] = []
    rt = UiRuntime(
        outbox=outbox,
        deployment="up",
        relay_config=config,
        journal=RelayJournal(outbox.db),
        graph_inputs=lambda: GraphInputs(deployment="up", rules=config.rules),
        wake=lambda: woken.append(1),
    )
    app = create_app(lambda: rt, RoleAccess())
    with TestClient(app) as c:
        c.woken = woken  # type: ignore[attr-defined]
        yield c


def _dead(outbox: Outbox, kind: str = "asset_event", key: str = "k1") -> int:
    payload = (
        {"uri": "s3://a", "extra": {}, "event_id": key}
        if kind == "asset_event"
        else {"dag_id": "d", "dag_run_id": key}
    )
    item_id = outbox.enqueue([NewItem(kind, "down", payload, key)])[0].id
    outbox.claim("w", limit=10, lease_seconds=60)
    assert outbox.mark_dead(item_id, "w", "rejected by the target, not retried: bad — HTTP 400")
    return item_id


@pytest.mark.parametrize(
    "path", ["/", "/api/summary", "/api/items", "/api/items/1", "/api/relay", "/api/graph"]
)
def test_every_endpoint_needs_a_login_and_read_permission(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 401
    assert client.get(path, headers=_as("forged")).status_code == 403
    assert client.get(path, headers=_as("nobody")).status_code == 403
    assert client.post("/api/retry", json={"all_dead": True}).status_code == 401


def test_the_page_is_self_contained_html(client: TestClient) -> None:
    r = client.get("/", headers=_as("viewer"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "<script>" in r.text and "api/summary" in r.text
    # Nothing is loaded from anywhere: no external script, stylesheet, import or font.
    for needle in ("<script src", "<link", "@import", "url(http", "url(//", 'fetch("http', "fetch('http"):
        assert needle not in r.text, needle
    urls = {u for u in re.findall(r"https?://[^\s\"'<>)]+", r.text)}
    assert urls == {"http://www.w3.org/2000/svg"}  # the SVG namespace name, never fetched
    refused = client.get("/")
    assert refused.status_code == 401 and "Log in to Airflow first" in refused.text


def test_summary_and_items(client: TestClient, outbox: Outbox) -> None:
    item_id = _dead(outbox)
    s = client.get("/api/summary", headers=_as("viewer")).json()
    assert s["deployment"] == "up" and s["user"] == "viewer"
    assert s["can_retry"] == {"asset_event": False, "dag_run": False}
    assert s["targets"][0]["target"] == "down" and s["targets"][0]["dead"] == 1
    assert s["targets"][0]["last_error_plain"].startswith("not retried: downstream answered 400")
    items = client.get("/api/items", params={"state": "dead"}, headers=_as("viewer")).json()
    assert [i["id"] for i in items["items"]] == [item_id] and items["next_before"] is None
    assert client.get(f"/api/items/{item_id}", headers=_as("viewer")).json()["what"] == "asset event s3://a"
    assert client.get("/api/items/999", headers=_as("viewer")).status_code == 404
    bad = client.get("/api/items", params={"state": "gone"}, headers=_as("viewer"))
    assert bad.status_code == 400 and "unknown" in bad.json()["detail"]


def test_retry_needs_permission_for_the_kind_of_item(client: TestClient, outbox: Outbox) -> None:
    asset_item = _dead(outbox, "asset_event", "k1")
    run_item = _dead(outbox, "dag_run", "k2")
    refused = client.post("/api/retry", json={"ids": [asset_item]}, headers=_as("viewer"))
    assert refused.status_code == 403 and "create asset events" in refused.json()["detail"]
    assert client.post("/api/retry", json={"ids": [asset_item]}, headers=_as("user")).status_code == 403
    assert client.post("/api/retry", json={"all_dead": True}, headers=_as("user")).status_code == 403
    assert outbox.get(asset_item).state == "dead"
    assert client.post("/api/retry", json={"ids": [10**6]}, headers=_as("viewer")).status_code == 403

    ok = client.post("/api/retry", json={"ids": [run_item]}, headers=_as("user"))
    assert ok.json() == {"retried": 1} and outbox.get(run_item).state == "pending"
    assert client.post("/api/retry", json={"all_dead": True}, headers=_as("op")).json() == {"retried": 1}
    assert outbox.get(asset_item).state == "pending" and outbox.get(asset_item).attempts == 0
    assert client.woken == [1, 1]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("kwargs", "status", "words"),
    [
        ({"content": b'{"all_dead": true}', "headers": {"Content-Type": "text/plain"}}, 415, "as JSON"),
        ({"content": b"{", "headers": {"Content-Type": "application/json"}}, 400, "not valid JSON"),
        ({"json": {}}, 400, "Say what to retry"),
        ({"json": {"ids": ["1"]}}, 400, "integers"),
    ],
)
def test_retry_refuses_bad_bodies_with_a_reason(
    client: TestClient, kwargs: dict, status: int, words: str
) -> None:
    headers = {**_as("op"), **kwargs.pop("headers", {})}
    r = client.post("/api/retry", headers=headers, **kwargs)
    assert r.status_code == status and words in r.json()["detail"]


def test_relay_shows_sources_rules_and_what_each_event_did(client: TestClient, outbox: Outbox) -> None:
    from datetime import datetime, timezone

    from astro_xdeps.relay.engine import RelayEngine
    from astro_xdeps.state_events import StateEvent

    rt_config = parse_config(
        {
            "rules": [
                {
                    "name": "both",
                    "when_all": [
                        {"type": "dag_run.success", "dag_id": "a"},
                        {"type": "dag_run.success", "dag_id": "b"},
                    ],
                    "within": "1h",
                    "then": [{"trigger_dag": {"target": "down", "dag_id": "report"}}],
                }
            ]
        }
    )
    engine = RelayEngine(rt_config, outbox)
    engine.ingest(
        StateEvent(id="ev-a", type="dag_run.success", dag_id="a", occurred_at=datetime.now(timezone.utc))
    )
    r = client.get("/api/relay", headers=_as("viewer")).json()
    assert r["configured"] is True
    assert r["sources"] == [
        {
            "name": "alerts",
            "auth": "bearer",
            "deployment": None,
            "path": "/events/alerts",
            "secret_from": "SECRET_VAR",
        }
    ]
    assert r["rules"][0]["when"] == ["dag_run.success of a", "dag_run.success of b"]
    assert r["events"][0]["summary"] == "both waits for dag_run.success of b"


def test_graph_is_drawable(client: TestClient) -> None:
    r = client.get("/api/graph", headers=_as("viewer")).json()
    ids = {n["id"] for n in r["graph"]["nodes"]}
    assert "rule:both" in ids and "dag:down:report" in ids
    assert set(r["layout"]["boxes"]) == ids
    assert {e["health"] for e in r["graph"]["edges"]} == {"idle"}

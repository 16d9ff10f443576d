"""forwarding.plan.build_forwarding_plan: the forwarding switch, routes from settings; runtime's cache."""

from __future__ import annotations

import json

import pytest

from astro_xdeps import runtime
from astro_xdeps.exceptions import ConfigError
from astro_xdeps.forwarding.plan import build_forwarding_plan
from astro_xdeps.forwarding.routes import Route

P = "AIRFLOW__ASTRO_XDEPS__"
ROUTES = [{"name": "sales", "match": {"uri": "s3://sales/*"}, "targets": ["fin", "ml"]}]

pytestmark = pytest.mark.usefixtures("xdeps_env")


def test_auto_without_any_destination_is_off_and_says_why() -> None:
    plan = build_forwarding_plan()
    assert plan.enabled is False
    assert "no routes, no DEPLOYMENT_URL and no AIRFLOW_CONN_*" in plan.reason
    assert "forward_assets=true" in plan.reason
    assert plan.routes == (Route(name="default", targets=("xdeps_default",)),)


def test_auto_is_on_with_deployment_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOYMENT_URL", "https://downstream.example.com")
    plan = build_forwarding_plan()
    assert plan.enabled is True
    assert plan.reason == "every asset to xdeps_default"
    assert plan.routes == (Route(name="default", targets=("xdeps_default",)),)


def test_auto_ignores_an_empty_deployment_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOYMENT_URL", "")
    assert build_forwarding_plan().enabled is False


def test_auto_is_on_with_the_default_connection_as_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_XDEPS_DEFAULT", "http://downstream:8080")
    assert build_forwarding_plan().enabled is True


def test_auto_looks_for_the_configured_conn_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"{P}CONN_ID", "xdeps_prod")
    monkeypatch.setenv("AIRFLOW_CONN_XDEPS_DEFAULT", "http://downstream:8080")
    plan = build_forwarding_plan()
    assert plan.enabled is False  # the env var is for another connection
    assert plan.routes == (Route(name="default", targets=("xdeps_prod",)),)
    monkeypatch.setenv("AIRFLOW_CONN_XDEPS_PROD", "http://prod:8080")
    plan = build_forwarding_plan()
    assert plan.enabled is True
    assert plan.reason == "every asset to xdeps_prod"


def test_auto_is_on_with_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"{P}ROUTES", json.dumps(ROUTES))
    plan = build_forwarding_plan()
    assert plan.enabled is True
    assert plan.routes == (Route(name="sales", targets=("fin", "ml"), uri_glob="s3://sales/*"),)
    assert plan.reason == "1 route(s) to fin, ml"


def test_auto_is_on_with_a_routes_file_and_routes_add_up(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text("- name: hr\n  targets: people\n")
    monkeypatch.setenv(f"{P}ROUTES_FILE", str(path))
    plan = build_forwarding_plan()
    assert plan.enabled is True
    assert plan.routes == (Route(name="hr", targets=("people",)),)
    monkeypatch.setenv(f"{P}ROUTES", json.dumps(ROUTES))
    plan = build_forwarding_plan()
    assert [r.name for r in plan.routes] == ["sales", "hr"]
    assert plan.reason == "2 route(s) to fin, ml, people"


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes", " True "])
def test_true_forwards_without_env_hints(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(f"{P}FORWARD_ASSETS", value)
    plan = build_forwarding_plan()
    assert plan.enabled is True
    assert plan.reason == "every asset to xdeps_default"


@pytest.mark.parametrize("value", ["false", "False", "0", "no"])
def test_false_wins_over_deployment_url_and_routes(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(f"{P}FORWARD_ASSETS", value)
    monkeypatch.setenv("DEPLOYMENT_URL", "https://downstream.example.com")
    monkeypatch.setenv(f"{P}ROUTES", json.dumps(ROUTES))
    plan = build_forwarding_plan()
    assert plan.enabled is False
    assert plan.reason == "forward_assets is false"


@pytest.mark.parametrize("value", ["maybe", "on-ish", ""])
def test_invalid_forward_assets(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(f"{P}FORWARD_ASSETS", value)
    with pytest.raises(ConfigError) as info:
        build_forwarding_plan()
    assert str(info.value) == f"[astro_xdeps] forward_assets must be auto, true or false, got {value!r}."


def test_invalid_routes_name_the_option_route_and_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"{P}ROUTES", '[{"targets": ["a"]}, {"targets": []}]')
    with pytest.raises(ConfigError, match=r"^\[astro_xdeps\] routes\[1\]\.targets: "):
        build_forwarding_plan()


def test_missing_routes_file(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv(f"{P}ROUTES_FILE", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="cannot be read"):
        build_forwarding_plan()


def test_deployment_name_and_max_hops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"{P}MAX_HOPS", "3")
    plan = build_forwarding_plan()
    assert plan.deployment == "upstream-test"
    assert plan.max_hops == 3


def test_defaults_for_deployment_name_and_max_hops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(f"{P}DEPLOYMENT_NAME")
    monkeypatch.setenv("ASTRO_DEPLOYMENT_NAMESPACE", "cosmic-nebula-1234")
    plan = build_forwarding_plan()
    assert plan.deployment == "cosmic-nebula-1234"
    assert plan.max_hops == 1


def test_invalid_max_hops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"{P}MAX_HOPS", "many")
    with pytest.raises(ConfigError, match=r"max_hops must be an integer, got 'many'"):
        build_forwarding_plan()


def test_forwarding_plan_is_cached_until_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    first = runtime.forwarding_plan()
    assert first.enabled is False
    monkeypatch.setenv("DEPLOYMENT_URL", "https://downstream.example.com")
    assert runtime.forwarding_plan() is first
    runtime.reset()
    assert runtime.forwarding_plan().enabled is True


def test_get_outbox_opens_the_configured_url_once(tmp_path) -> None:
    outbox = runtime.get_outbox()
    assert outbox.url == f"sqlite:///{tmp_path / 'outbox.db'}"
    assert runtime.get_outbox() is outbox
    assert (tmp_path / "outbox.db").exists()


def test_ensure_worker_is_a_no_op_when_the_delivery_worker_is_off() -> None:
    assert runtime.ensure_worker() is None

"""``DeploymentHook``: Airflow connection fields (or DEPLOYMENT_URL/API_TOKEN) to a client config."""

from __future__ import annotations

import json
from typing import Any

import pytest
import responses
from responses import matchers

from astro_xdeps.client import DeploymentClient, Timeouts
from astro_xdeps.exceptions import ConfigError
from astro_xdeps.hooks.deployment import DeploymentHook, config_from_connection, config_from_env

pytestmark = pytest.mark.usefixtures("sleeps")  # retries back off instantly

TOKEN = "tok-SECRET-9f8e7d6c5b4a"
PASSWORD = "pw-SECRET-1a2b3c4d"
ASTRO = "https://clmkpsyfc010391acjie00t1l.astronomer.run/d5lc9c9x"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No connection or fallback variable leaks in from the developer's shell."""
    for name in ("AIRFLOW_CONN_XDEPS_DEFAULT", "AIRFLOW_CONN_TARGET", "DEPLOYMENT_URL", "API_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def set_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: Any) -> None:
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "xdeps_deployment", **fields})
    )


# -- config_from_connection: URL fields ---------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "base_url"),
    [
        ({"host": "airflow.example.com"}, "https://airflow.example.com"),
        ({"host": "localhost"}, "http://localhost"),
        ({"host": "localhost", "port": 8080}, "http://localhost:8080"),
        ({"host": "localhost", "schema": "https", "port": 8443}, "https://localhost:8443"),
        ({"host": "airflow.example.com", "schema": "http"}, "http://airflow.example.com"),
        ({"host": "airflow.example.com", "schema": "public"}, "https://airflow.example.com"),
        ({"host": "https://airflow.example.com", "schema": "http"}, "https://airflow.example.com"),
        ({"host": "https://airflow.example.com/api/v2/"}, "https://airflow.example.com"),
        ({"host": "http://localhost:8080/api/v1"}, "http://localhost:8080"),
        ({"host": ASTRO}, ASTRO),
        ({"host": ASTRO + "/home"}, ASTRO),
        ({"host": ASTRO.removeprefix("https://") + "/"}, ASTRO),
    ],
)
def test_connection_url_fields_become_the_base_url(fields: dict, base_url: str) -> None:
    assert config_from_connection("target", **fields).base_url == base_url


@pytest.mark.parametrize("host", [None, ""])
def test_connection_without_host_is_a_config_error(host: str | None) -> None:
    with pytest.raises(ConfigError, match="'target' has no Host"):
        config_from_connection("target", host=host)


def test_connection_with_credentials_in_the_host_is_rejected() -> None:
    with pytest.raises(ConfigError, match="credentials") as info:
        config_from_connection("target", host=f"https://admin:{PASSWORD}@airflow.example.com")
    assert PASSWORD not in str(info.value)


def test_connection_with_a_non_http_host_is_rejected() -> None:
    with pytest.raises(ConfigError, match="scheme 'ftp'"):
        config_from_connection("target", host="ftp://airflow.example.com")


# -- config_from_connection: credentials ------------------------------------------------------


def test_password_without_login_is_a_static_token() -> None:
    config = config_from_connection("target", host=ASTRO, password=TOKEN)
    assert (config.token, config.username, config.password) == (TOKEN, None, None)


def test_login_and_password_are_kept_for_jwt_or_basic() -> None:
    config = config_from_connection("target", host="localhost:8080", login="admin", password=PASSWORD)
    assert (config.token, config.username, config.password) == (None, "admin", PASSWORD)


def test_auth_type_token_uses_the_password_as_token_even_with_a_login() -> None:
    config = config_from_connection(
        "target", host=ASTRO, login="admin", password=TOKEN, extra={"auth_type": "token"}
    )
    assert (config.token, config.password, config.auth_type) == (TOKEN, None, "token")


def test_empty_login_and_password_mean_none() -> None:
    config = config_from_connection("target", host="localhost:8080", login="", password="")
    assert (config.token, config.username, config.password) == (None, None, None)


@pytest.mark.parametrize("auth_type", ["jwt", "basic"])
def test_jwt_or_basic_without_a_login_is_a_config_error(auth_type: str) -> None:
    with pytest.raises(ConfigError, match="needs a login and a password"):
        config_from_connection("target", host="localhost", password=PASSWORD, extra={"auth_type": auth_type})


# -- config_from_connection: extras ------------------------------------------------------------


def test_connection_extras_set_every_option() -> None:
    extra = {
        "api_version": "v1",
        "auth_type": "basic",
        "timeout": "12",
        "connect_timeout": 2,
        "retries": "5",
        "verify": "false",
    }
    config = config_from_connection("target", host="localhost", login="admin", password=PASSWORD, extra=extra)
    assert (config.api_version, config.auth_type, config.retries, config.verify) == ("v1", "basic", 5, False)
    assert config.timeouts == Timeouts(connect=2.0, read=12.0)


def test_defaults_when_there_are_no_extras() -> None:
    config = config_from_connection("target", host="localhost")
    assert (config.api_version, config.auth_type, config.retries, config.verify) == ("auto", "auto", 3, True)
    assert config.timeouts == Timeouts(connect=5.0, read=30.0)


@pytest.mark.parametrize(
    ("value", "verify"),
    [
        (True, True),
        (False, False),
        ("true", True),
        ("False", False),
        ("0", False),
        ("/etc/ca.pem", "/etc/ca.pem"),
    ],
)
def test_verify_extra_is_a_bool_or_a_ca_bundle_path(value: Any, verify: bool | str) -> None:
    assert config_from_connection("target", host="localhost", extra={"verify": value}).verify == verify


def test_hook_arguments_win_over_connection_extras() -> None:
    config = config_from_connection(
        "target", host="localhost", extra={"retries": 5, "timeout": 60}, retries=1, timeout=3
    )
    assert (config.retries, config.timeouts.read) == (1, 3.0)


def test_unknown_extras_are_a_config_error_listing_them_and_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown extra field\\(s\\) headers, tiemout") as info:
        config_from_connection("target", host="localhost", extra={"tiemout": 5, "headers": {}, "retries": 1})
    assert "known: api_version, auth_type, connect_timeout, retries, timeout, verify" in str(info.value)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"timeout": "soon"}, "must be numbers"),
        ({"retries": "many"}, "must be numbers"),
        ({"connect_timeout": None}, "must be numbers"),
        ({"timeout": 0}, "must be positive"),
        ({"connect_timeout": -1}, "must be positive"),
        ({"retries": -2}, "retries must be >= 0"),
        ({"api_version": "3"}, "api_version '3'"),
        ({"auth_type": "bearer"}, "auth_type 'bearer'"),
    ],
)
def test_invalid_extras_are_a_config_error(extra: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_connection("target", host="localhost", extra=extra)


# -- config_from_env ----------------------------------------------------------------------------


def test_env_fallback_reads_url_and_token() -> None:
    config = config_from_env("xdeps_default", {"DEPLOYMENT_URL": f" {ASTRO}/ ", "API_TOKEN": f"{TOKEN}\n"})
    assert (config.name, config.base_url, config.token) == ("xdeps_default", ASTRO, TOKEN)


def test_env_fallback_without_token_sends_no_credentials() -> None:
    config = config_from_env("xdeps_default", {"DEPLOYMENT_URL": "localhost:8080", "API_TOKEN": " "})
    assert (config.token, config.password) == (None, None)


@pytest.mark.parametrize("environ", [{}, {"DEPLOYMENT_URL": "  ", "API_TOKEN": TOKEN}])
def test_env_fallback_without_url_names_every_way_to_configure(environ: dict) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_env("xdeps_default", environ)
    text = str(info.value)
    assert "DEPLOYMENT_URL" in text
    assert "API_TOKEN" in text
    assert "AIRFLOW_CONN_XDEPS_DEFAULT" in text
    assert TOKEN not in text


# -- DeploymentHook: where the config comes from ---------------------------------------------------


def test_hook_identity_matches_the_provider_conventions() -> None:
    assert (DeploymentHook.conn_name_attr, DeploymentHook.default_conn_name, DeploymentHook.conn_type) == (
        "xdeps_conn_id",
        "xdeps_default",
        "xdeps_deployment",
    )


def test_missing_default_connection_falls_back_to_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOYMENT_URL", ASTRO)
    monkeypatch.setenv("API_TOKEN", TOKEN)
    config = DeploymentHook().get_config()
    assert (config.name, config.base_url, config.token) == ("xdeps_default", ASTRO, TOKEN)


def test_env_fallback_honours_hook_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOYMENT_URL", ASTRO)
    config = DeploymentHook(retries=0, timeout=4).get_config()
    assert (config.retries, config.timeouts.read) == (0, 4.0)


def test_missing_default_connection_and_env_is_a_config_error_naming_deployment_url() -> None:
    with pytest.raises(ConfigError, match="DEPLOYMENT_URL"):
        DeploymentHook().get_config()


def test_missing_named_connection_is_a_config_error_even_with_env_vars(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DEPLOYMENT_URL", ASTRO)
    monkeypatch.setenv("API_TOKEN", TOKEN)
    with pytest.raises(ConfigError, match="Connection 'target' does not exist") as info:
        DeploymentHook("target").get_config()
    assert "AIRFLOW_CONN_TARGET" in str(info.value)


def test_default_connection_from_an_airflow_conn_json_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(
        monkeypatch,
        "xdeps_default",
        host="localhost",
        port=8080,
        login="admin",
        password=PASSWORD,
        extra={"api_version": "v2", "retries": 1},
    )
    config = DeploymentHook().get_config()
    assert (config.base_url, config.username, config.password) == ("http://localhost:8080", "admin", PASSWORD)
    assert (config.api_version, config.retries, config.token) == ("v2", 1, None)


def test_existing_default_connection_wins_over_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, "xdeps_default", host=ASTRO, password=TOKEN)
    monkeypatch.setenv("DEPLOYMENT_URL", "https://other.example.com")
    assert DeploymentHook().get_config().base_url == ASTRO


def test_named_connection_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, "target", host=ASTRO + "/api/v2", password=TOKEN, extra={"timeout": 9})
    config = DeploymentHook("target").get_config()
    assert (config.name, config.base_url, config.token, config.timeouts.read) == ("target", ASTRO, TOKEN, 9.0)


def test_connection_schema_field_sets_the_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, "target", host="airflow.internal", schema="http", port=8080)
    assert DeploymentHook("target").get_config().base_url == "http://airflow.internal:8080"


def test_connection_with_unknown_extras_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, "target", host=ASTRO, password=TOKEN, extra={"endpoint": "/api"})
    with pytest.raises(ConfigError, match="unknown extra field\\(s\\) endpoint"):
        DeploymentHook("target").get_config()


def test_hook_arguments_win_over_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, "target", host=ASTRO, password=TOKEN, extra={"retries": 7, "timeout": 60})
    config = DeploymentHook("target", retries=1, timeout=2).get_config()
    assert (config.retries, config.timeouts.read) == (1, 2.0)


def test_get_conn_builds_one_client_per_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, "target", host=ASTRO, password=TOKEN)
    hook = DeploymentHook("target")
    client = hook.get_conn()
    assert isinstance(client, DeploymentClient)
    assert hook.get_conn() is client
    assert client.config.base_url == ASTRO


# -- DeploymentHook.test_connection ---------------------------------------------------------------


def test_test_connection_reports_version_and_url(
    monkeypatch: pytest.MonkeyPatch, rsps: responses.RequestsMock
) -> None:
    set_connection(monkeypatch, "target", host=ASTRO, password=TOKEN)
    rsps.get(f"{ASTRO}/api/v2/version", json={"version": "3.3.2"})
    rsps.get(
        f"{ASTRO}/api/v2/dags",
        json={"dags": []},
        match=[matchers.header_matcher({"Authorization": f"Bearer {TOKEN}"})],
    )
    assert DeploymentHook("target").test_connection() == (True, f"Connected to Airflow 3.3.2 (v2) at {ASTRO}")


def test_test_connection_reports_refused_credentials_without_the_token(
    monkeypatch: pytest.MonkeyPatch, rsps: responses.RequestsMock
) -> None:
    set_connection(monkeypatch, "target", host=ASTRO, password=TOKEN)
    rsps.get(f"{ASTRO}/api/v2/version", json={"version": "3.3.2"})
    rsps.get(f"{ASTRO}/api/v2/dags", status=401, body=f"bad token {TOKEN}")
    ok, message = DeploymentHook("target").test_connection()
    assert ok is False
    assert "HTTP 401" in message
    assert TOKEN not in message


def test_test_connection_reports_a_config_error() -> None:
    ok, message = DeploymentHook("target").test_connection()
    assert ok is False
    assert "does not exist" in message

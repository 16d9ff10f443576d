"""URLs as users paste them, and the validation of a deployment's config."""

from __future__ import annotations

import pytest

from astro_xdeps.client import DeploymentConfig, Timeouts, normalize_base_url
from astro_xdeps.exceptions import ConfigError

ASTRO = "https://clmkpsyfc010391acjie00t1l.astronomer.run/d5lc9c9x"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://airflow.example.com", "https://airflow.example.com"),
        ("airflow.example.com", "https://airflow.example.com"),
        ("airflow.example.com:8443", "https://airflow.example.com:8443"),
        ("localhost:8080", "http://localhost:8080"),
        ("127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("LOCALHOST:8080", "http://LOCALHOST:8080"),
        ("[::1]:8080", "http://[::1]:8080"),
        ("[2001:db8::1]:8080", "https://[2001:db8::1]:8080"),
        ("http://localhost:8080/", "http://localhost:8080"),
        ("https://airflow.example.com///", "https://airflow.example.com"),
        ("  https://airflow.example.com  ", "https://airflow.example.com"),
        ("http://localhost:8080/api/v1", "http://localhost:8080"),
        ("http://localhost:8080/api/v2", "http://localhost:8080"),
        ("http://localhost:8080/api/v2/", "http://localhost:8080"),
        ("http://localhost:8080/api/v2/assets/events", "http://localhost:8080"),
        ("http://localhost:8080/api/v1/ui/", "http://localhost:8080"),
        ("http://localhost:8080/home", "http://localhost:8080"),
        ("http://localhost:8080/dags/my_dag/grid", "http://localhost:8080"),
        (ASTRO, ASTRO),
        (ASTRO + "/", ASTRO),
        (ASTRO + "/home", ASTRO),
        (ASTRO + "/api/v2", ASTRO),
        (ASTRO.removeprefix("https://"), ASTRO),
        ("https://airflow.example.com/team-a/api/v2/dags", "https://airflow.example.com/team-a"),
        ("https://airflow.example.com/?tab=1#x", "https://airflow.example.com"),
    ],
)
def test_normalize_base_url_understands_pasted_urls(raw: str, expected: str) -> None:
    assert normalize_base_url(raw) == expected


def test_explicit_scheme_wins_over_the_loopback_default() -> None:
    assert normalize_base_url("localhost:8080", scheme="https") == "https://localhost:8080"
    assert normalize_base_url("airflow.example.com", scheme="http") == "http://airflow.example.com"


def test_explicit_scheme_does_not_override_one_in_the_url() -> None:
    assert normalize_base_url("https://airflow.example.com", scheme="http") == "https://airflow.example.com"


def test_port_is_added_when_the_url_has_none() -> None:
    assert normalize_base_url("airflow.example.com", port=8443) == "https://airflow.example.com:8443"


def test_port_in_the_url_wins_over_the_port_argument() -> None:
    assert normalize_base_url("localhost:8080", port=9999) == "http://localhost:8080"


def test_port_goes_before_the_path() -> None:
    assert normalize_base_url("https://airflow.example.com/team-a", port=8443) == (
        "https://airflow.example.com:8443/team-a"
    )


@pytest.mark.parametrize("raw", ["", "   ", None])
def test_empty_url_is_a_config_error_naming_the_setting(raw: str | None) -> None:
    with pytest.raises(ConfigError, match="DEPLOYMENT_URL"):
        normalize_base_url(raw)  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", ["ftp://airflow.example.com", "file:///etc/passwd", "ws://localhost:8080"])
def test_non_http_scheme_is_rejected(raw: str) -> None:
    with pytest.raises(ConfigError, match="http:// or https://"):
        normalize_base_url(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "https://admin:hunter2-secret@airflow.example.com",
        "https://tokenonly@airflow.example.com",
        "admin:hunter2-secret@airflow.example.com",
    ],
)
def test_credentials_in_the_url_are_rejected_without_echoing_them(raw: str) -> None:
    with pytest.raises(ConfigError, match="credentials") as info:
        normalize_base_url(raw)
    assert "hunter2-secret" not in str(info.value)
    assert "tokenonly" not in str(info.value)


@pytest.mark.parametrize(
    "raw",
    [
        "ftp://admin:hunter2-secret@airflow.example.com",
        "https://admin:hunter2-secret@",
        "https://admin:hunter2-secret@[::1",
        "https://admin:hunter2-secret@airflow.example.com:99999",
        "https://admin:hunter2-secret@airflow.example.com:notaport",
        "HTTPS://admin:hunter2-secret@airflow.example.com/path",
    ],
)
def test_no_error_about_a_url_echoes_its_credentials(raw: str) -> None:
    """Regression (issue 9, defect 9): the scheme and host checks echoed the raw URL."""
    with pytest.raises(ConfigError) as info:
        normalize_base_url(raw, port=8080)
    assert "hunter2-secret" not in str(info.value)
    assert "***@" in str(info.value)


@pytest.mark.parametrize("raw", ["https://airflow.example.com:99999", "https://[::1"])
def test_malformed_url_is_a_config_error_not_a_value_error(raw: str) -> None:
    with pytest.raises(ConfigError, match="not a valid URL"):
        normalize_base_url(raw)


def test_url_without_host_is_rejected() -> None:
    with pytest.raises(ConfigError, match="no host"):
        normalize_base_url("https:///api/v2")


# -- DeploymentConfig ---------------------------------------------------------------------------


def test_config_defaults_are_auto_detection_and_bounded_timeouts() -> None:
    config = DeploymentConfig(name="target", base_url="https://x.example.com")
    assert (config.api_version, config.auth_type, config.retries) == ("auto", "auto", 3)
    assert config.timeouts.as_requests() == (5.0, 30.0)


def test_timeouts_are_passed_to_requests_as_connect_read_pair() -> None:
    assert Timeouts(connect=1.5, read=7).as_requests() == (1.5, 7)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"api_version": "v3"}, "api_version 'v3'"),
        ({"auth_type": "oauth"}, "auth_type 'oauth'"),
        ({"auth_type": "jwt", "username": "admin"}, "needs a login and a password"),
        ({"auth_type": "basic", "password": "pw-secret"}, "needs a login and a password"),
        ({"auth_type": "token"}, "needs a token"),
        ({"retries": -1}, "retries must be >= 0"),
    ],
)
def test_invalid_config_is_rejected_with_a_message_naming_the_field(fields: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DeploymentConfig(name="target", base_url="https://x.example.com", **fields)


def test_secrets_lists_token_and_password() -> None:
    config = DeploymentConfig(name="t", base_url="https://x.example.com", token="tok-abc-123")
    assert set(config.secrets) == {"tok-abc-123"}


def test_secrets_include_the_basic_auth_credential() -> None:
    """Regression (issue 9, defect 8): base64 of login:password is as secret as the password."""
    config = DeploymentConfig(name="t", base_url="https://x.example.com", username="u", password="pw-xyz-789")
    assert set(config.secrets) == {"pw-xyz-789", "dTpwdy14eXotNzg5"}


def test_repr_of_config_hides_token_and_password() -> None:
    config = DeploymentConfig(
        name="t",
        base_url="https://x.example.com",
        token="tok-abc-123",
        username="admin",
        password="pw-xyz-789",
    )
    text = repr(config)
    assert "tok-abc-123" not in text
    assert "pw-xyz-789" not in text
    assert "admin" in text  # the login is not a secret and helps debugging

"""A token or password never shows in a repr, an error message or a log line, even when a server echoes it."""

from __future__ import annotations

import base64
import logging

import pytest
import requests
import responses

from astro_xdeps.exceptions import AuthError, DeploymentError, TransientError
from tests.unit.client.target import BASE, PASSWORD, TOKEN, client_for

pytestmark = pytest.mark.usefixtures("sleeps")  # retries back off instantly

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJl"
DAGS = f"{BASE}/api/v2/dags"
SECRETS = (TOKEN, PASSWORD, JWT)


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def test_repr_of_client_and_its_config_hides_secrets() -> None:
    client = client_for(username="admin", password=PASSWORD)
    assert_no_secret(repr(client))
    assert_no_secret(repr(client.config))
    assert BASE in repr(client)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 500])
def test_error_body_echoing_the_token_is_scrubbed(rsps: responses.RequestsMock, status: int) -> None:
    rsps.get(DAGS, status=status, body=f'{{"detail": "bad header Authorization: Bearer {TOKEN}"}}')
    with pytest.raises(DeploymentError) as info:
        client_for(retries=0).check_auth()
    assert_no_secret(str(info.value))
    assert_no_secret(info.value.body)
    assert "Bearer ***" in str(info.value)  # the rest of the body is still there to help


@pytest.mark.parametrize("status", [400, 422, 500])
def test_error_body_echoing_the_basic_auth_header_is_scrubbed(
    rsps: responses.RequestsMock, status: int
) -> None:
    """Regression (issue 9, defect 8): ``Basic <base64 of login:password>`` in a downstream's answer."""
    credential = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    rsps.get(DAGS, status=status, body=f'{{"detail": "bad header Authorization: Basic {credential}"}}')
    client = client_for(token=None, username="admin", password=PASSWORD, auth_type="basic", retries=0)
    with pytest.raises(DeploymentError) as info:
        client.check_auth()
    assert credential not in str(info.value)
    assert credential not in info.value.body
    assert "Basic ***" in str(info.value)


def test_error_body_echoing_the_jwt_is_scrubbed(rsps: responses.RequestsMock) -> None:
    rsps.post(f"{BASE}/auth/token", status=201, json={"access_token": JWT})
    rsps.get(DAGS, status=403, body=f"token {JWT} has no permission")
    with pytest.raises(AuthError) as info:
        client_for(token=None, username="admin", password=PASSWORD).check_auth()
    assert_no_secret(str(info.value))


def test_error_body_echoing_the_password_is_scrubbed(rsps: responses.RequestsMock) -> None:
    rsps.get(f"{BASE}/api/v1/dags", status=400, body=f"basic auth admin:{PASSWORD} rejected")
    with pytest.raises(DeploymentError) as info:
        client_for(token=None, username="admin", password=PASSWORD, api_version="v1").check_auth()
    assert_no_secret(str(info.value))


def test_retry_log_lines_never_contain_the_token(
    rsps: responses.RequestsMock, caplog: pytest.LogCaptureFixture
) -> None:
    rsps.get(DAGS, status=503, body=f"upstream said: Bearer {TOKEN}")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(TransientError) as info:
        client_for(retries=2).check_auth()
    retry_lines = [r.getMessage() for r in caplog.records if "Retrying" in r.getMessage()]
    assert len(retry_lines) == 2
    assert_no_secret(caplog.text)
    assert_no_secret(str(info.value))


def test_relogin_log_lines_never_contain_the_password_or_jwt(
    rsps: responses.RequestsMock, caplog: pytest.LogCaptureFixture
) -> None:
    rsps.post(f"{BASE}/auth/token", status=201, json={"access_token": JWT})
    rsps.get(DAGS, status=401, body=f"expired: {JWT}")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthError) as info:
        client_for(token=None, username="admin", password=PASSWORD).check_auth()
    assert "logging in again" in caplog.text
    assert_no_secret(caplog.text)
    assert_no_secret(str(info.value))


def test_unreachable_deployment_error_does_not_leak_the_token(rsps: responses.RequestsMock) -> None:
    rsps.get(DAGS, body=requests.ConnectionError(f"refused (headers: Bearer {TOKEN})"))
    with pytest.raises(TransientError) as info:
        client_for(retries=0).check_auth()
    assert_no_secret(str(info.value))

"""The HTTP edge: error classification, the retry policy, and every auth mode on the wire."""

from __future__ import annotations

import base64
import email.utils
from typing import Any

import pytest
import requests
import responses
from responses import matchers

import astro_xdeps
from astro_xdeps.client import DeploymentConfig, Timeouts
from astro_xdeps.client.http import Transport, error_for_response, parse_retry_after, scrub
from astro_xdeps.exceptions import (
    AuthError,
    DeploymentError,
    NotFoundError,
    RequestRejected,
    TransientError,
)
from tests.unit.client.target import BASE, PASSWORD, TOKEN, config_for, transport_for

pytestmark = pytest.mark.usefixtures("sleeps")  # retries back off instantly

DAGS = f"{BASE}/api/v2/dags"
LOGIN = f"{BASE}/auth/token"
LOGIN_BODY = matchers.json_params_matcher({"username": "admin", "password": PASSWORD})


def jwt_transport(**overrides: Any) -> Transport:
    return transport_for(token=None, username="admin", password=PASSWORD, **overrides)


def fake_response(status: int, body: str = "", headers: dict[str, str] | None = None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body.encode()
    response.headers.update(headers or {})
    return response


# -- error classification -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, RequestRejected),
        (401, AuthError),
        (403, AuthError),
        (404, NotFoundError),
        (405, RequestRejected),
        (409, RequestRejected),
        (422, RequestRejected),
        (429, TransientError),
        (500, TransientError),
        (502, TransientError),
        (503, TransientError),
        (504, TransientError),
    ],
)
def test_status_maps_to_the_error_class_that_says_what_to_do(status: int, error_class: type) -> None:
    err = error_for_response(fake_response(status), deployment="target", call="GET /api/v2/dags")
    assert type(err) is error_class
    assert err.status == status


@pytest.mark.parametrize(
    ("status", "ambiguous"), [(429, False), (502, True), (503, True), (500, True), (504, True)]
)
def test_transient_status_is_ambiguous_only_when_the_server_may_have_acted(
    status: int, ambiguous: bool
) -> None:
    err = error_for_response(fake_response(status), deployment="target", call="POST /api/v2/assets/events")
    assert isinstance(err, TransientError)
    assert err.ambiguous is ambiguous


def test_error_message_names_deployment_call_status_body_and_hint() -> None:
    err = error_for_response(
        fake_response(403, '{"detail": "Forbidden"}'), deployment="target", call="GET /x"
    )
    text = str(err)
    assert "[GET /x on target]" in text
    assert "HTTP 403" in text
    assert 'body: {"detail": "Forbidden"}' in text
    assert "Try: use a token with permission" in text


def test_error_body_is_cut_short_and_flattened_to_one_line() -> None:
    err = error_for_response(fake_response(500, "line1\nline2" + "x" * 1000), deployment="t", call="GET /x")
    assert err.body.startswith("line1 line2")
    assert len(err.body) == 300
    assert "\n" not in str(err)


def test_error_body_is_scrubbed_of_the_callers_secrets() -> None:
    body = f"invalid header: Bearer {TOKEN}"
    err = error_for_response(fake_response(401, body), deployment="t", call="GET /x", secrets=(TOKEN,))
    assert TOKEN not in str(err)
    assert "Bearer ***" in err.body


def test_deployment_error_without_call_or_deployment_has_no_empty_brackets() -> None:
    assert str(DeploymentError("boom")) == "boom"
    assert str(DeploymentError("boom", deployment="target")) == "boom — [target]"
    assert str(DeploymentError("boom", call="GET /x")) == "boom — [GET /x]"


def test_scrub_replaces_every_occurrence_and_ignores_too_short_values() -> None:
    assert scrub("a SECRET b SECRET", ["SECRET"]) == "a *** b ***"
    assert scrub("abc", ["", "ab"]) == "abc"  # a 2-char "secret" would shred ordinary text


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        ("0.5", 0.5),
        (" 3 ", 3.0),
        ("-5", 0.0),
        ("3600", 120.0),
        (None, None),
        ("", None),
        ("soon", None),
    ],
)
def test_parse_retry_after_delta_seconds(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_parse_retry_after_http_date_is_relative_to_now() -> None:
    now = 1_700_000_000.0
    header = email.utils.formatdate(now + 42, usegmt=True)
    assert parse_retry_after(header, now=now) == pytest.approx(42.0)


def test_retry_after_from_a_429_is_kept_on_the_error() -> None:
    err = error_for_response(fake_response(429, headers={"Retry-After": "9"}), deployment="t", call="GET /x")
    assert isinstance(err, TransientError)
    assert err.retry_after == 9.0


# -- transport failures ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raised", "ambiguous", "wording"),
    [
        (
            requests.ConnectionError("Failed to establish a new connection: Connection refused"),
            False,
            "reached",
        ),
        (requests.ConnectTimeout("connect timed out"), False, "timed out"),
        (requests.ReadTimeout("read timed out"), True, "timed out"),
        (requests.ConnectionError("('Connection aborted.', RemoteDisconnected())"), True, "reached"),
    ],
)
def test_network_failure_is_transient_and_ambiguous_only_if_the_request_went_out(
    rsps: responses.RequestsMock, raised: Exception, ambiguous: bool, wording: str
) -> None:
    rsps.get(DAGS, body=raised)
    with pytest.raises(TransientError) as info:
        transport_for().request("GET", "/api/v2/dags", retry="none")
    assert info.value.ambiguous is ambiguous
    assert wording in str(info.value)
    assert BASE in str(info.value)  # the hint says what to check
    assert info.value.__cause__ is raised


# -- retry policy -------------------------------------------------------------------------------


@pytest.mark.parametrize("retries", [0, 1, 4])
def test_number_of_attempts_is_retries_plus_one(rsps: responses.RequestsMock, retries: int) -> None:
    rsps.get(DAGS, status=503)
    with pytest.raises(TransientError):
        transport_for(retries=retries).request("GET", "/api/v2/dags")
    assert len(rsps.calls) == retries + 1


def test_per_call_retries_override_the_config(rsps: responses.RequestsMock) -> None:
    rsps.get(DAGS, status=503)
    with pytest.raises(TransientError):
        transport_for(retries=5).request("GET", "/api/v2/dags", retries=1)
    assert len(rsps.calls) == 2


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_retried_until_it_succeeds(ordered: responses.RequestsMock, status: int) -> None:
    ordered.get(DAGS, status=status)
    ordered.get(DAGS, status=status)
    ordered.get(DAGS, json={"dags": []})
    response = transport_for(retries=2).request("GET", "/api/v2/dags")
    assert response.json() == {"dags": []}


@pytest.mark.parametrize(
    "raised",
    [requests.ConnectionError("Connection refused"), requests.ConnectTimeout(), requests.ReadTimeout()],
    ids=["connect-error", "connect-timeout", "read-timeout"],
)
def test_network_failures_are_retried(ordered: responses.RequestsMock, raised: Exception) -> None:
    ordered.get(DAGS, body=raised)
    ordered.get(DAGS, json={"ok": True})
    assert transport_for().request("GET", "/api/v2/dags").json() == {"ok": True}


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, RequestRejected),
        (401, AuthError),
        (403, AuthError),
        (404, NotFoundError),
        (422, RequestRejected),
    ],
)
def test_4xx_is_never_retried(rsps: responses.RequestsMock, status: int, error_class: type) -> None:
    rsps.get(DAGS, status=status, json={"detail": "no"})
    with pytest.raises(error_class):
        transport_for(retries=3).request("GET", "/api/v2/dags")
    assert len(rsps.calls) == 1


def test_429_waits_what_retry_after_asks_for(ordered: responses.RequestsMock, sleeps: list[float]) -> None:
    ordered.get(DAGS, status=429, headers={"Retry-After": "7"})
    ordered.get(DAGS, json={"ok": True})
    transport_for().request("GET", "/api/v2/dags")
    assert sleeps == [7.0]


def test_retry_after_is_capped(ordered: responses.RequestsMock, sleeps: list[float]) -> None:
    ordered.get(DAGS, status=503, headers={"Retry-After": "86400"})
    ordered.get(DAGS, json={"ok": True})
    transport_for().request("GET", "/api/v2/dags")
    assert sleeps == [120.0]


def test_backoff_is_used_when_it_is_longer_than_retry_after(
    ordered: responses.RequestsMock, sleeps: list[float]
) -> None:
    ordered.get(DAGS, status=429, headers={"Retry-After": "1"})
    ordered.get(DAGS, json={"ok": True})
    config = DeploymentConfig(name="target", base_url=BASE, token=TOKEN, api_version="v2")
    Transport(config, backoff_initial=10, backoff_max=60).request("GET", "/api/v2/dags")
    assert len(sleeps) == 1
    assert 10 <= sleeps[0] <= 20  # initial + up to `initial` of jitter


def test_backoff_grows_and_stays_within_its_maximum(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.get(DAGS, status=503)
    config = DeploymentConfig(name="target", base_url=BASE, token=TOKEN, api_version="v2", retries=6)
    with pytest.raises(TransientError):
        Transport(config, backoff_initial=1, backoff_max=4).request("GET", "/api/v2/dags")
    assert len(sleeps) == 6
    assert 1 <= sleeps[0] <= 2
    assert all(0 < s <= 4 for s in sleeps)
    assert sleeps[-1] == 4


def test_unsent_mode_does_not_resend_after_an_ambiguous_500(rsps: responses.RequestsMock) -> None:
    rsps.post(f"{BASE}/api/v2/assets/events", status=500)
    with pytest.raises(TransientError) as info:
        transport_for(retries=3).request("POST", "/api/v2/assets/events", json={}, retry="unsent")
    assert info.value.ambiguous
    assert len(rsps.calls) == 1


def test_unsent_mode_does_not_resend_after_a_read_timeout(rsps: responses.RequestsMock) -> None:
    rsps.post(f"{BASE}/api/v2/assets/events", body=requests.ReadTimeout())
    with pytest.raises(TransientError):
        transport_for(retries=3).request("POST", "/api/v2/assets/events", json={}, retry="unsent")
    assert len(rsps.calls) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_unsent_mode_does_not_resend_after_a_5xx_a_proxy_may_send_after_forwarding(
    rsps: responses.RequestsMock, status: int
) -> None:
    """Regression (issue 9, defect 2): a proxy answers 502/503 also after it forwarded the request."""
    rsps.post(f"{BASE}/api/v2/assets/events", status=status)
    with pytest.raises(TransientError) as info:
        transport_for(retries=3).request("POST", "/api/v2/assets/events", json={}, retry="unsent")
    assert info.value.ambiguous
    assert len(rsps.calls) == 1


@pytest.mark.parametrize("status", [429])
def test_unsent_mode_resends_when_the_server_cannot_have_acted(
    ordered: responses.RequestsMock, status: int
) -> None:
    ordered.post(f"{BASE}/api/v2/assets/events", status=status)
    ordered.post(f"{BASE}/api/v2/assets/events", json={"id": 1})
    response = transport_for().request("POST", "/api/v2/assets/events", json={}, retry="unsent")
    assert response.json() == {"id": 1}


def test_mode_none_never_retries(rsps: responses.RequestsMock) -> None:
    rsps.get(DAGS, status=503)
    with pytest.raises(TransientError):
        transport_for(retries=3).request("GET", "/api/v2/dags", retry="none")
    assert len(rsps.calls) == 1


def test_passthrough_status_is_returned_not_raised(rsps: responses.RequestsMock) -> None:
    rsps.get(DAGS, status=404)
    assert transport_for().request("GET", "/api/v2/dags", passthrough=(404,)).status_code == 404


def test_status_outside_ok_is_an_error_even_if_2xx(rsps: responses.RequestsMock) -> None:
    rsps.get(DAGS, status=204)
    with pytest.raises(RequestRejected):
        transport_for().request("GET", "/api/v2/dags", ok=(200,))


def test_retries_are_logged_with_the_wait_and_the_error(
    ordered: responses.RequestsMock, caplog: pytest.LogCaptureFixture
) -> None:
    ordered.get(DAGS, status=503, headers={"Retry-After": "3"})
    ordered.get(DAGS, json={})
    with caplog.at_level("WARNING", logger="astro_xdeps.client.http"):
        transport_for().request("GET", "/api/v2/dags")
    [record] = [r for r in caplog.records if r.name == "astro_xdeps.client.http"]
    assert "Retrying in 3.0s (attempt 1 failed)" in record.getMessage()
    assert "HTTP 503" in record.getMessage()


# -- what goes on the wire ----------------------------------------------------------------------


def test_requests_carry_timeouts_and_user_agent(rsps: responses.RequestsMock) -> None:
    rsps.get(
        DAGS,
        json={},
        match=[
            matchers.request_kwargs_matcher({"timeout": (2.0, 9.0)}),
            matchers.header_matcher({"User-Agent": f"astro-xdeps/{astro_xdeps.__version__}"}),
        ],
    )
    transport_for(timeouts=Timeouts(connect=2, read=9)).request("GET", "/api/v2/dags")


@pytest.mark.parametrize("verify", [False, "/etc/team-ca.pem"])
def test_tls_setting_wins_over_a_ca_bundle_in_the_environment(
    rsps: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch, verify: bool | str
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/env/ca-bundle.pem")
    rsps.post(
        LOGIN,
        status=201,
        json={"access_token": "jwt-1"},
        match=[matchers.request_kwargs_matcher({"verify": verify})],
    )
    rsps.get(DAGS, json={}, match=[matchers.request_kwargs_matcher({"verify": verify})])
    jwt_transport(verify=verify).request("GET", "/api/v2/dags")


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_a_ca_bundle_in_the_environment_is_used_when_the_connection_names_none(
    rsps: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    monkeypatch.setenv(variable, "/env/ca-bundle.pem")
    rsps.post(
        LOGIN,
        status=201,
        json={"access_token": "jwt-1"},
        match=[matchers.request_kwargs_matcher({"verify": "/env/ca-bundle.pem"})],
    )
    rsps.get(DAGS, json={}, match=[matchers.request_kwargs_matcher({"verify": "/env/ca-bundle.pem"})])
    jwt_transport().request("GET", "/api/v2/dags")


def test_proxies_from_the_environment_are_used_and_read_once_per_session(
    rsps: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("https_proxy", "http://proxy.corp:3128")
    rsps.get(DAGS, json={})
    transport = transport_for()
    monkeypatch.setenv("HTTPS_PROXY", "http://elsewhere:1")  # read when the session was made, not now
    monkeypatch.setenv("https_proxy", "http://elsewhere:1")
    transport.request("GET", "/api/v2/dags")
    assert rsps.calls[0].request.req_kwargs["proxies"]["https"] == "http://proxy.corp:3128"
    assert transport.session.trust_env is False  # nothing looked up per request


def test_no_proxy_for_the_deployment_host_sends_it_direct(
    rsps: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("https_proxy", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "target.example.com")
    monkeypatch.setenv("no_proxy", "target.example.com")
    rsps.get(DAGS, json={})
    transport_for().request("GET", "/api/v2/dags")
    assert "https" not in (rsps.calls[0].request.req_kwargs["proxies"] or {})


def test_path_prefix_of_the_base_url_is_kept(rsps: responses.RequestsMock) -> None:
    rsps.get("https://target.example.com/team-a/api/v2/dags", json={})
    transport_for(base_url="https://target.example.com/team-a").request("GET", "/api/v2/dags")


# -- auth: static token -------------------------------------------------------------------------


def test_static_token_is_sent_as_bearer(rsps: responses.RequestsMock) -> None:
    rsps.get(DAGS, json={}, match=[matchers.header_matcher({"Authorization": f"Bearer {TOKEN}"})])
    transport = transport_for()
    transport.request("GET", "/api/v2/dags")
    assert transport.auth_mode == "token"


def test_unauthenticated_call_sends_no_credentials(rsps: responses.RequestsMock) -> None:
    rsps.get(f"{BASE}/api/v2/version", json={})
    transport_for().request("GET", "/api/v2/version", auth=False)
    assert "Authorization" not in rsps.calls[0].request.headers


def test_401_with_a_static_token_is_an_auth_error_without_relogin(rsps: responses.RequestsMock) -> None:
    rsps.get(DAGS, status=401)
    with pytest.raises(AuthError, match="did not accept our credentials"):
        transport_for().request("GET", "/api/v2/dags")
    assert len(rsps.calls) == 1


# -- auth: JWT (Airflow 3 login) ----------------------------------------------------------------


def bearer(token: str) -> list:
    return [matchers.header_matcher({"Authorization": f"Bearer {token}"})]


def test_login_and_password_on_v2_log_in_for_a_jwt(rsps: responses.RequestsMock) -> None:
    rsps.post(LOGIN, status=201, json={"access_token": "jwt-1"}, match=[LOGIN_BODY])
    rsps.get(DAGS, json={}, match=bearer("jwt-1"))
    transport = jwt_transport()
    transport.request("GET", "/api/v2/dags")
    assert transport.auth_mode == "jwt"


def test_login_answered_with_200_is_accepted_too(rsps: responses.RequestsMock) -> None:
    rsps.post(LOGIN, status=200, json={"access_token": "jwt-1"})
    rsps.get(DAGS, json={}, match=bearer("jwt-1"))
    jwt_transport().request("GET", "/api/v2/dags")


def test_jwt_is_cached_across_calls(rsps: responses.RequestsMock) -> None:
    rsps.post(LOGIN, status=201, json={"access_token": "jwt-1"})
    rsps.get(DAGS, json={}, match=bearer("jwt-1"))
    transport = jwt_transport()
    transport.request("GET", "/api/v2/dags")
    transport.request("GET", "/api/v2/dags")
    transport.request("GET", "/api/v2/dags")
    assert [c.request.method for c in rsps.calls] == ["POST", "GET", "GET", "GET"]


def test_login_url_sits_under_the_base_path_prefix(rsps: responses.RequestsMock) -> None:
    rsps.post(f"{BASE}/team-a/auth/token", status=201, json={"access_token": "jwt-1"})
    rsps.get(f"{BASE}/team-a/api/v2/dags", json={}, match=bearer("jwt-1"))
    jwt_transport(base_url=f"{BASE}/team-a").request("GET", "/api/v2/dags")


def test_expired_jwt_logs_in_again_once_and_resends(ordered: responses.RequestsMock) -> None:
    ordered.post(LOGIN, status=201, json={"access_token": "jwt-1"}, match=[LOGIN_BODY])
    ordered.get(DAGS, json={}, match=bearer("jwt-1"))
    ordered.get(DAGS, status=401, match=bearer("jwt-1"))
    ordered.post(LOGIN, status=201, json={"access_token": "jwt-2"}, match=[LOGIN_BODY])
    ordered.get(DAGS, json={"dags": []}, match=bearer("jwt-2"))
    transport = jwt_transport()
    transport.request("GET", "/api/v2/dags")
    assert transport.request("GET", "/api/v2/dags").json() == {"dags": []}


def test_401_after_a_fresh_login_is_an_auth_error_after_exactly_one_relogin(
    rsps: responses.RequestsMock,
) -> None:
    rsps.post(LOGIN, status=201, json={"access_token": "jwt-x"})
    rsps.get(DAGS, status=401)
    with pytest.raises(AuthError):
        jwt_transport(retries=3).request("GET", "/api/v2/dags")
    assert [c.request.method for c in rsps.calls] == ["POST", "GET", "POST", "GET"]


def test_relogin_resends_the_same_body(ordered: responses.RequestsMock) -> None:
    body = {"asset_id": 3, "extra": {"k": "v"}}
    ordered.post(LOGIN, status=201, json={"access_token": "jwt-1"})
    ordered.post(f"{BASE}/api/v2/assets/events", status=401)
    ordered.post(LOGIN, status=201, json={"access_token": "jwt-2"})
    ordered.post(
        f"{BASE}/api/v2/assets/events",
        json={"id": 1},
        match=[*bearer("jwt-2"), matchers.json_params_matcher(body)],
    )
    jwt_transport().request("POST", "/api/v2/assets/events", json=body, retry="unsent")


@pytest.mark.parametrize("status", [400, 401, 403, 422])
def test_failed_login_is_an_auth_error_that_echoes_neither_password_nor_body(
    rsps: responses.RequestsMock, status: int
) -> None:
    rsps.post(
        LOGIN, status=status, body=f'{{"detail": "bad login for admin/{PASSWORD}", "trace": "internal-xyz"}}'
    )
    with pytest.raises(AuthError, match="Logging in failed") as info:
        jwt_transport(retries=3).request("GET", "/api/v2/dags")
    text = str(info.value)
    assert PASSWORD not in text
    assert "internal-xyz" not in text
    assert info.value.body == ""
    assert f"HTTP {status}" in text
    assert len(rsps.calls) == 1  # neither the login nor the call is retried


def test_login_without_access_token_is_an_auth_error(rsps: responses.RequestsMock) -> None:
    rsps.post(LOGIN, status=201, json={"token": "jwt-1"})
    with pytest.raises(AuthError, match="no access_token"):
        jwt_transport().request("GET", "/api/v2/dags")


def test_login_answered_with_html_is_an_auth_error(rsps: responses.RequestsMock) -> None:
    rsps.post(LOGIN, status=200, body="<html>login page</html>")
    with pytest.raises(AuthError, match="no access_token"):
        jwt_transport().request("GET", "/api/v2/dags")


def test_login_server_error_is_transient_retried_and_scrubbed(rsps: responses.RequestsMock) -> None:
    rsps.post(LOGIN, status=500, body=f"crash while checking {PASSWORD}")
    with pytest.raises(TransientError) as info:
        jwt_transport(retries=2).request("GET", "/api/v2/dags")
    assert PASSWORD not in str(info.value)
    assert len(rsps.calls) == 3


def test_login_that_cannot_connect_is_transient_and_unambiguous(rsps: responses.RequestsMock) -> None:
    rsps.post(LOGIN, body=requests.ConnectionError("Connection refused"))
    with pytest.raises(TransientError) as info:
        jwt_transport(retries=0).request("GET", "/api/v2/dags")
    assert info.value.ambiguous is False
    assert info.value.call == "POST /auth/token"


# -- auth: basic (Airflow 2), none, explicit --------------------------------------------------------


def basic(user: str, password: str) -> list:
    value = base64.b64encode(f"{user}:{password}".encode()).decode()
    return [matchers.header_matcher({"Authorization": f"Basic {value}"})]


def test_login_and_password_on_v1_use_basic_auth(rsps: responses.RequestsMock) -> None:
    rsps.get(f"{BASE}/api/v1/dags", json={}, match=basic("admin", PASSWORD))
    transport = jwt_transport(api_version="v1")
    transport.request("GET", "/api/v1/dags")
    assert transport.auth_mode == "basic"


def test_explicit_basic_auth_is_used_on_v2_too(rsps: responses.RequestsMock) -> None:
    rsps.get(DAGS, json={}, match=basic("admin", PASSWORD))
    jwt_transport(auth_type="basic").request("GET", "/api/v2/dags")


def test_explicit_jwt_auth_logs_in_even_before_the_version_is_known(rsps: responses.RequestsMock) -> None:
    rsps.post(LOGIN, status=201, json={"access_token": "jwt-1"})
    rsps.get(DAGS, json={}, match=bearer("jwt-1"))
    jwt_transport(auth_type="jwt", api_version="auto").request("GET", "/api/v2/dags")


@pytest.mark.parametrize(
    "overrides",
    [{"auth_type": "none"}, {"auth_type": "none", "token": None, "password": PASSWORD}, {"token": None}],
    ids=["none-with-token", "none-with-password", "auto-without-credentials"],
)
def test_no_auth_sends_no_authorization_header(rsps: responses.RequestsMock, overrides: dict) -> None:
    rsps.get(DAGS, json={})
    transport = transport_for(**overrides)
    transport.request("GET", "/api/v2/dags")
    assert transport.auth_mode == "none"
    assert "Authorization" not in rsps.calls[0].request.headers


def test_token_wins_over_login_in_auto_mode() -> None:
    assert transport_for(username="admin", password=PASSWORD).auth_mode == "token"


def test_a_request_carries_the_sessions_headers_cookies_and_timeouts(rsps: responses.RequestsMock) -> None:
    """Requests are prepared by the transport, not ``Session.request``: the session's parts still go."""
    rsps.post(
        DAGS,
        json={},
        match=[
            matchers.header_matcher(
                {"User-Agent": f"astro-xdeps/{astro_xdeps.__version__}", "Authorization": f"Bearer {TOKEN}"}
            ),
            matchers.json_params_matcher({"a": 1}),
            matchers.query_param_matcher({"limit": "1"}),
        ],
        headers={"Set-Cookie": "lb=node-2; Path=/"},
    )
    rsps.post(DAGS, json={}, match=[matchers.header_matcher({"Cookie": "lb=node-2"})])
    transport = transport_for(timeouts=Timeouts(connect=3.0, read=7.0))
    transport.request("POST", "/api/v2/dags", json={"a": 1}, params={"limit": 1})
    transport.request("POST", "/api/v2/dags", json={"a": 1})
    assert rsps.calls[0].request.req_kwargs["timeout"] == (3.0, 7.0)


def test_a_session_passed_in_keeps_its_own_auth_params_and_hooks(rsps: responses.RequestsMock) -> None:
    """A caller's session with auth, params or hooks gets them applied, as ``Session.request`` would."""
    session = requests.Session()
    session.params = {"tenant": "blue"}
    session.auth = lambda r: (r.headers.__setitem__("X-Signed", "yes"), r)[1]
    seen: list[int] = []
    session.hooks["response"].append(lambda r, *args, **kwargs: seen.append(r.status_code))
    rsps.post(
        DAGS,
        json={},
        match=[
            matchers.header_matcher({"X-Signed": "yes", "Authorization": f"Bearer {TOKEN}"}),
            matchers.query_param_matcher({"tenant": "blue"}),
        ],
    )
    Transport(config_for(), session=session).request("POST", "/api/v2/dags", json={"a": 1})
    assert seen == [200]

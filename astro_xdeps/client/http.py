"""The HTTP edge: one keep-alive session per deployment, auth, retries, error classification.

Retry policy of every client call (the delivery worker's clients make one attempt: the outbox
retries, see :mod:`astro_xdeps.outbox.worker`):
- retried: connection errors, timeouts, 429 and 5xx, with exponential backoff and jitter,
  waiting at least what ``Retry-After`` asks for;
- never retried: any other 4xx — the request is wrong and sending it again changes nothing.
Requests that are not safe to repeat (creating an asset event has no idempotency key) are
retried blindly only on failures where the server cannot have acted: a refused connection (or
connect timeout) and 429. A 502/503 is not among them: a reverse proxy answers so after it
forwarded the request when the upstream closed the connection, so the event may exist.
"""

from __future__ import annotations

import email.utils
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal

import requests
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from astro_xdeps import __version__
from astro_xdeps.client import common
from astro_xdeps.client.config import DeploymentConfig
from astro_xdeps.exceptions import (
    AuthError,
    DeploymentError,
    NotFoundError,
    RequestRejected,
    TransientError,
)

log = logging.getLogger(__name__)

RetryMode = Literal["all", "unsent", "none"]
MAX_RETRY_AFTER_SECONDS = 120.0
# Statuses that say the application did not act on the request. Not 502/503: a proxy sends those
# also after it forwarded the request (upstream closed the connection, reset mid-answer).
_UNSENT_STATUSES = {429}


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret in ``text`` with ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            return None
        seconds = when - (time.time() if now is None else now)
    return max(0.0, min(seconds, MAX_RETRY_AFTER_SECONDS))


def error_for_response(
    response: requests.Response, *, deployment: str, call: str, secrets=()
) -> DeploymentError:
    """Map an unsuccessful response to the exception class that says what to do about it."""
    status = response.status_code
    body = scrub(response.text or "", secrets).strip().replace("\n", " ")
    kw: dict[str, Any] = {"deployment": deployment, "call": call, "status": status, "body": body}
    if status == 401:
        return AuthError(
            "The deployment did not accept our credentials",
            hint="check the API token (or login/password) in the connection or API_TOKEN; "
            "a JWT from another deployment or an expired token gives 401",
            **kw,
        )
    if status == 403:
        return AuthError(
            "The credentials are valid but not allowed to do this",
            hint="use a token with permission for this deployment (Astro: a Deployment API token "
            "of this deployment, role that can create asset events and DAG runs)",
            **kw,
        )
    if status == 404:
        return NotFoundError("Not found in the deployment", **kw)
    if status == 429 or status >= 500:
        return TransientError(
            "The deployment is overloaded or failing",
            ambiguous=status not in _UNSENT_STATUSES,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            hint="it is retried automatically; if it persists, check the deployment's api-server health",
            **kw,
        )
    return RequestRejected("The deployment rejected the request", **kw)


def token_from_login(response: requests.Response, config: DeploymentConfig) -> str:
    """The JWT in an answer of ``POST /auth/token`` (a requests or an httpx response), or the
    AuthError that says why there is none."""
    status = response.status_code
    if status not in (200, 201):
        err = error_for_response(
            response, deployment=config.name, call=common.LOGIN_CALL, secrets=config.secrets
        )
        raise common.login_refused(err, deployment=config.name, status=status) from None
    try:
        body = response.json()
    except ValueError:
        body = None
    return common.login_token(body, deployment=config.name, status=status)


def _is_retryable(mode: RetryMode) -> Callable[[BaseException], bool]:
    def check(exc: BaseException) -> bool:
        if not isinstance(exc, TransientError) or mode == "none":
            return False
        return mode == "all" or not exc.ambiguous

    return check


def _wait_with_retry_after(backoff: wait_exponential_jitter) -> Callable[[RetryCallState], float]:
    def wait(state: RetryCallState) -> float:
        base = backoff(state)
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        return max(base, retry_after) if retry_after else base

    return wait


def retry_policy(
    config: DeploymentConfig,
    backoff: wait_exponential_jitter,
    mode: RetryMode,
    retries: int | None,
    logger: logging.Logger,
) -> dict[str, Any]:
    """Keyword arguments of the retry loop both clients run (``Retrying`` / ``AsyncRetrying``):
    backoff with jitter, ``Retry-After`` honoured, each retry logged to ``logger``."""

    def log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        logger.warning(
            "Retrying in %.1fs (attempt %d failed): %s",
            state.next_action.sleep if state.next_action else 0.0,
            state.attempt_number,
            exc,
        )

    return {
        "stop": stop_after_attempt((config.retries if retries is None else retries) + 1),
        "wait": _wait_with_retry_after(backoff),
        "retry": retry_if_exception(_is_retryable(mode)),
        "before_sleep": log_retry,
        "reraise": True,
    }


def apply_environment(session: requests.Session, base_url: str, verify: bool | str) -> None:
    """Resolve once what requests would otherwise look up on every request (``trust_env``).

    The environment's proxies for ``base_url`` (``HTTPS_PROXY``, ``NO_PROXY``...) and, when
    ``verify`` is True, the CA bundle in ``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE`` become the
    session's own settings; ``trust_env`` is then off, so requests does not scan the environment
    (and look for a ``.netrc``: the connection's credentials are the only ones sent) per request.
    A ``verify`` of False or a CA path in the connection wins over the environment, as before.
    """
    session.proxies.update(requests.utils.get_environ_proxies(base_url))
    if verify is True:
        verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    session.verify = verify
    session.trust_env = False


def _call_once(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


class Transport:
    """Sends requests to one deployment. Knows its base URL, auth and timeouts, nothing about the API."""

    def __init__(
        self,
        config: DeploymentConfig,
        *,
        session: requests.Session | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        self.config = config
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = f"astro-xdeps/{__version__}"
        apply_environment(self.session, config.base_url, config.verify)
        self._backoff = wait_exponential_jitter(
            initial=backoff_initial, max=backoff_max, jitter=backoff_initial
        )
        self._jwt: str | None = None
        self.api_version: str | None = None if config.api_version == "auto" else config.api_version

    # -- auth ---------------------------------------------------------------------------------
    @property
    def auth_mode(self) -> str:
        """The auth actually used: the configured one, or what ``auto`` means for this server."""
        return common.auth_mode(self.config, self.api_version)

    def _auth_headers(self) -> dict[str, str]:
        mode = self.auth_mode
        if mode == "jwt":
            return {"Authorization": f"Bearer {self._jwt or self._login()}"}
        return common.static_auth_headers(self.config, mode)

    def _login(self) -> str:
        """Exchange login and password for a JWT at ``/auth/token`` (OSS Airflow 3)."""
        try:
            response = self.session.post(
                self.url(common.LOGIN_PATH),
                json=common.login_payload(self.config),
                timeout=self.config.timeouts.as_requests(),
            )
        except requests.RequestException as exc:
            raise self._transport_error(exc, common.LOGIN_CALL, sent=False) from exc
        self._jwt = token_from_login(response, self.config)
        return self._jwt

    @property
    def secrets(self) -> tuple[str, ...]:
        """The config's secrets plus the JWT from logging in: none may reach a message or log."""
        return (*self.config.secrets, self._jwt) if self._jwt else self.config.secrets

    # -- requests -----------------------------------------------------------------------------
    def url(self, path: str) -> str:
        return f"{self.config.base_url}{path}"

    def _transport_error(self, exc: requests.RequestException, call: str, *, sent: bool) -> TransientError:
        return common.transport_error(
            self.config,
            exc,
            call,
            # A connect error or connect timeout means the server never saw the request.
            unsent=isinstance(exc, requests.ConnectTimeout)
            or (isinstance(exc, requests.ConnectionError) and "Connection aborted" not in str(exc)),
            timed_out=isinstance(exc, requests.Timeout),
            sent=sent,
        )

    def _send(
        self, method: str, path: str, headers: dict[str, str], kwargs: dict[str, Any]
    ) -> requests.Response:
        """One request on the session, prepared here instead of by ``Session.request``.

        Why: ``Session.request`` copies the session's cookie jar and merges its settings into
        every request, a fifth of a delivery's CPU. This client sets no session auth, params or
        hooks (auth is a header, the environment was resolved once by :func:`apply_environment`),
        so the session's headers and its cookies as they are is all a request takes from it;
        ``Session.send`` still applies the session's proxies and TLS settings. A session passed in
        with auth, params or hooks of its own gets ``Session.prepare_request``, which applies them.
        """
        session = self.session
        request = requests.Request(
            method,
            self.url(path),
            headers={**session.headers, **headers},
            cookies=session.cookies,
            **kwargs,
        )
        if session.auth or session.params or any(session.hooks.values()):
            prepared = session.prepare_request(request)
        else:
            prepared = request.prepare()
        return session.send(prepared, timeout=self.config.timeouts.as_requests())

    def _send_once(
        self,
        method: str,
        path: str,
        call: str,
        *,
        auth: bool,
        extra_headers: Callable[[], dict[str, str]] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        headers = self._auth_headers() if auth else {}
        if extra_headers is not None:
            headers = {**headers, **extra_headers()}
        try:
            response = self._send(method, path, headers, kwargs)
        except requests.RequestException as exc:
            raise self._transport_error(exc, call, sent=True) from exc
        if response.status_code == 401 and auth and self.auth_mode == "jwt" and self._jwt:
            # JWTs expire and have no refresh token: log in again once, then resend.
            log.info("Token for %s was refused; logging in again", self.config.name)
            self._jwt = None
            headers = self._auth_headers()
            try:
                response = self._send(method, path, headers, kwargs)
            except requests.RequestException as exc:
                raise self._transport_error(exc, call, sent=True) from exc
        return response

    def request(
        self,
        method: str,
        path: str,
        *,
        ok: tuple[int, ...] = (200, 201),
        passthrough: tuple[int, ...] = (),
        retry: RetryMode = "all",
        auth: bool = True,
        retries: int | None = None,
        headers: Callable[[], dict[str, str]] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Send a request, retrying per ``retry``; return the response if its status is in
        ``ok`` or ``passthrough``, else raise the matching :class:`DeploymentError`.

        ``headers`` is called before each attempt, so a signature can carry a fresh timestamp.
        """
        call = f"{method} {path.split('?')[0]}"

        def attempt() -> requests.Response:
            response = self._send_once(method, path, call, auth=auth, extra_headers=headers, **kwargs)
            if response.status_code in ok or response.status_code in passthrough:
                return response
            raise error_for_response(response, deployment=self.config.name, call=call, secrets=self.secrets)

        return self.retrying(retry, retries)(attempt)

    def retrying(self, mode: RetryMode = "all", retries: int | None = None) -> Callable[..., Any]:
        """The retry loop every call goes through (see :func:`retry_policy`).

        With no retries (the delivery worker's clients: the outbox retries) it is a plain call.
        """
        if mode == "none" or (self.config.retries if retries is None else retries) == 0:
            return _call_once
        return Retrying(**retry_policy(self.config, self._backoff, mode, retries, log))

    def close(self) -> None:
        self.session.close()

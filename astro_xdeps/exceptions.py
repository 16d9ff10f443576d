"""The exceptions astro-xdeps raises.

Exception tree::

    XdepsError                  anything this package raises on purpose
    ├── ConfigError             configuration is missing or wrong: fix config, retrying will not help
    ├── OutboxError             the outbox database could not be opened, read or written
    ├── RelayStateError         the relay's own tables (state, deadlines, journal) could not be used
    └── DeploymentError         a call to a deployment's REST API failed (deployment, call, status, body)
        ├── AuthError           401/403: the token or login is wrong, expired, or for another deployment
        ├── NotFoundError       404: the asset, DAG or run does not exist there (yet)
        ├── RequestRejected     any other 4xx: the request itself is wrong; never retried
        └── TransientError      connect errors, timeouts, 429, 5xx: worth retrying
                                (``ambiguous`` when the request may have taken effect)
    PayloadError                an event the relay refuses (HTTP 400/422); ``reason`` is safe to send back
    SignatureError              a relay request that is not authentic (HTTP 401); ``reason`` is safe to send back

Messages say which deployment, which call, what came back and what to try. They never
contain a token or password: every message is built from parts that cannot hold one, and
response bodies are cut short and scrubbed of the caller's secrets.
"""

from __future__ import annotations

BODY_EXCERPT_CHARS = 300


class XdepsError(Exception):
    """Base class of every error astro-xdeps raises on purpose."""


class ConfigError(XdepsError):
    """Configuration is missing or invalid. The message says what to set."""


class OutboxError(XdepsError):
    """The outbox database could not be opened, read or written (down, unreachable, locked, full).

    Items already committed are kept; the message names the database (password hidden), what
    failed and what to check.
    """


class RelayStateError(XdepsError):
    """The relay's tables beside the outbox (rule state, deadlines, journal) could not be used.

    Retryable like :class:`OutboxError`: the relay answers 503 and the sender tries again.
    """


class DeploymentError(XdepsError):
    """A call to a deployment's REST API failed."""

    def __init__(
        self,
        message: str,
        *,
        deployment: str = "",
        call: str = "",
        status: int | None = None,
        body: str = "",
        hint: str = "",
    ) -> None:
        self.deployment = deployment
        self.call = call
        self.status = status
        self.body = body[:BODY_EXCERPT_CHARS]
        self.hint = hint
        parts = [message]
        if call or deployment:
            parts.append(f"[{call} on {deployment}]".replace(" on ]", "]").replace("[ on ", "["))
        if status is not None:
            parts.append(f"HTTP {status}")
        if self.body:
            parts.append(f"body: {self.body}")
        if hint:
            parts.append(f"Try: {hint}")
        super().__init__(" — ".join(parts))


class AuthError(DeploymentError):
    """The deployment refused our credentials (401) or their permissions (403)."""


class NotFoundError(DeploymentError):
    """The asset, DAG or DAG run does not exist in the deployment (it may appear after a deploy)."""


class RequestRejected(DeploymentError):
    """The deployment rejected the request as invalid (4xx other than 401/403/404/409/429)."""


class TransientError(DeploymentError):
    """A failure worth retrying: the deployment was unreachable, slow, overloaded or erroring.

    ``ambiguous`` is True when the request may have reached the application and taken effect
    (read timeout, reset, 500, 502, 503, 504); a caller that must not duplicate checks before sending again.
    ``retry_after`` carries the server's ``Retry-After`` in seconds when it sent one.
    """

    def __init__(self, message: str, *, ambiguous: bool, retry_after: float | None = None, **kw) -> None:
        self.ambiguous = ambiguous
        self.retry_after = retry_after
        super().__init__(message, **kw)


class PayloadError(XdepsError):
    """The payload is not an event this relay accepts. ``reason`` is safe to send back.

    The message names the field, what was expected and what came instead, shortened.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class SignatureError(XdepsError):
    """The request is not authentic. ``reason`` says what was wrong and is safe to send back.

    It never holds a secret, an expected signature or a token.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)

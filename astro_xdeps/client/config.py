"""What a client needs to reach one deployment, and how pasted URLs are understood.

Pure: no Airflow import, no I/O. The hook turns an Airflow connection (or the
``DEPLOYMENT_URL``/``API_TOKEN`` environment variables) into a :class:`DeploymentConfig`.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from astro_xdeps.exceptions import ConfigError

API_VERSIONS = ("auto", "v2", "v1")
AUTH_TYPES = ("auto", "token", "jwt", "basic", "none")

_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]", "0.0.0.0"}
# A trailing API path users copy from docs or the browser: /api/v1, /api/v2, /api/v2/..., /api/v1/ui/
_API_SUFFIX = re.compile(r"/api/v[12](/.*)?$")
# Pages of the Airflow UI users copy from the address bar.
_UI_SUFFIX = re.compile(r"/(home|dags|ui|assets|datasets)(/.*)?$")
# The user-info part of a URL (with or without a scheme): everything up to the last "@" before
# the path, query or fragment.
_USERINFO = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.-]*:)?//|)[^/?#]*@")


def normalize_base_url(raw: str, *, scheme: str | None = None, port: int | None = None) -> str:
    """Return the deployment's base URL (scheme://host[:port][/path]) without a trailing slash.

    Accepts what users paste: ``host:8080``, ``https://host/``, ``https://host/api/v2``,
    Astro's ``<org>.astronomer.run/<deployment-id>`` (the id is a path prefix), and the
    UI's ``.../home``. A missing scheme means ``http`` for loopback hosts, else ``https``.
    """
    text = (raw or "").strip()
    if not text:
        raise ConfigError(
            "The deployment URL is empty. Set the connection's Host, or DEPLOYMENT_URL, to the "
            "deployment's URL, e.g. https://<org>.astronomer.run/<deployment-id> or http://localhost:8080."
        )
    shown = redact_url(text)
    if shown != text:
        # Checked first, so no later message can echo the credentials.
        raise ConfigError(
            f"The deployment URL {shown!r} contains credentials. Remove them from the URL and put the "
            "token or password in the connection's Password field (or API_TOKEN) instead, so it is "
            "never logged."
        )
    if "://" not in text:
        authority = text.split("/", 1)[0]
        host_part = (
            authority.split("]", 1)[0] + "]" if authority.startswith("[") else authority.rsplit(":", 1)[0]
        )
        default_scheme = "http" if host_part.lower() in _LOOPBACK_HOSTS else "https"
        text = f"{scheme or default_scheme}://{text}"
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise ConfigError(f"The deployment URL {shown!r} is not a valid URL ({exc}).") from None
    if parts.scheme not in ("http", "https"):
        raise ConfigError(
            f"The deployment URL {shown!r} has scheme {parts.scheme!r}; use http:// or https://."
        )
    if not parts.hostname:
        raise ConfigError(f"The deployment URL {shown!r} has no host name.")
    netloc = parts.netloc
    if port and parts.port is None:
        netloc = f"{netloc}:{port}"
    path = parts.path.rstrip("/")
    path = _API_SUFFIX.sub("", path)
    path = _UI_SUFFIX.sub("", path)
    return urlunsplit((parts.scheme, netloc, path.rstrip("/"), "", ""))


def redact_url(text: str) -> str:
    """``text`` with any ``user:password@`` (or ``token@``) before the host replaced by ``***@``.

    Pure string work, so it also covers text ``urlsplit`` would reject.
    """
    return _USERINFO.sub(r"\1***@", text)


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait for a TCP connection and for a response. Always both set."""

    connect: float = 5.0
    read: float = 30.0

    def as_requests(self) -> tuple[float, float]:
        return (self.connect, self.read)


@dataclass(frozen=True)
class DeploymentConfig:
    """How to reach and authenticate to one Airflow deployment's REST API.

    ``name`` is how messages and the outbox refer to the deployment (the connection id).
    Secrets are excluded from ``repr`` so the config can be logged safely.
    """

    name: str
    base_url: str
    token: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    auth_type: str = "auto"
    api_version: str = "auto"
    timeouts: Timeouts = Timeouts()
    verify: bool | str = True
    retries: int = 3

    def __post_init__(self) -> None:
        if self.api_version not in API_VERSIONS:
            raise ConfigError(
                f"Deployment {self.name!r}: api_version {self.api_version!r} is not one of "
                f"{', '.join(API_VERSIONS)}."
            )
        if self.auth_type not in AUTH_TYPES:
            raise ConfigError(
                f"Deployment {self.name!r}: auth_type {self.auth_type!r} is not one of "
                f"{', '.join(AUTH_TYPES)}."
            )
        if self.auth_type in ("jwt", "basic") and not (self.username and self.password):
            raise ConfigError(
                f"Deployment {self.name!r}: auth_type {self.auth_type!r} needs a login and a password."
            )
        if self.auth_type == "token" and not self.token:
            raise ConfigError(f"Deployment {self.name!r}: auth_type 'token' needs a token (Password field).")
        if self.retries < 0:
            raise ConfigError(f"Deployment {self.name!r}: retries must be >= 0, got {self.retries}.")

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in a log line or an error message.

        With a login and password that includes the Basic-auth credential (base64 of
        ``login:password``): a server that echoes the ``Authorization`` header in an error
        would otherwise put it, and so the password, into messages and the outbox's ``last_error``.
        """
        values = [self.token, self.password]
        if self.username and self.password:
            pair = f"{self.username}:{self.password}".encode()
            values += [base64.b64encode(pair).decode("ascii"), base64.urlsafe_b64encode(pair).decode("ascii")]
        return tuple(dict.fromkeys(s for s in values if s))

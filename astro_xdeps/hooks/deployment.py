"""``DeploymentHook``: an Airflow connection (or ``DEPLOYMENT_URL``/``API_TOKEN``) to a deployment.

Connection fields:

============  ===============================================================================
Host          the deployment URL, as pasted: ``https://<org>.astronomer.run/<id>``,
              ``localhost:8080``, with or without ``/api/v2``
Schema        ``http`` or ``https`` when Host has no scheme (default: http for loopback)
Port          optional
Login         empty for a static API token (Astro); a user name for OSS Airflow (JWT on 3.x,
              basic auth on 2.x)
Password      the API token, or the user's password
Extra         ``api_version`` (auto|v2|v1), ``auth_type`` (auto|token|jwt|basic|none),
              ``timeout`` (read timeout s, default 30), ``connect_timeout`` (s, default 5),
              ``retries`` (default 3), ``verify`` (true|false|CA bundle path)
============  ===============================================================================

Precedence: hook argument > connection extra > default. When the default connection
``xdeps_default`` does not exist, ``DEPLOYMENT_URL`` and ``API_TOKEN`` are read from the
environment, as in Astronomer's cross-deployment listener example.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from astro_xdeps.client import DeploymentClient, DeploymentConfig, Timeouts, normalize_base_url
from astro_xdeps.exceptions import ConfigError, XdepsError
from astro_xdeps.settings import parse_bool
from astro_xdeps.version_compat import AirflowNotFoundException, BaseHook

ENV_URL = "DEPLOYMENT_URL"
ENV_TOKEN = "API_TOKEN"
KNOWN_EXTRAS = {"api_version", "auth_type", "timeout", "connect_timeout", "retries", "verify"}


def _as_bool_or_path(value: Any) -> bool | str:
    if isinstance(value, bool):
        return value
    text = str(value).strip()
    parsed = parse_bool(text)
    return text if parsed is None else parsed


def config_from_connection(
    conn_id: str,
    *,
    host: str | None,
    schema: str | None = None,
    port: int | None = None,
    login: str | None = None,
    password: str | None = None,
    extra: Mapping[str, Any] | None = None,
    retries: int | None = None,
    timeout: float | None = None,
) -> DeploymentConfig:
    """Build a :class:`DeploymentConfig` from connection fields. Pure; errors name the field."""
    extra = dict(extra or {})
    unknown = sorted(set(extra) - KNOWN_EXTRAS)
    if unknown:
        raise ConfigError(
            f"Connection {conn_id!r}: unknown extra field(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(KNOWN_EXTRAS))}."
        )
    if not host:
        raise ConfigError(f"Connection {conn_id!r} has no Host: set it to the deployment URL.")
    scheme = schema if schema in ("http", "https") else None
    try:
        read_timeout = float(timeout if timeout is not None else extra.get("timeout", 30))
        connect_timeout = float(extra.get("connect_timeout", 5))
        n_retries = int(retries if retries is not None else extra.get("retries", 3))
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"Connection {conn_id!r}: timeout/connect_timeout/retries must be numbers ({exc})."
        ) from None
    if read_timeout <= 0 or connect_timeout <= 0:
        raise ConfigError(f"Connection {conn_id!r}: timeouts must be positive seconds.")
    login = login or None
    password = password or None
    auth_type = str(extra.get("auth_type", "auto"))
    token = password if (auth_type == "token" or (auth_type == "auto" and not login)) else None
    return DeploymentConfig(
        name=conn_id,
        base_url=normalize_base_url(host, scheme=scheme, port=port),
        token=token,
        username=login,
        password=None if token else password,
        auth_type=auth_type,
        api_version=str(extra.get("api_version", "auto")),
        timeouts=Timeouts(connect=connect_timeout, read=read_timeout),
        verify=_as_bool_or_path(extra.get("verify", True)),
        retries=n_retries,
    )


def config_from_env(
    conn_id: str, environ: Mapping[str, str], *, retries: int | None = None, timeout: float | None = None
) -> DeploymentConfig:
    """Build the config from ``DEPLOYMENT_URL`` and ``API_TOKEN``, as the vendor docs' listener does."""
    url = environ.get(ENV_URL, "").strip()
    if not url:
        raise ConfigError(
            f"No connection {conn_id!r} and no {ENV_URL} in the environment. Either create an "
            f"Airflow connection {conn_id!r} of type 'xdeps_deployment' (Host = deployment URL, "
            f'Password = API token), e.g. AIRFLOW_CONN_{conn_id.upper()}=\'{{"conn_type": '
            f'"xdeps_deployment", "host": "https://...", "password": "..."}}\', or set '
            f"{ENV_URL} and {ENV_TOKEN}."
        )
    return config_from_connection(
        conn_id,
        host=url,
        password=environ.get(ENV_TOKEN, "").strip() or None,
        retries=retries,
        timeout=timeout,
    )


class DeploymentHook(BaseHook):
    """Talk to another Airflow deployment's REST API: assets, asset events, DAG runs.

    :param xdeps_conn_id: connection of type ``xdeps_deployment``; when it is the default
        ``xdeps_default`` and does not exist, ``DEPLOYMENT_URL``/``API_TOKEN`` are used.
    :param retries: retries per call (overrides the connection's ``retries`` extra).
    :param timeout: read timeout in seconds (overrides the ``timeout`` extra).
    """

    conn_name_attr = "xdeps_conn_id"
    default_conn_name = "xdeps_default"
    conn_type = "xdeps_deployment"
    hook_name = "Airflow Deployment (astro-xdeps)"

    def __init__(
        self,
        xdeps_conn_id: str = default_conn_name,
        *,
        retries: int | None = None,
        timeout: float | None = None,
    ) -> None:
        super().__init__()
        self.xdeps_conn_id = xdeps_conn_id
        self.retries = retries
        self.timeout = timeout
        self._client: DeploymentClient | None = None

    def get_config(self) -> DeploymentConfig:
        """Resolve the connection (or the env vars) into a :class:`DeploymentConfig`."""
        try:
            conn = self.get_connection(self.xdeps_conn_id)
        except AirflowNotFoundException:
            if self.xdeps_conn_id != self.default_conn_name:
                raise ConfigError(
                    f"Connection {self.xdeps_conn_id!r} does not exist. Create it (type "
                    f"'xdeps_deployment') in the UI, with `airflow connections add`, or as "
                    f"AIRFLOW_CONN_{self.xdeps_conn_id.upper()}."
                ) from None
            return config_from_env(self.xdeps_conn_id, os.environ, retries=self.retries, timeout=self.timeout)
        try:
            extra = conn.extra_dejson
        except Exception as exc:  # pragma: no cover - Airflow versions differ in what they raise
            raise ConfigError(
                f"Connection {self.xdeps_conn_id!r}: Extra is not valid JSON ({exc})."
            ) from None
        return config_from_connection(
            self.xdeps_conn_id,
            host=conn.host,
            schema=conn.schema,
            port=conn.port,
            login=conn.login,
            password=conn.password,
            extra=extra,
            retries=self.retries,
            timeout=self.timeout,
        )

    def get_conn(self) -> DeploymentClient:
        """The client for this deployment (created once per hook)."""
        if self._client is None:
            self._client = DeploymentClient(self.get_config())
        return self._client

    def test_connection(self) -> tuple[bool, str]:
        """Used by the UI's "Test" button: reach the API, then check the credentials."""
        try:
            client = self.get_conn()
            version = client.version().get("version", "?")
            client.check_auth()
        except XdepsError as exc:
            return False, str(exc)
        return True, f"Connected to Airflow {version} ({client.api_version}) at {client.config.base_url}"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Form labels for Airflow 2.x and 3.0/3.1 (3.2+ reads them from the provider info)."""
        from astro_xdeps.provider import UI_FIELD_BEHAVIOUR

        return {
            "hidden_fields": UI_FIELD_BEHAVIOUR["hidden-fields"],
            "relabeling": UI_FIELD_BEHAVIOUR["relabeling"],
            "placeholders": UI_FIELD_BEHAVIOUR["placeholders"],
        }

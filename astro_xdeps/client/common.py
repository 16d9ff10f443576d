"""Pure parts both clients share: which auth applies, the paths and queries of each API version.

The sync client (``http.py``/``api.py``, requests) and the async one (``aio.py``, httpx) differ
only in how they send. What they send — auth headers, paths, query parameters, the UI address
of a run — is decided here, without I/O, so the two cannot drift apart.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any
from urllib.parse import quote

from astro_xdeps.client.config import DeploymentConfig
from astro_xdeps.exceptions import AuthError, DeploymentError, RequestRejected, TransientError

LOGIN_PATH = "/auth/token"
LOGIN_CALL = f"POST {LOGIN_PATH}"


def auth_mode(config: DeploymentConfig, api_version: str | None) -> str:
    """The auth actually used: the configured one, or what ``auto`` means for this server."""
    if config.auth_type != "auto":
        return config.auth_type
    if config.token:
        return "token"
    if config.username and config.password:
        return "basic" if api_version == "v1" else "jwt"
    return "none"


def static_auth_headers(config: DeploymentConfig, mode: str) -> dict[str, str]:
    """Headers for the modes that need no login round trip (token, basic, none)."""
    if mode == "token":
        return {"Authorization": f"Bearer {config.token}"}
    if mode == "basic":
        pair = f"{config.username}:{config.password}".encode()
        return {"Authorization": f"Basic {base64.b64encode(pair).decode('ascii')}"}
    return {}


def login_payload(config: DeploymentConfig) -> dict[str, Any]:
    """The JSON body that exchanges login and password for a JWT (OSS Airflow 3)."""
    return {"username": config.username, "password": config.password}


def login_refused(err: DeploymentError, *, deployment: str, status: int) -> DeploymentError:
    """What a non-2xx login answer raises: ``err`` (from ``error_for_response``) unless it says
    the credentials or request were wrong, then one AuthError that never echoes the response
    (on some servers it repeats what was sent)."""
    if isinstance(err, (AuthError, RequestRejected)):
        return AuthError(
            "Logging in failed",
            deployment=deployment,
            call=LOGIN_CALL,
            status=status,
            hint="check the connection's login and password; with an Astro or other static "
            "token, leave Login empty and put the token in Password",
        )
    return err


def login_token(body: Any, *, deployment: str, status: int) -> str:
    """The JWT in a successful login's parsed JSON ``body`` (None when it was not JSON)."""
    try:
        return body["access_token"]
    except (KeyError, TypeError):
        raise AuthError(
            "Logging in returned no access_token",
            deployment=deployment,
            call=LOGIN_CALL,
            status=status,
            hint="is this URL an Airflow 3 api-server? For Airflow 2 set auth_type 'basic'",
        ) from None


def transport_error(
    config: DeploymentConfig, exc: BaseException, call: str, *, unsent: bool, timed_out: bool, sent: bool
) -> TransientError:
    """The TransientError for a request that got no response. Only a request that was ``sent``
    and not known ``unsent`` (refused connection, connect timeout) is ambiguous: the server
    may have acted on it."""
    kind = "timed out" if timed_out else "could not be reached"
    return TransientError(
        f"The deployment {kind} ({type(exc).__name__})",
        ambiguous=sent and not unsent,
        deployment=config.name,
        call=call,
        hint=f"check that {config.base_url} is up and reachable from here",
    )


def _q(value: str) -> str:
    return quote(value, safe="")


def dag_path(api: str, dag_id: str) -> str:
    return f"/api/{api}/dags/{_q(dag_id)}"


def dag_run_path(api: str, dag_id: str, run_id: str) -> str:
    return f"{dag_path(api, dag_id)}/dagRuns/{_q(run_id)}"


def task_instance_path(api: str, dag_id: str, run_id: str, task_id: str, map_index: int | None) -> str:
    """One task instance; a mapped one is addressed by its map index."""
    base = f"{dag_run_path(api, dag_id, run_id)}/taskInstances/{_q(task_id)}"
    return base if map_index is None or map_index < 0 else f"{base}/{int(map_index)}"


def iso(when: datetime) -> str:
    """An aware datetime as the REST APIs accept it in query strings."""
    if when.tzinfo is None:
        raise ValueError(f"datetime {when!r} has no time zone; pass an aware datetime")
    return when.isoformat()


def dag_runs_query(
    api: str,
    dag_id: str,
    *,
    logical_date: datetime | None = None,
    run_after_gte: datetime | None = None,
    limit: int = 1,
) -> tuple[str, dict[str, Any]]:
    """Path and params that list runs of ``dag_id``: at one logical date, or newest after a time.

    Airflow 2 calls the logical date ``execution_date`` and has no ``run_after``: there the
    start date stands in for it.
    """
    path = f"{dag_path(api, dag_id)}/dagRuns"
    params: dict[str, Any] = {"limit": limit}
    if api == "v2":
        if logical_date is not None:
            params["logical_date_gte"] = params["logical_date_lte"] = iso(logical_date)
        if run_after_gte is not None:
            params["run_after_gte"] = iso(run_after_gte)
        params["order_by"] = "-run_after"
    else:
        if logical_date is not None:
            params["execution_date_gte"] = params["execution_date_lte"] = iso(logical_date)
        if run_after_gte is not None:
            params["start_date_gte"] = iso(run_after_gte)
        params["order_by"] = "-execution_date"
    return path, params


def clear_dag_run_path(api: str, dag_id: str, run_id: str) -> str:
    return f"{dag_run_path(api, dag_id, run_id)}/clear"


def asset_events_query(
    api: str, asset_id: int, *, since: str | None, limit: int, offset: int = 0, newest_first: bool = False
) -> tuple[str, dict[str, Any]]:
    """Path and params for one asset's events at or after ``since`` (an ISO time), oldest first."""
    order = "-timestamp" if newest_first else "timestamp"
    if api == "v2":
        params: dict[str, Any] = {"asset_id": asset_id, "order_by": order, "limit": limit}
        path = "/api/v2/assets/events"
    else:
        params = {"dataset_id": asset_id, "order_by": order, "limit": limit}
        path = "/api/v1/datasets/events"
    if offset:
        params["offset"] = offset
    if since:
        params["timestamp_gte"] = since
    return path, params


def ui_run_url(base_url: str, api: str | None, dag_id: str, run_id: str) -> str:
    """Where a person opens a DAG run in that deployment's UI."""
    if api == "v1":
        return f"{base_url}/dags/{_q(dag_id)}/grid?dag_run_id={_q(run_id)}"
    return f"{base_url}/dags/{_q(dag_id)}/runs/{_q(run_id)}"

"""Who may see the page and who may act: Airflow's own authentication and authorization.

Airflow 3 mounts plugin apps without any auth, so the page asks Airflow itself on every request:
the user comes from :func:`airflow.api_fastapi.core_api.security.get_user` (a bearer token, or
the ``_token`` cookie the Airflow UI sets at login, which the browser also sends to this
same-origin page), and permissions from the configured auth manager:

- read (see the page and its API): may read DAG runs (``is_authorized_dag(GET, RUN)``);
- retry an asset-event item: may create asset events (``is_authorized_asset(POST)``);
- retry a DAG-run item: may create DAG runs (``is_authorized_dag(POST, RUN)``).

With Airflow's SimpleAuthManager that is: viewer reads, op and admin retry everything, user
retries DAG-run items only. Airflow 3.1+ (imports are lazy: the plugin loads in every process).
"""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import Request
from fastapi.security import HTTPAuthorizationCredentials


class Access(Protocol):
    async def user(self, request: Request, credentials: HTTPAuthorizationCredentials | None) -> Any:
        """The logged-in user; raises ``HTTPException`` 401 (no/expired login) or 403 (bad token)."""

    def can_read(self, user: Any) -> bool: ...

    def can_retry(self, user: Any, kind: str) -> bool: ...

    def name(self, user: Any) -> str: ...


class AirflowAccess:
    """:class:`Access` through the running api-server's auth manager."""

    async def user(self, request: Request, credentials: HTTPAuthorizationCredentials | None) -> Any:
        from airflow.api_fastapi.core_api.security import get_user

        return await get_user(request, None, credentials)

    def can_read(self, user: Any) -> bool:
        from airflow.api_fastapi.app import get_auth_manager
        from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity

        return get_auth_manager().is_authorized_dag(
            method="GET", access_entity=DagAccessEntity.RUN, user=user
        )

    def can_retry(self, user: Any, kind: str) -> bool:
        from airflow.api_fastapi.app import get_auth_manager
        from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity

        manager = get_auth_manager()
        if kind == "asset_event":
            return manager.is_authorized_asset(method="POST", user=user)
        return manager.is_authorized_dag(method="POST", access_entity=DagAccessEntity.RUN, user=user)

    def name(self, user: Any) -> str:
        try:
            return str(user.get_name())
        except Exception:
            return "?"

"""How the page is mounted: a tiny ASGI app that builds the FastAPI app on its first request.

The plugin is imported by every Airflow process (scheduler, workers, triggerer), but only the
api-server serves the page; importing FastAPI costs ~0.3 s, so nothing heavy happens until a
request arrives. Airflow mounts any ASGI callable from ``fastapi_apps``.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlparse

URL_PREFIX = "/xdeps/ui"
URL_ROUTE = "xdeps"


class LazyPageApp:
    def __init__(self) -> None:
        self._app: Any = None
        self._lock = threading.Lock()

    def _build(self) -> Any:
        with self._lock:
            if self._app is None:
                from astro_xdeps.ui.access import AirflowAccess
                from astro_xdeps.ui.app import create_app, runtime_from_settings

                self._app = create_app(runtime_from_settings, AirflowAccess())
            return self._app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        app = self._app or self._build()
        await app(scope, receive, send)

    def __repr__(self) -> str:
        return "astro_xdeps.ui.mount.LazyPageApp()"


def page_href() -> str:
    """Where the UI's iframe loads the page: under ``[api] base_url``'s path, if it has one."""
    try:
        from airflow.configuration import conf

        base = conf.get("api", "base_url", fallback="") or ""
    except Exception:
        base = ""
    return urlparse(base).path.rstrip("/") + URL_PREFIX + "/"


def external_view() -> dict[str, Any]:
    return {
        "name": "Cross-deployment",
        "href": page_href(),
        "url_route": URL_ROUTE,
        "destination": "nav",
        "category": "browse",
    }

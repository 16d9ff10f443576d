"""The Airflow plugin, loaded through the ``airflow.plugins`` entry point in every component."""

from __future__ import annotations

import logging

from airflow.plugins_manager import AirflowPlugin

from astro_xdeps.listeners.assets import asset_listener
from astro_xdeps.listeners.pull import pull_listener
from astro_xdeps.listeners.states import state_listener

log = logging.getLogger(__name__)


def _relay_apps() -> list[dict]:
    """Mount the relay in the Airflow 3 api-server when ``[astro_xdeps] relay_config`` is set.

    The app loads its rules on the first request, so defining it here costs nothing.
    """
    try:
        from astro_xdeps import runtime, settings

        if not settings.relay_config():
            return []
        from astro_xdeps.relay.app import create_app

        return [
            {
                "app": create_app(runtime.relay_runtime),
                "url_prefix": "/xdeps/relay",
                "name": "astro-xdeps relay",
            }
        ]
    except Exception:
        log.exception("astro-xdeps could not set up the relay app")
        return []


def _page() -> tuple[list[dict], list[dict]]:
    """The page in the Airflow UI (Airflow 3.1+ external views), unless ``[astro_xdeps] ui`` is false.

    Airflow 3.0 has no external views, and on 2.x the CLI is the operator's view.
    """
    try:
        from astro_xdeps import settings
        from astro_xdeps.version_compat import AIRFLOW_V_3_1_PLUS

        if not AIRFLOW_V_3_1_PLUS or not settings.ui():
            return [], []
        from astro_xdeps.ui.mount import URL_PREFIX, LazyPageApp, external_view

        app = {"app": LazyPageApp(), "url_prefix": URL_PREFIX, "name": "astro-xdeps page"}
        return [app], [external_view()]
    except Exception:
        log.exception("astro-xdeps could not set up its page in the Airflow UI")
        return [], []


_page_apps, _page_views = _page()


class XdepsPlugin(AirflowPlugin):
    name = "astro_xdeps"
    listeners = [asset_listener, state_listener, pull_listener]
    fastapi_apps = _relay_apps() + _page_apps
    external_views = _page_views

    @classmethod
    def on_load(cls, *args, **kwargs) -> None:
        # The api-server fires no lifecycle hook, yet it is where asset events are recorded:
        # start delivering there at once, so items left by a crashed process go out now.
        from astro_xdeps import runtime

        runtime.start_worker_for_component()

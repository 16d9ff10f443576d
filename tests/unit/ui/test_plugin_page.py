"""The plugin adds the page only where Airflow can show it (3.1+), and only when not turned off."""

from __future__ import annotations

import pytest

from astro_xdeps import version_compat
from astro_xdeps.plugins import xdeps
from astro_xdeps.ui.mount import LazyPageApp, page_href

needs_3_1 = pytest.mark.skipif(
    not version_compat.AIRFLOW_V_3_1_PLUS, reason="the page is an external view: Airflow 3.1+"
)


@needs_3_1
def test_the_page_is_an_external_view_served_by_a_lazy_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW__ASTRO_XDEPS__UI", raising=False)
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://localhost:8080")
    apps, views = xdeps._page()
    assert [a["url_prefix"] for a in apps] == ["/xdeps/ui"]
    assert isinstance(apps[0]["app"], LazyPageApp) and apps[0]["app"]._app is None  # nothing built yet
    assert views == [
        {
            "name": "Cross-deployment",
            "href": "/xdeps/ui/",
            "url_route": "xdeps",
            "destination": "nav",
            "category": "browse",
        }
    ]


def test_a_base_url_with_a_path_prefixes_the_page(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://example.com/airflow/")
    assert page_href() == "/airflow/xdeps/ui/"


def test_turned_off_or_before_airflow_3_1_there_is_no_page(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__ASTRO_XDEPS__UI", "false")
    assert xdeps._page() == ([], [])
    monkeypatch.setenv("AIRFLOW__ASTRO_XDEPS__UI", "true")
    monkeypatch.setattr(version_compat, "AIRFLOW_V_3_1_PLUS", False)
    assert xdeps._page() == ([], [])


@needs_3_1
def test_the_installed_plugin_carries_the_page() -> None:
    assert "/xdeps/ui" in [a["url_prefix"] for a in xdeps.XdepsPlugin.fastapi_apps]
    assert xdeps.XdepsPlugin.external_views[0]["url_route"] == "xdeps"

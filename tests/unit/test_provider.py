"""Airflow finds the provider (connection type, config) and the plugin from the installed package."""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path

import airflow
import jsonschema

from astro_xdeps.provider import get_provider_info
from astro_xdeps.version_compat import AIRFLOW_V_3_0_PLUS


def test_provider_info_matches_airflows_schema():
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_provider_entry_point_is_installed():
    eps = {ep.value for ep in entry_points(group="apache_airflow_provider")}
    assert "astro_xdeps.provider:get_provider_info" in eps


def test_package_name_is_the_normalised_distribution_name():
    assert get_provider_info()["package-name"] == "astro-xdeps"


def test_plugin_entry_point_loads_the_plugin_class():
    (ep,) = [ep for ep in entry_points(group="airflow.plugins") if ep.name == "astro_xdeps"]
    plugin = ep.load()
    assert plugin.name == "astro_xdeps"


def test_providers_manager_registers_the_connection_type():
    from airflow.providers_manager import ProvidersManager

    assert "astro-xdeps" in ProvidersManager().providers
    if AIRFLOW_V_3_0_PLUS:  # hooks are a task-runtime concern in Airflow 3
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

        hook = ProvidersManagerTaskRuntime().hooks["xdeps_deployment"]
    else:
        hook = ProvidersManager().hooks["xdeps_deployment"]
    assert hook is not None
    assert hook.hook_class_name == "astro_xdeps.hooks.deployment.DeploymentHook"
    assert hook.connection_id_attribute_name == "xdeps_conn_id"

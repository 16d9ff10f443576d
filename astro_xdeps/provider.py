"""Provider metadata, found by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from astro_xdeps import __version__

INTEGRATION = "Airflow Deployment (astro-xdeps)"

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": [],
    "relabeling": {
        "host": "Deployment URL",
        "schema": "Scheme (if URL has none)",
        "login": "Username (OSS Airflow; empty for an API token)",
        "password": "API token or password",
    },
    "placeholders": {
        "host": "https://<org>.astronomer.run/<deployment-id>  or  http://localhost:8080",
        "schema": "https",
        "login": "leave empty for Astro / static tokens",
        "password": "Deployment API token",
        "extra": '{"api_version": "auto", "auth_type": "auto", "timeout": 30, "retries": 3}',
    },
}


def _config() -> dict[str, Any]:
    from astro_xdeps.settings import OPTIONS, SECTION

    return {
        SECTION: {
            "description": "astro-xdeps: forwarding and triggers between Airflow deployments.",
            "options": {
                o.name: {
                    "description": o.description,
                    "version_added": "0.1.0",
                    "type": o.type,
                    "example": o.example,
                    "default": o.default,
                    "sensitive": o.sensitive,
                }
                for o in OPTIONS.values()
            },
        }
    }


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "astro-xdeps",
        "name": "astro-xdeps",
        "description": "Dependable dependencies between Airflow deployments.",
        "versions": [__version__],
        "connection-types": [
            {
                "connection-type": "xdeps_deployment",
                "hook-class-name": "astro_xdeps.hooks.deployment.DeploymentHook",
                "hook-name": "Airflow Deployment (astro-xdeps)",
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
            }
        ],
        "integrations": [{"integration-name": INTEGRATION, "tags": ["software"]}],
        "operators": [
            {"integration-name": INTEGRATION, "python-modules": ["astro_xdeps.operators.deployment"]}
        ],
        "sensors": [{"integration-name": INTEGRATION, "python-modules": ["astro_xdeps.sensors.deployment"]}],
        "triggers": [
            {"integration-name": INTEGRATION, "python-modules": ["astro_xdeps.triggers.deployment"]}
        ],
        "extra-links": ["astro_xdeps.operators.deployment.DeploymentDagRunLink"],
        "config": _config(),
        "plugins": [{"name": "astro_xdeps", "plugin-class": "astro_xdeps.plugins.xdeps.XdepsPlugin"}],
    }

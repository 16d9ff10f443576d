"""The deployment the client tests talk to: its URL and secrets, and clients configured for it."""

from __future__ import annotations

from typing import Any

from astro_xdeps.client import DeploymentClient, DeploymentConfig
from astro_xdeps.client.http import Transport

BASE = "https://target.example.com"
TOKEN = "tok-SECRET-9f8e7d6c5b4a"
PASSWORD = "pw-SECRET-1a2b3c4d"


def config_for(**overrides: Any) -> DeploymentConfig:
    """``BASE`` with a static token, API v2 forced (no detection) and 2 retries, unless overridden."""
    fields: dict[str, Any] = {
        "name": "target",
        "base_url": BASE,
        "token": TOKEN,
        "api_version": "v2",
        "retries": 2,
    }
    fields.update(overrides)
    return DeploymentConfig(**fields)


def client_for(**overrides: Any) -> DeploymentClient:
    return DeploymentClient(config_for(**overrides))


def transport_for(**overrides: Any) -> Transport:
    return Transport(config_for(**overrides))

"""The REST client layer: the one place that knows URLs, auth, API versions and retries."""

from astro_xdeps.client.api import Asset, DeploymentClient, TriggerResult
from astro_xdeps.client.config import DeploymentConfig, Timeouts, normalize_base_url

__all__ = ["Asset", "DeploymentClient", "DeploymentConfig", "Timeouts", "TriggerResult", "normalize_base_url"]

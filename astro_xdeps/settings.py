"""Named options of the ``[astro_xdeps]`` config section, read lazily, one accessor each.

Every option can be set in ``airflow.cfg`` or as ``AIRFLOW__ASTRO_XDEPS__<OPTION>``; the
provider info (``provider.py``) documents them for ``airflow config list``. Nothing here is
read at import time, so tests and long-running processes see changes without reloads.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from astro_xdeps.exceptions import ConfigError

SECTION = "astro_xdeps"


@dataclass(frozen=True)
class Option:
    name: str
    default: str
    description: str
    type: str = "string"
    example: str | None = None
    sensitive: bool = False


OPTIONS: dict[str, Option] = {
    o.name: o
    for o in (
        Option(
            "conn_id",
            "xdeps_default",
            "Connection of the deployment asset events go to when no route says otherwise. If it "
            "does not exist, DEPLOYMENT_URL and API_TOKEN are used.",
            example="xdeps_downstream",
        ),
        Option(
            "forward_assets",
            "auto",
            "Forward this deployment's asset events: 'true', 'false', or 'auto' (forward when "
            "routes are configured, DEPLOYMENT_URL is set, or the conn_id connection is set as "
            "an AIRFLOW_CONN_* variable).",
        ),
        Option(
            "routes",
            "",
            "Routes as JSON (a list of route objects, see README); empty means one route: every "
            "asset to conn_id.",
            example='[{"match": {"uri": "s3://sales/*"}, "targets": ["xdeps_finance"]}]',
        ),
        Option("routes_file", "", "Path of a JSON or YAML file with routes (same format as 'routes')."),
        Option(
            "outbox_url",
            "",
            "SQLAlchemy URL of the outbox. Empty: an SQLite file xdeps_outbox.db in AIRFLOW_HOME. "
            "Use PostgreSQL when several replicas share one outbox.",
            example="postgresql+psycopg2://user:pass@host/db",
        ),
        Option(
            "deployment_name",
            "",
            "This deployment's name in the provenance of forwarded events. Empty: "
            "ASTRO_DEPLOYMENT_NAMESPACE, else [api] base_url, else the host name.",
        ),
        Option("max_hops", "1", "How many deployments an event may travel through.", type="integer"),
        Option(
            "retry_horizon",
            "259200",
            "Seconds an item is retried before it is dead-lettered (default 3 days).",
            type="integer",
        ),
        Option(
            "delivery_worker",
            "true",
            "Start the background delivery thread in processes that enqueue. 'false' when a "
            "separate `astro-xdeps outbox drain` delivers.",
            type="boolean",
        ),
        Option(
            "retry_max_delay",
            "300",
            "Longest wait in seconds between two delivery attempts of one item (backoff cap).",
            type="integer",
        ),
        Option(
            "relay_config",
            "",
            "Path of the relay's rules file. When set, the relay is mounted in the Airflow 3 "
            "api-server at /xdeps/relay and the scheduler's DAG-state events feed its rules.",
            example="/usr/local/airflow/include/xdeps_relay.yaml",
        ),
        Option(
            "deadline_tick_seconds",
            "15",
            "How often the relay's deadline clock (in the scheduler and in `astro-xdeps relay "
            "serve`) checks whether a deadline rule's deadline passed without its event.",
            type="integer",
        ),
        Option(
            "relay_metrics_token",
            "",
            "Bearer token that opens the relay's /metrics and the details of /health "
            "(Authorization: Bearer <token>, at least 16 characters). Empty: they are closed "
            "when mounted in the api-server, open on a standalone relay listening on loopback.",
            sensitive=True,
        ),
        Option("target_concurrency", "4", "Requests in flight per target deployment.", type="integer"),
        Option(
            "delivered_retention",
            "604800",
            "Seconds a delivered outbox item is kept before the delivery worker deletes it (checked "
            "hourly; default 7 days; 0 keeps them forever). It is also the dedupe window: an event "
            "or webhook repeated after its item was deleted is not recognised as a repeat.",
            type="integer",
        ),
        Option(
            "ui",
            "true",
            "Show the astro-xdeps page (outbox, relay, dependency graph) in the Airflow 3.1+ UI "
            "under Browse, served by the api-server at /xdeps/ui under Airflow's login.",
            type="boolean",
        ),
    )
}


def get(name: str) -> str:
    """The option's value: env var, then Airflow config, then the default."""
    option = OPTIONS[name]
    env = os.environ.get(f"AIRFLOW__{SECTION.upper()}__{name.upper()}")
    if env is not None:
        return env.strip()
    try:
        from airflow.configuration import conf

        value = conf.get(SECTION, name, fallback=None)
    except Exception:  # config unavailable (e.g. outside Airflow): fall back to the default
        value = None
    return option.default if value is None else str(value).strip()


def get_int(name: str) -> int:
    value = get(name)
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"[{SECTION}] {name} must be an integer, got {value!r}.") from None


def get_bool(name: str) -> bool:
    value = get(name).lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"[{SECTION}] {name} must be true or false, got {value!r}.")


def airflow_home() -> Path:
    return Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow"))


def outbox_url() -> str:
    return get("outbox_url") or f"sqlite:///{airflow_home() / 'xdeps_outbox.db'}"


def deployment_name() -> str:
    configured = get("deployment_name") or os.environ.get("ASTRO_DEPLOYMENT_NAMESPACE", "")
    if configured:
        return configured
    base_url = os.environ.get("AIRFLOW__API__BASE_URL", "")
    if not base_url:
        try:
            from airflow.configuration import conf

            base_url = conf.get("api", "base_url", fallback="") or ""
        except Exception:
            base_url = ""
    return base_url or socket.gethostname()

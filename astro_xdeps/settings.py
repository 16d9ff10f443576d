"""Named options of the ``[astro_xdeps]`` config section, read lazily, one accessor each.

Every option is read through Airflow's ``conf``, so it can be set in ``airflow.cfg`` or as
``AIRFLOW__ASTRO_XDEPS__<OPTION>`` (or ``_CMD``/``_SECRET`` where Airflow allows); the provider
info (``provider.py``) documents them for ``airflow config list``. Nothing here is read at import
time, so tests and long-running processes see changes without reloads. Code calls the accessor
named after the option (``settings.relay_config()``), never a string-keyed lookup.
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
        Option(
            "target_concurrency",
            "4",
            "Requests in flight per delivery worker while sends take 5 ms or more; faster ones "
            "go out one at a time.",
            type="integer",
        ),
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


TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})


def parse_bool(text: str) -> bool | None:
    """The package's one reading of a yes/no word (any case, padded); None when it is neither."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return None


def _get(name: str) -> str:
    """The option's value through Airflow's config (``AIRFLOW__ASTRO_XDEPS__*``, then
    ``airflow.cfg``), else its default; stripped."""
    from airflow.configuration import conf

    value = conf.get(SECTION, name, fallback=None)
    return OPTIONS[name].default if value is None else str(value).strip()


def _get_int(name: str) -> int:
    value = _get(name)
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"[{SECTION}] {name} must be an integer, got {value!r}.") from None


def _get_bool(name: str, *, auto: bool = False) -> bool | None:
    """A yes/no option; with ``auto``, the word ``auto`` is allowed too and reads as None."""
    value = _get(name)
    if auto and value.lower() == "auto":
        return None
    parsed = parse_bool(value)
    if parsed is None:
        expected = "auto, true or false" if auto else "true or false"
        raise ConfigError(f"[{SECTION}] {name} must be {expected}, got {value!r}.")
    return parsed


# One accessor per option, named after it (see OPTIONS for what each means).


def conn_id() -> str:
    return _get("conn_id")


def forward_assets() -> bool | None:
    """True or False as configured; None for ``auto`` (decided by the forwarding plan)."""
    return _get_bool("forward_assets", auto=True)


def routes() -> str:
    return _get("routes")


def routes_file() -> str:
    return _get("routes_file")


def max_hops() -> int:
    return _get_int("max_hops")


def retry_horizon() -> int:
    return _get_int("retry_horizon")


def delivery_worker() -> bool:
    return bool(_get_bool("delivery_worker"))


def retry_max_delay() -> int:
    return _get_int("retry_max_delay")


def relay_config() -> str:
    return _get("relay_config")


def deadline_tick_seconds() -> int:
    return _get_int("deadline_tick_seconds")


def relay_metrics_token() -> str:
    return _get("relay_metrics_token")


def target_concurrency() -> int:
    return _get_int("target_concurrency")


def delivered_retention() -> int:
    return _get_int("delivered_retention")


def ui() -> bool:
    return bool(_get_bool("ui"))


def airflow_home() -> Path:
    return Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow"))


def outbox_url() -> str:
    return _get("outbox_url") or f"sqlite:///{airflow_home() / 'xdeps_outbox.db'}"


def deployment_name() -> str:
    configured = _get("deployment_name") or os.environ.get("ASTRO_DEPLOYMENT_NAMESPACE", "")
    if configured:
        return configured
    from airflow.configuration import conf

    return conf.get("api", "base_url", fallback="") or socket.gethostname()

"""Operations on one deployment's REST API, in Airflow 3 (``/api/v2``) and 2 (``/api/v1``) form.

Nothing else in the package builds a URL. The API version is detected once per client
(``/api/v2/version``, then ``/api/v1/version``) unless the connection forces it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from astro_xdeps.client import common
from astro_xdeps.client.config import DeploymentConfig
from astro_xdeps.client.http import Transport
from astro_xdeps.exceptions import DeploymentError, NotFoundError, RequestRejected, TransientError

log = logging.getLogger(__name__)

_PAGE = 100
# How far the downstream's clock may be behind ours when looking for an event since a time.
CLOCK_SKEW_SECONDS = 600.0


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _epoch(value: Any) -> float:
    """An API timestamp as epoch seconds; unparseable counts as new (keep reading)."""
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return float("inf")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


# Where a partition key goes on a target that has none (Airflow < 3.2): into the event's extra.
PARTITION_EXTRA_KEY = "xdeps_partition_key"


@dataclass(frozen=True)
class Asset:
    """An asset (Airflow 3) or dataset (Airflow 2) as the downstream knows it."""

    id: int | None
    uri: str
    name: str | None = None


@dataclass(frozen=True)
class TriggerResult:
    """Outcome of triggering a DAG run with a caller-chosen run id.

    ``created`` is False when the run id already existed (HTTP 409): the trigger had
    already happened, which for a deterministic run id means the work is done.
    """

    created: bool
    dag_id: str
    dag_run_id: str
    body: dict[str, Any] = field(default_factory=dict)


class DeploymentClient:
    """A client for one Airflow deployment. Thread-safe for the calls it makes."""

    def __init__(self, config: DeploymentConfig, *, transport: Transport | None = None) -> None:
        self.config = config
        self.transport = transport or Transport(config)
        self._asset_cache: dict[str, Asset] = {}
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.config.name

    def __repr__(self) -> str:
        return f"DeploymentClient({self.config.name!r}, {self.config.base_url!r})"

    # -- version and health -------------------------------------------------------------------
    @property
    def api_version(self) -> str:
        """``v2`` (Airflow 3) or ``v1`` (Airflow 2), detected on first use."""
        with self._lock:
            if self.transport.api_version is None:
                self.transport.api_version = self._detect_version()
            return self.transport.api_version

    def _detect_version(self) -> str:
        r = self.transport.request("GET", "/api/v2/version", auth=False, passthrough=(404,), ok=(200,))
        if r.status_code == 200:
            return "v2"
        r = self.transport.request(
            "GET", "/api/v1/version", auth=False, passthrough=(401, 403, 404), ok=(200,)
        )
        if r.status_code in (200, 401, 403):
            return "v1"
        raise RequestRejected(
            "No Airflow REST API found at this URL (both /api/v2/version and /api/v1/version gave 404)",
            deployment=self.name,
            call="GET /api/v2/version",
            status=404,
            hint="check the deployment URL; with [api] base_url carrying a path, include that path",
        )

    @property
    def _api(self) -> str:
        return f"/api/{self.api_version}"

    def version(self) -> dict[str, Any]:
        """The server's ``{"version": ..., "git_version": ...}``."""
        auth = self.api_version == "v1"
        return self.transport.request("GET", f"{self._api}/version", auth=auth).json()

    def health(self) -> dict[str, Any]:
        """The health report (metadatabase, scheduler, ...); needs no credentials."""
        path = "/api/v2/monitor/health" if self.api_version == "v2" else "/api/v1/health"
        return self.transport.request("GET", path, auth=False).json()

    def check_auth(self) -> None:
        """Make one cheap authenticated call; raises :class:`AuthError` when credentials fail."""
        self.transport.request("GET", f"{self._api}/dags", params={"limit": 1})

    # -- assets -------------------------------------------------------------------------------
    def resolve_asset(self, uri: str, *, refresh: bool = False) -> Asset:
        """Find the asset whose uri is exactly ``uri``; cached. Raises :class:`NotFoundError`.

        Airflow 3 only filters by a case-insensitive ``LIKE '%pattern%'`` where ``_`` and ``%``
        are wildcards and ``|`` separates alternatives, so a search can return more than the
        one asset: every page is read and the uri is compared exactly here.
        """
        if not refresh and uri in self._asset_cache:
            return self._asset_cache[uri]
        asset = self._find_asset_v2(uri) if self.api_version == "v2" else self._find_dataset_v1(uri)
        if asset is None:
            raise NotFoundError(
                f"No asset with uri {uri!r} in the deployment",
                deployment=self.name,
                call="resolve asset",
                hint="an asset exists there only while a parsed DAG references it (e.g. as a "
                "schedule): deploy the consuming DAG, or check the uri for typos",
            )
        self._asset_cache[uri] = asset
        return asset

    def _find_asset_v2(self, uri: str) -> Asset | None:
        offset = 0
        while True:
            page = self.transport.request(
                "GET",
                "/api/v2/assets",
                params={"uri_pattern": uri, "limit": _PAGE, "offset": offset, "order_by": "id"},
            ).json()
            assets = page.get("assets", [])
            for item in assets:
                if item.get("uri") == uri:
                    return Asset(id=item["id"], uri=uri, name=item.get("name"))
            offset += len(assets)
            if not assets or offset >= page.get("total_entries", 0):
                return None

    def _find_dataset_v1(self, uri: str) -> Asset | None:
        r = self.transport.request("GET", f"/api/v1/datasets/{quote(uri, safe='')}", passthrough=(404,))
        if r.status_code == 404:
            return None
        body = r.json()
        return Asset(id=body.get("id"), uri=body.get("uri", uri))

    def create_asset_event(
        self,
        uri: str,
        extra: dict[str, Any] | None = None,
        *,
        partition_key: str | None = None,
        dedupe: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        """Create one asset event for ``uri`` and return it as the server reports it.

        ``dedupe=(key, value)`` names a field of ``extra`` that identifies this event. After an
        ambiguous failure (timeout, reset, 5xx: the event may have been written), the events
        since the first attempt are searched for it before sending again, and a match is returned instead of a
        duplicate. Without ``dedupe`` such a failure is raised, never blindly resent.
        """
        extra = dict(extra or {})
        if dedupe and extra.get(dedupe[0]) != dedupe[1]:
            extra[dedupe[0]] = dedupe[1]
        resend_needs_check = False
        first_attempt = time.time()

        def attempt() -> dict[str, Any]:
            nonlocal resend_needs_check
            if resend_needs_check and dedupe:
                found = self.find_event(uri, *dedupe, since=first_attempt)
                if found is not None:
                    log.info("Event %s=%s already arrived at %s; not sending again", *dedupe, self.name)
                    return found
            try:
                return self._post_asset_event(uri, extra, partition_key)
            except TransientError as exc:
                resend_needs_check = resend_needs_check or exc.ambiguous
                raise

        return self.transport.retrying("all" if dedupe else "unsent")(attempt)

    @property
    def supports_partitions(self) -> bool:
        """Whether the server keeps partition keys on asset events (Airflow 3.2+). Asked once.

        When its version cannot be read now, an Airflow 3 server is assumed to, and asked again
        next time.
        """
        cached = self.__dict__.get("_supports_partitions")
        if cached is not None:
            return cached
        if self.api_version != "v2":
            cached = False
        else:
            try:
                cached = airflow_at_least(self.version().get("version", ""), (3, 2))
            except DeploymentError as exc:  # not cached: asked again next time
                log.info("Version of %s unknown (%s); sending partition keys as they are", self.name, exc)
                return True
        self.__dict__["_supports_partitions"] = cached
        return cached

    def _post_asset_event(self, uri: str, extra: dict[str, Any], partition_key: str | None) -> dict[str, Any]:
        if partition_key is not None and not self.supports_partitions:
            # Older than 3.2: the key would be refused (or lost); it travels in the extra.
            extra = {**extra, PARTITION_EXTRA_KEY: partition_key}
            partition_key = None
        if self.api_version == "v1":
            if partition_key is not None:
                raise RequestRejected(
                    "Airflow 2 has no partition keys; drop partition_key for this target",
                    deployment=self.name,
                    call="POST /api/v1/datasets/events",
                )
            body: dict[str, Any] = {"dataset_uri": uri, "extra": extra}
            return self.transport.request("POST", "/api/v1/datasets/events", json=body, retries=0).json()
        asset = self.resolve_asset(uri)
        body = {"asset_id": asset.id, "extra": extra}
        if partition_key is not None:
            body["partition_key"] = partition_key
        try:
            return self.transport.request("POST", "/api/v2/assets/events", json=body, retries=0).json()
        except NotFoundError:
            # The cached id may belong to an asset that was removed and re-created by a deploy.
            self._asset_cache.pop(uri, None)
            body["asset_id"] = self.resolve_asset(uri).id
            return self.transport.request("POST", "/api/v2/assets/events", json=body, retries=0).json()

    def recent_events(self, uri: str, *, limit: int = 100) -> list[dict[str, Any]]:
        """The asset's most recent events, newest first."""
        asset = self.resolve_asset(uri)
        if self.api_version == "v2":
            params = {"asset_id": asset.id, "order_by": "-timestamp", "limit": limit}
            return self.transport.request("GET", "/api/v2/assets/events", params=params).json()[
                "asset_events"
            ]
        params = {"dataset_id": asset.id, "order_by": "-timestamp", "limit": limit}
        return self.transport.request("GET", "/api/v1/datasets/events", params=params).json()[
            "dataset_events"
        ]

    def find_event(
        self, uri: str, key: str, value: str, *, since: float | None = None, page_size: int = _PAGE
    ) -> dict[str, Any] | None:
        """The event of ``uri`` whose ``extra[key] == value`` created since ``since``, if any.

        ``since`` (epoch seconds, our clock) is when the first attempt to create it started; it
        is widened by :data:`CLOCK_SKEW_SECONDS` for the server's clock. Every page of events
        since then is read, newest first, so the check finds the event however many others the
        asset got meanwhile (a new event only shifts the pages: it is read twice, never skipped).
        Airflow 3 filters by ``timestamp_gte`` on the server; Airflow 2's API cannot, so paging
        stops at the first event older than ``since``. Without ``since`` every event is read.
        """
        cutoff = None if since is None else since - CLOCK_SKEW_SECONDS
        v2 = self.api_version == "v2"
        asset = self.resolve_asset(uri)
        path, listing = (
            ("/api/v2/assets/events", "asset_events") if v2 else ("/api/v1/datasets/events", "dataset_events")
        )
        params: dict[str, Any] = {
            "asset_id" if v2 else "dataset_id": asset.id,
            "order_by": "-timestamp",
            "limit": page_size,
        }
        if v2 and cutoff is not None:
            params["timestamp_gte"] = _iso(cutoff)
        offset = 0
        while True:
            params["offset"] = offset
            events = self.transport.request("GET", path, params=params).json().get(listing) or []
            for event in events:
                if (event.get("extra") or {}).get(key) == value:
                    return event
            if len(events) < page_size:
                return None
            if cutoff is not None and not v2 and _epoch(events[-1].get("timestamp")) < cutoff:
                return None  # Airflow 2: the rest are older than the first attempt
            offset += len(events)

    # -- DAGs and runs ------------------------------------------------------------------------
    def get_dag(self, dag_id: str) -> dict[str, Any]:
        """The DAG's details (``is_paused`` among them). Raises :class:`NotFoundError`."""
        return self.transport.request("GET", f"{self._api}/dags/{quote(dag_id, safe='')}").json()

    def get_dag_run(self, dag_id: str, dag_run_id: str) -> dict[str, Any]:
        path = f"{self._api}/dags/{quote(dag_id, safe='')}/dagRuns/{quote(dag_run_id, safe='')}"
        return self.transport.request("GET", path).json()

    # -- added for the pull side (sensor, operator); paths come from client.common -------------
    def find_dag_runs(self, dag_id: str, **query: Any) -> list[dict[str, Any]]:
        """Runs of ``dag_id`` matching :func:`common.dag_runs_query` (``logical_date``, ``run_after_gte``)."""
        path, params = common.dag_runs_query(self.api_version, dag_id, **query)
        return self.transport.request("GET", path, params=params).json()["dag_runs"]

    def get_task_instance(
        self, dag_id: str, run_id: str, task_id: str, map_index: int | None = None
    ) -> dict[str, Any]:
        path = common.task_instance_path(self.api_version, dag_id, run_id, task_id, map_index)
        return self.transport.request("GET", path).json()

    def clear_dag_run(self, dag_id: str, dag_run_id: str) -> dict[str, Any]:
        """Clear a run so it runs again (what ``reset_dag_run`` does in Airflow's own operator)."""
        path = common.clear_dag_run_path(self.api_version, dag_id, dag_run_id)
        return self.transport.request("POST", path, json={"dry_run": False}).json()

    def trigger_dag_run(
        self,
        dag_id: str,
        dag_run_id: str,
        *,
        conf: dict[str, Any] | None = None,
        note: str | None = None,
    ) -> TriggerResult:
        """Create a DAG run with the caller's ``dag_run_id``.

        Safe to repeat: a run id that already exists gives ``created=False`` (HTTP 409), so a
        deterministic run id makes the trigger idempotent and every failure retryable.

        The logical date: Airflow 3 requires the field and takes null ("no logical date");
        Airflow 2 refuses null, so it is omitted and the server uses "now". Airflow 2 also
        answers 409 when another run of the DAG has that logical date (two triggers in the same
        instant); then the run id does not exist and a :class:`TransientError` says to try again.
        """
        body: dict[str, Any] = {"dag_run_id": dag_run_id, "conf": conf or {}}
        if note is not None:
            body["note"] = note
        if self.api_version == "v2":
            body["logical_date"] = None  # required field in Airflow 3; null = "now, no interval"
        path = f"{self._api}/dags/{quote(dag_id, safe='')}/dagRuns"
        r = self.transport.request("POST", path, json=body, passthrough=(409,), retry="all")
        if r.status_code == 409:
            if self.api_version == "v1" and not self._dag_run_exists(dag_id, dag_run_id):
                raise TransientError(
                    "Airflow 2 refused the DAG run: another run of the DAG has the same logical date",
                    ambiguous=False,
                    deployment=self.name,
                    call=f"POST {path}",
                    status=409,
                    hint="nothing to do: the next try gets a new logical date",
                )
            return TriggerResult(created=False, dag_id=dag_id, dag_run_id=dag_run_id)
        return TriggerResult(created=True, dag_id=dag_id, dag_run_id=dag_run_id, body=r.json())

    def _dag_run_exists(self, dag_id: str, dag_run_id: str) -> bool:
        path = f"{self._api}/dags/{quote(dag_id, safe='')}/dagRuns/{quote(dag_run_id, safe='')}"
        return self.transport.request("GET", path, passthrough=(404,)).status_code != 404

    def close(self) -> None:
        self.transport.close()

    def asset_events_between(
        self, since: datetime, until: datetime | None = None, *, asset_id: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every asset event with ``since <= timestamp <= until``, oldest first, page by page.

        Airflow 3 only (``GET /api/v2/assets/events``); ``asset_id`` narrows it to one asset.
        """
        if self.api_version != "v2":
            raise RequestRejected(
                "reading asset-event history needs an Airflow 3 deployment (API v2)",
                deployment=self.name,
                call="GET /api/v1/datasets/events",
            )
        params: dict[str, Any] = {"order_by": "timestamp", "limit": _PAGE, "timestamp_gte": since.isoformat()}
        if until is not None:
            params["timestamp_lte"] = until.isoformat()
        if asset_id is not None:
            params["asset_id"] = asset_id
        offset = 0
        while True:
            page = self.transport.request(
                "GET", "/api/v2/assets/events", params={**params, "offset": offset}
            ).json()
            events = page.get("asset_events") or []
            yield from events
            offset += len(events)
            if not events or offset >= int(page.get("total_entries", 0)):
                return


__all__ = ["Asset", "DeploymentClient", "DeploymentError", "TriggerResult"]


def airflow_at_least(version: str, minimum: tuple[int, int]) -> bool:
    """``"3.2.0rc1"`` >= ``(3, 2)``; False for a version that cannot be read."""
    m = re.match(r"\s*(\d+)\.(\d+)", str(version))
    return bool(m) and (int(m.group(1)), int(m.group(2))) >= minimum

"""Store a pull watcher's watermark in the same transaction as the event it emitted.

When ``DeploymentAssetEventTrigger`` fires, the triggerer records the asset event
(``Trigger.submit_event``) and calls ``on_asset_event_emitted`` before committing (Airflow 3.3:
the trigger path passes no callback sink, so hooks run inside the open session). The event's
``extra["payload"]["xdeps_pull"]`` carries the watermark *after* that event; writing it to the
asset state store through the same scoped session makes event and watermark one commit:
- killed before the commit: neither is stored, the restarted watcher emits the event again;
- killed after: both are stored, the restarted watcher skips it.
A savepoint keeps a failed watermark write from spoiling the event's transaction.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from airflow.listeners import hookimpl

from astro_xdeps.forwarding.pull import PULL_KEY

log = logging.getLogger(__name__)


def watermark_of(extra: Any) -> tuple[str, Any] | None:
    """``(state key, watermark)`` when ``extra`` is a pull watcher's event, else None (pure)."""
    if not isinstance(extra, dict) or not extra.get("from_trigger"):
        return None
    payload = extra.get("payload")
    mark = payload.get(PULL_KEY) if isinstance(payload, dict) else None
    if not isinstance(mark, dict) or not isinstance(mark.get("key"), str) or "watermark" not in mark:
        return None
    return mark["key"], mark["watermark"]


def store_watermark(asset: Any, key: str, watermark: Any) -> None:
    """Write the watermark in the caller's (the triggerer's) open session, under a savepoint."""
    from airflow import settings
    from airflow.models.asset import AssetModel
    from airflow.state import AssetScope, get_state_backend
    from sqlalchemy import select

    session = settings.Session()  # scoped: the session Trigger.submit_event is using right now
    asset_id = session.scalar(
        select(AssetModel.id).where(AssetModel.name == asset.name, AssetModel.uri == asset.uri)
    )
    if asset_id is None:
        log.warning("astro-xdeps: asset %s not found; watermark %s not stored", asset.uri, key)
        return
    with session.begin_nested():
        get_state_backend().set(AssetScope(asset_id=asset_id), key, json.dumps(watermark), session=session)


class PullWatermarkListener:
    @hookimpl
    def on_asset_event_emitted(self, asset_event: Any) -> None:
        try:
            found = watermark_of(asset_event.extra)
            if found is None:
                return
            store_watermark(asset_event.asset, *found)
        except Exception:
            log.exception("astro-xdeps could not store a pull watermark; the event may be pulled again")


pull_listener = PullWatermarkListener()

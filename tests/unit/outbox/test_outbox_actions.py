"""The typed outbox actions: the stored JSON is the one earlier versions wrote, and it delivers."""

from __future__ import annotations

import json
import time

import pytest
import responses
import sqlalchemy as sa
from responses import matchers

from astro_xdeps.outbox import ASSET_EVENT, DAG_RUN, DELIVERED, Outbox
from astro_xdeps.outbox.actions import ACTIONS, AssetEventAction, TriggerDagRunAction
from astro_xdeps.outbox.worker import DrainStats
from tests.unit.outbox import test_delivery_worker as dw
from tests.unit.outbox.test_delivery_worker import created_clients, make_worker, outbox

__all__ = ["created_clients", "make_worker", "outbox"]  # fixtures used by name

# Payloads exactly as the previous version stored them (SQLAlchemy's JSON column: json.dumps).
OLD_ASSET_EVENT = (
    '{"uri": "s3://sales/orders", "extra": {"rows": 3, "xdeps_event_id": "e1", "xdeps": '
    '{"event_id": "e1", "hops": 1, "route": "default"}}, "partition_key": null, "event_id": "e1"}'
)
OLD_DAG_RUN = (
    '{"dag_id": "consumer", "dag_run_id": "xdeps__rule__abc", "conf": {"why": "upstream"}, "note": null}'
)


def store_raw(outbox: Outbox, kind: str, payload_json: str, key: str) -> int:
    """Insert a row as an earlier version left it: the payload column holds exactly this text."""
    now = time.time()
    with outbox.write_engine.begin() as conn:
        conn.execute(
            sa.text(
                f"INSERT INTO {outbox.table_name} (kind, target, payload, idempotency_key, state, attempts, "
                "created_at, next_attempt_at, updated_at) "
                "VALUES (:kind, 'down', :payload, :key, 'pending', 0, :now, :now, :now)"
            ),
            {"kind": kind, "payload": payload_json, "key": key, "now": now},
        )
        return conn.execute(
            sa.text(f"SELECT id FROM {outbox.table_name} WHERE idempotency_key = :key"), {"key": key}
        ).scalar_one()


def test_actions_store_the_same_json_as_before() -> None:
    extra = {"rows": 3, "xdeps_event_id": "e1", "xdeps": {"event_id": "e1", "hops": 1, "route": "default"}}
    asset = AssetEventAction(uri="s3://sales/orders", event_id="e1", extra=extra).to_item("down")
    run = TriggerDagRunAction("consumer", "xdeps__rule__abc", {"why": "upstream"}).to_item("down")
    assert json.dumps(asset.payload) == OLD_ASSET_EVENT
    assert json.dumps(run.payload) == OLD_DAG_RUN
    assert (asset.kind, asset.idempotency_key) == (ASSET_EVENT, "e1:s3://sales/orders")
    assert (run.kind, run.idempotency_key) == (DAG_RUN, "xdeps__rule__abc")


@pytest.mark.parametrize(
    "action",
    [
        AssetEventAction(uri="s3://a", event_id="e1", extra={"k": [1]}, partition_key="2026-01-01"),
        TriggerDagRunAction("consumer", "run-1", conf={"a": 1}, note="why"),
    ],
)
def test_from_item_reads_back_what_to_item_wrote(action: AssetEventAction | TriggerDagRunAction) -> None:
    item = action.to_item("down")
    assert ACTIONS[item.kind].from_item(item) == action


def test_a_long_uri_is_hashed_in_the_key_not_in_the_payload() -> None:
    uri = "s3://bucket/" + "p" * 1400
    item = AssetEventAction(uri=uri, event_id="e1").to_item("down")
    assert len(item.idempotency_key) <= 500 and item.idempotency_key.startswith("e1:#sha256:")
    assert item.payload["uri"] == uri


def test_an_asset_event_stored_by_the_previous_version_is_delivered(
    rsps: responses.RequestsMock, outbox: Outbox, make_worker
) -> None:
    dw.register_asset(rsps)
    sent_extra = {
        "rows": 3,
        "xdeps_event_id": "e1",
        "xdeps": {"event_id": "e1", "hops": 1, "route": "default"},
    }
    rsps.post(
        dw.events_url(),
        json={"id": 41},
        match=[matchers.json_params_matcher({"asset_id": dw.ASSET_ID, "extra": sent_extra})],
    )
    item_id = store_raw(outbox, ASSET_EVENT, OLD_ASSET_EVENT, "e1:s3://sales/orders")

    assert make_worker().deliver_due() == DrainStats(delivered=1)
    assert (dw.get(outbox, item_id).state, dw.get(outbox, item_id).result) == (DELIVERED, {"event_id": 41})


def test_a_dag_run_stored_by_the_previous_version_is_delivered(
    rsps: responses.RequestsMock, outbox: Outbox, make_worker
) -> None:
    body = {"dag_run_id": "xdeps__rule__abc", "conf": {"why": "upstream"}, "logical_date": None}
    rsps.post(
        f"{dw.BASE}/api/v2/dags/consumer/dagRuns",
        json={"dag_run_id": "xdeps__rule__abc"},
        match=[matchers.json_params_matcher(body)],
    )
    item_id = store_raw(outbox, DAG_RUN, OLD_DAG_RUN, "xdeps__rule__abc")

    assert make_worker().deliver_due() == DrainStats(delivered=1)
    assert dw.get(outbox, item_id).result == {"dag_run_id": "xdeps__rule__abc", "created": True}


def test_an_item_of_an_unknown_kind_is_dead_not_retried_forever(
    rsps: responses.RequestsMock, outbox: Outbox, make_worker
) -> None:
    item_id = store_raw(outbox, "webhook", '{"url": "https://x"}', "k1")
    assert make_worker().deliver_due() == DrainStats(dead=1)
    assert "Unknown outbox item kind 'webhook'" in dw.get(outbox, item_id).last_error

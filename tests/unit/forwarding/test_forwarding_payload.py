"""What a forwarded asset event carries: the original extra, a stable id, provenance; loop checks."""

from __future__ import annotations

import copy
import json

import pytest

from astro_xdeps.forwarding.payload import (
    EVENT_ID_KEY,
    PROVENANCE_KEY,
    SourceEvent,
    forwarded_extra,
    may_forward,
    new_event_id,
    outbox_item,
)
from astro_xdeps.forwarding.routes import Destination
from astro_xdeps.outbox.models import ASSET_EVENT

EVENT = SourceEvent(
    uri="s3://sales/orders",
    name="orders",
    extra={"rows": 42, "path": "s3://sales/orders/2024-06-01.parquet", "nested": {"a": [1, 2]}},
    dag_id="load_orders",
    task_id="write",
    run_id="scheduled__2024-06-01",
    map_index=3,
    partition_key="2024-06-01",
)


def test_constants_match_the_documented_wire_format() -> None:
    assert (EVENT_ID_KEY, PROVENANCE_KEY, ASSET_EVENT) == ("xdeps_event_id", "xdeps", "asset_event")


def test_forwarded_extra_keeps_original_keys_and_adds_id_and_provenance() -> None:
    extra = forwarded_extra(EVENT, event_id="e1", deployment="upstream", route="sales")
    assert extra == {
        "rows": 42,
        "path": "s3://sales/orders/2024-06-01.parquet",
        "nested": {"a": [1, 2]},
        "xdeps_event_id": "e1",
        "xdeps": {
            "event_id": "e1",
            "hops": 1,
            "route": "sales",
            "source": {
                "deployment": "upstream",
                "uri": "s3://sales/orders",
                "name": "orders",
                "dag_id": "load_orders",
                "task_id": "write",
                "run_id": "scheduled__2024-06-01",
                "map_index": 3,
                "partition_key": "2024-06-01",
                "extra": {
                    "rows": 42,
                    "path": "s3://sales/orders/2024-06-01.parquet",
                    "nested": {"a": [1, 2]},
                },
            },
        },
    }
    json.dumps(extra)  # what the worker sends must be JSON


def test_forwarded_extra_of_a_bare_event() -> None:
    """Airflow 2 / 3.0 hooks give the asset only: provenance still has every key, as None."""
    extra = forwarded_extra(SourceEvent(uri="s3://x"), event_id="e", deployment="d", route="default")
    assert extra == {
        "xdeps_event_id": "e",
        "xdeps": {
            "event_id": "e",
            "hops": 1,
            "route": "default",
            "source": {
                "deployment": "d",
                "uri": "s3://x",
                "name": None,
                "dag_id": None,
                "task_id": None,
                "run_id": None,
                "map_index": None,
                "partition_key": None,
                "extra": {},
            },
        },
    }


def test_drops_from_rest_api_and_an_incoming_event_id() -> None:
    event = SourceEvent(uri="s3://x", extra={"from_rest_api": True, "xdeps_event_id": "old", "k": "v"})
    extra = forwarded_extra(event, event_id="new", deployment="d", route="r")
    assert "from_rest_api" not in extra
    assert extra["xdeps_event_id"] == "new"
    assert extra["k"] == "v"
    assert extra["xdeps"]["source"]["extra"] == {"k": "v"}


def test_does_not_modify_the_source_event() -> None:
    event = SourceEvent(uri="s3://x", extra={"from_rest_api": True, "xdeps": {"hops": 1}, "k": [1]})
    before = copy.deepcopy(event.extra)
    forwarded_extra(event, event_id="e", deployment="d", route="r")
    assert event.extra == before


def test_original_keys_that_collide_with_ours_are_overwritten_by_ours() -> None:
    event = SourceEvent(uri="s3://x", extra={"xdeps_event_id": "spoofed"})
    assert forwarded_extra(event, event_id="real", deployment="d", route="r")["xdeps_event_id"] == "real"


# -- received events and hops --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "received"),
    [
        ({}, False),
        ({"from_rest_api": False}, False),
        ({"from_rest_api": True}, True),
        ({"xdeps": {"hops": 1}}, True),
        ({"xdeps_event_id": "e"}, False),  # the id alone is not our provenance
    ],
)
def test_received(extra: dict, received: bool) -> None:
    assert SourceEvent(uri="s3://x", extra=extra).received is received


@pytest.mark.parametrize(
    ("extra", "hops"),
    [
        ({}, 0),
        ({"from_rest_api": True}, 0),
        ({"xdeps": {"hops": 1}}, 1),
        ({"xdeps": {"hops": "2"}}, 2),
        ({"xdeps": {}}, 0),
        ({"xdeps": "not a dict"}, 0),
    ],
)
def test_hops(extra: dict, hops: int) -> None:
    assert SourceEvent(uri="s3://x", extra=extra).hops == hops


@pytest.mark.parametrize(
    ("hops", "max_hops", "allowed"),
    [(0, 1, True), (1, 1, False), (1, 2, True), (2, 2, False), (5, 2, False), (0, 0, False)],
)
def test_may_forward(hops: int, max_hops: int, allowed: bool) -> None:
    extra = {"xdeps": {"hops": hops}} if hops else {}
    assert may_forward(SourceEvent(uri="s3://x", extra=extra), max_hops=max_hops) is allowed


def test_forwarding_an_already_forwarded_event_nests_the_upstream_provenance() -> None:
    first = forwarded_extra(EVENT, event_id="e1", deployment="dep-a", route="r1")
    # Deployment B received it over the REST API (Airflow adds from_rest_api) and forwards it on.
    arrived = SourceEvent(
        uri="s3://b/orders", name="b_orders", extra={**first, "from_rest_api": True}, dag_id=None
    )
    assert arrived.received and arrived.hops == 1
    second = forwarded_extra(arrived, event_id="e2", deployment="dep-b", route="r2")

    assert second["xdeps_event_id"] == "e2"
    assert second["rows"] == 42  # the original keys travel on
    prov = second["xdeps"]
    assert prov["event_id"] == "e2"
    assert prov["hops"] == 2
    assert prov["route"] == "r2"
    assert prov["source"]["deployment"] == "dep-b"
    assert prov["source"]["uri"] == "s3://b/orders"
    # The source extra is what B's consumers saw, minus Airflow's marker, our id and provenance.
    assert prov["source"]["extra"] == {
        "rows": 42,
        "path": "s3://sales/orders/2024-06-01.parquet",
        "nested": {"a": [1, 2]},
    }
    assert prov["via"] == first["xdeps"]
    assert prov["via"]["source"]["deployment"] == "dep-a"
    assert "via" not in prov["via"]
    assert not may_forward(SourceEvent(uri="s3://c", extra=second), max_hops=2)
    assert may_forward(SourceEvent(uri="s3://c", extra=second), max_hops=3)


def test_no_via_for_a_first_hop() -> None:
    assert "via" not in forwarded_extra(EVENT, event_id="e", deployment="d", route="r")["xdeps"]


def test_non_dict_provenance_is_dropped_and_not_nested() -> None:
    event = SourceEvent(uri="s3://x", extra={"xdeps": "garbage", "k": 1})
    extra = forwarded_extra(event, event_id="e", deployment="d", route="r")
    assert "via" not in extra["xdeps"]
    assert extra["xdeps"]["hops"] == 1
    assert extra["xdeps"]["source"]["extra"] == {"k": 1}


# -- outbox payload ------------------------------------------------------------------------------


def test_outbox_payload_uses_the_destination_uri_and_route() -> None:
    dest = Destination(target="analytics", uri="s3://analytics/orders", route="mapped")
    item = outbox_item(EVENT, dest, event_id="e1", deployment="up")
    assert (item.kind, item.target) == (ASSET_EVENT, "analytics")
    payload = item.payload
    assert payload == {
        "uri": "s3://analytics/orders",
        "extra": forwarded_extra(EVENT, event_id="e1", deployment="up", route="mapped"),
        "partition_key": "2024-06-01",
        "event_id": "e1",
    }
    assert payload["extra"]["xdeps"]["source"]["uri"] == "s3://sales/orders"  # the upstream uri
    json.dumps(payload)


def idempotency_key(event_id: str, dest: Destination) -> str:
    return outbox_item(EVENT, dest, event_id=event_id, deployment="up").idempotency_key


def test_idempotency_key_is_event_and_destination_uri() -> None:
    a = Destination("t", "s3://a", "r")
    assert idempotency_key("e1", a) == "e1:s3://a"
    assert idempotency_key("e1", Destination("t2", "s3://a", "other")) == "e1:s3://a"
    assert idempotency_key("e1", Destination("t", "s3://b", "r")) != idempotency_key("e1", a)


def test_new_event_id_is_unique_hex() -> None:
    ids = {new_event_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)

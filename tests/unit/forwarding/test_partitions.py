"""Partition keys (issue 14): kept by default, mapped or dropped by a route, set by relay actions."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from astro_xdeps.cli.doctor import partitions_check
from astro_xdeps.exceptions import ConfigError
from astro_xdeps.forwarding.payload import SourceEvent, outbox_item
from astro_xdeps.forwarding.routes import destinations, map_partition_key, parse_routes
from astro_xdeps.relay.config import parse_config
from astro_xdeps.relay.rules import plan_actions
from astro_xdeps.state_events import StateEvent

EVENT = SourceEvent(
    uri="s3://sales/daily", dag_id="sales", task_id="load", run_id="r1", partition_key="2026-11-30"
)


def payload_via(route: dict, event: SourceEvent = EVENT) -> dict:
    [dest] = destinations(parse_routes([{"targets": ["down"], **route}]), event.uri, None, received=False)
    return outbox_item(event, dest, event_id="e1", deployment="up").payload


def test_the_key_is_kept_by_default_and_the_original_stays_in_the_provenance() -> None:
    payload = payload_via({})
    assert payload["partition_key"] == "2026-11-30"
    assert payload["extra"]["xdeps"]["source"]["partition_key"] == "2026-11-30"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("eu-{partition_key}", "eu-2026-11-30"),
        ("{dag_id}/{partition_key}", "sales/2026-11-30"),
        ("latest", "latest"),  # a fixed key
        (None, None),  # dropped
    ],
)
def test_a_route_maps_the_key(template: str | None, expected: str | None) -> None:
    payload = payload_via({"partition_key": template})
    assert payload["partition_key"] == expected
    assert payload["extra"]["xdeps"]["source"]["partition_key"] == "2026-11-30"


def test_an_unpartitioned_event_stays_unpartitioned_unless_the_key_is_fixed() -> None:
    plain = SourceEvent(uri="s3://sales/daily", dag_id="sales")
    assert payload_via({"partition_key": "eu-{partition_key}"}, plain)["partition_key"] is None
    assert payload_via({}, plain)["partition_key"] is None
    assert payload_via({"partition_key": "all"}, plain)["partition_key"] == "all"


def test_a_rendering_longer_than_airflow_keeps_is_no_key() -> None:
    assert map_partition_key("{partition_key}{partition_key}", {"partition_key": "x" * 200}) is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{month}", r"unknown template field \{month\}"),
        ("{partition_key:>300}", "unknown template field"),
        ("", "a partition key template"),
        (7, "a partition key template"),
        ("{", "bad template"),
    ],
)
def test_bad_route_templates_are_refused_at_load(value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"routes\[0\]\.partition_key: .*{message}"):
        parse_routes([{"targets": ["down"], "partition_key": value}])


def _relay(partition_key: object) -> object:
    return parse_config(
        {
            "rules": [
                {
                    "name": "publish",
                    "when": {"type": "dag_run.success", "dag_id": "sales"},
                    "then": [
                        {"asset_event": {"target": "down", "uri": "s3://x", "partition_key": partition_key}}
                    ],
                }
            ]
        }
    )


def test_a_relay_action_sets_a_partition_key_from_the_event() -> None:
    rule = _relay("{dag_id}-{run_id}").rules[0]
    event = StateEvent(
        id="e", type="dag_run.success", dag_id="sales", run_id="r7", occurred_at=datetime.now(timezone.utc)
    )
    [planned] = plan_actions(rule, [event])
    assert planned.payload["partition_key"] == "sales-r7"
    no_run = StateEvent(
        id="f", type="dag_run.success", dag_id="sales", occurred_at=datetime.now(timezone.utc)
    )
    [planned] = plan_actions(_relay("{run_id}").rules[0], [no_run])
    assert planned.payload["partition_key"] is None  # blank is no key


@pytest.mark.parametrize(
    ("value", "message"),
    [("", "a non-empty string"), ("{nope}", "unknown template field"), ("x" * 251, "at most 250 characters")],
)
def test_bad_relay_partition_keys_are_refused_at_load(value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _relay(value)


def test_doctor_notes_targets_without_partitions() -> None:
    assert partitions_check("v2", "3.3.2").detail.startswith("partition keys of forwarded events are kept")
    old = partitions_check("v2", "3.1.7")
    assert (
        old.ok
        and "Airflow 3.1.7 has no partition keys" in old.detail
        and "'xdeps_partition_key'" in old.detail
    )
    assert "Airflow 2.10.5 has no partition keys" in partitions_check("v1", "2.10.5").detail

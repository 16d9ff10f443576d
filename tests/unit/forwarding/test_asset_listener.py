"""The asset listener: pure planning, and hook methods that enqueue to the outbox and never raise."""

from __future__ import annotations

import json
import logging
import sys
from types import SimpleNamespace
from typing import Any

import pytest

from astro_xdeps import runtime
from astro_xdeps.forwarding.payload import SourceEvent
from astro_xdeps.forwarding.plan import ForwardingPlan, plan_items
from astro_xdeps.forwarding.routes import Route, default_routes
from astro_xdeps.listeners import assets as listener_module
from astro_xdeps.listeners.assets import (
    AssetForwardingListener,
    asset_listener,
    forward,
    source_event_from_asset_event,
    source_event_from_dataset,
)
from astro_xdeps.outbox import pacing
from astro_xdeps.outbox.models import ASSET_EVENT, NewItem
from astro_xdeps.version_compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_V_3_2_PLUS
from tests.unit.airflow_listeners import airflow_listener_manager

needs_3_2 = pytest.mark.skipif(
    not AIRFLOW_V_3_2_PLUS, reason="on_asset_event_emitted and its AssetEvent are Airflow 3.2+"
)


def make_plan(*routes: Route, enabled: bool = True, max_hops: int = 1) -> ForwardingPlan:
    return ForwardingPlan(
        enabled=enabled,
        routes=routes or tuple(default_routes("xdeps_default")),
        deployment="up",
        max_hops=max_hops,
        reason="test",
    )


def asset_event(uri: str = "s3://sales/orders", *, extra: dict | None = None, name: str | None = "orders"):
    """Airflow 3.2+'s listener AssetEvent (the real class) around a stand-in asset."""
    from airflow.listeners.types import AssetEvent

    return AssetEvent(
        asset=SimpleNamespace(uri=uri, name=name, group="asset", extra={}),
        extra={"rows": 3} if extra is None else extra,
        source_dag_id="producer",
        source_task_id="write",
        source_run_id="manual__1",
        source_map_index=-1,
        source_aliases=[],
        partition_key="2024-06-01",
    )


# -- adapting Airflow's AssetEvent ---------------------------------------------------------------


@needs_3_2
def test_source_event_from_asset_event() -> None:
    event = source_event_from_asset_event(asset_event())
    assert event == SourceEvent(
        uri="s3://sales/orders",
        name="orders",
        extra={"rows": 3},
        dag_id="producer",
        task_id="write",
        run_id="manual__1",
        map_index=-1,
        partition_key="2024-06-01",
    )


@needs_3_2
def test_source_event_copies_extra_and_tolerates_none() -> None:
    raw = asset_event(extra={"k": "v"})
    event = source_event_from_asset_event(raw)
    event.extra["k"] = "changed"
    assert raw.extra == {"k": "v"}
    raw.extra = None
    assert source_event_from_asset_event(raw).extra == {}


def test_source_event_from_an_object_without_name_or_partition_key() -> None:
    raw = SimpleNamespace(
        asset=SimpleNamespace(uri="s3://x"),
        extra={},
        source_dag_id=None,
        source_task_id=None,
        source_run_id=None,
        source_map_index=None,
    )
    event = source_event_from_asset_event(raw)
    assert event.name is None and event.partition_key is None and event.uri == "s3://x"


# -- plan_items (pure) ---------------------------------------------------------------------------

LOCAL = SourceEvent(uri="s3://sales/orders", name="orders", extra={"rows": 3}, dag_id="producer")


def test_plan_items_default_route() -> None:
    [item] = plan_items(LOCAL, make_plan(), event_id="e1")
    assert isinstance(item, NewItem)
    assert item.kind == ASSET_EVENT
    assert item.target == "xdeps_default"
    assert item.idempotency_key == "e1:s3://sales/orders"
    assert item.payload["uri"] == "s3://sales/orders"
    assert item.payload["event_id"] == "e1"
    assert item.payload["extra"]["rows"] == 3
    assert item.payload["extra"]["xdeps_event_id"] == "e1"
    assert item.payload["extra"]["xdeps"]["source"]["deployment"] == "up"
    assert item.payload["extra"]["xdeps"]["route"] == "default"


def test_plan_items_disabled_plan() -> None:
    assert plan_items(LOCAL, make_plan(enabled=False), event_id="e1") == []


def test_plan_items_one_event_many_destinations_share_the_event_id() -> None:
    plan = make_plan(
        Route(name="fan", targets=("a", "b")),
        Route(name="mapped", targets=("a",), uri="s3://analytics/orders"),
        Route(name="other", uri_glob="s3://hr/*", targets=("c",)),
    )
    items = plan_items(LOCAL, plan, event_id="e1")
    assert [(i.target, i.payload["uri"], i.payload["extra"]["xdeps"]["route"]) for i in items] == [
        ("a", "s3://sales/orders", "fan"),
        ("b", "s3://sales/orders", "fan"),
        ("a", "s3://analytics/orders", "mapped"),
    ]
    assert {i.payload["event_id"] for i in items} == {"e1"}
    assert len({(i.target, i.idempotency_key) for i in items}) == 3


@pytest.mark.parametrize(
    "extra",
    [{"from_rest_api": True}, {"xdeps": {"hops": 1}}, {"from_rest_api": True, "xdeps": {"hops": 1}}],
    ids=["from_rest_api", "xdeps", "both"],
)
def test_received_events_are_not_forwarded_by_default(extra: dict) -> None:
    event = SourceEvent(uri="s3://x", extra=extra)
    assert plan_items(event, make_plan(max_hops=5), event_id="e") == []


def test_received_event_forwarded_only_by_a_forward_received_route() -> None:
    plan = make_plan(
        Route(name="local", targets=("a",)),
        Route(name="relay", targets=("b",), forward_received=True),
    )
    event = SourceEvent(uri="s3://x", extra={"from_rest_api": True, "k": 1})
    [item] = plan_items(event, plan, event_id="e")
    assert item.target == "b"
    assert item.payload["extra"] == {
        "k": 1,
        "xdeps_event_id": "e",
        "xdeps": item.payload["extra"]["xdeps"],
    }
    assert item.payload["extra"]["xdeps"]["hops"] == 1


def test_hop_limit_stops_an_already_forwarded_event_even_with_forward_received() -> None:
    relay = Route(name="relay", targets=("b",), forward_received=True)
    event = SourceEvent(uri="s3://x", extra={"from_rest_api": True, "xdeps": {"hops": 1, "event_id": "e0"}})
    assert plan_items(event, make_plan(relay, max_hops=1), event_id="e") == []
    [item] = plan_items(event, make_plan(relay, max_hops=2), event_id="e")
    assert item.payload["extra"]["xdeps"]["hops"] == 2
    assert item.payload["extra"]["xdeps"]["via"] == {"hops": 1, "event_id": "e0"}


def test_max_hops_zero_forwards_nothing() -> None:
    assert plan_items(LOCAL, make_plan(max_hops=0), event_id="e") == []


# -- forward(): real outbox, never raises ---------------------------------------------------------


@pytest.fixture
def forwarding(xdeps_env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Forwarding on (every asset to xdeps_default), SQLite outbox in tmp, no delivery thread."""
    xdeps_env.setenv("AIRFLOW__ASTRO_XDEPS__FORWARD_ASSETS", "true")
    return xdeps_env


def stored() -> list:
    return runtime.get_outbox().list_items()


@pytest.mark.usefixtures("forwarding")
def test_forward_writes_one_item_per_destination_to_the_outbox(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW__ASTRO_XDEPS__ROUTES",
        json.dumps([{"targets": ["a", "b"]}, {"targets": ["a"], "uri": "s3://mapped"}]),
    )
    assert forward(LOCAL) == 3
    items = stored()
    assert [(i.target, i.kind, i.payload["uri"], i.state) for i in items] == [
        ("a", ASSET_EVENT, "s3://sales/orders", "pending"),
        ("b", ASSET_EVENT, "s3://sales/orders", "pending"),
        ("a", ASSET_EVENT, "s3://mapped", "pending"),
    ]
    event_ids = {i.payload["event_id"] for i in items}
    assert len(event_ids) == 1
    assert items[0].payload["extra"]["xdeps"]["source"]["deployment"] == "upstream-test"


@pytest.mark.usefixtures("forwarding")
def test_each_forward_call_gets_a_new_event_id() -> None:
    assert forward(LOCAL) == 1
    assert forward(LOCAL) == 1
    ids = [i.payload["event_id"] for i in stored()]
    assert len(ids) == 2 and ids[0] != ids[1]


@pytest.mark.usefixtures("forwarding")
def test_forward_returns_zero_and_writes_nothing_for_a_received_event() -> None:
    assert forward(SourceEvent(uri="s3://x", extra={"from_rest_api": True})) == 0
    assert stored() == []


def test_forward_with_forwarding_off_writes_nothing(xdeps_env: pytest.MonkeyPatch) -> None:
    assert forward(LOCAL) == 0
    assert stored() == []


@pytest.mark.usefixtures("forwarding")
def test_forward_starts_the_worker_only_after_writing(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(runtime, "ensure_worker", lambda: calls.append(len(stored())))
    forward(SourceEvent(uri="s3://x", extra={"from_rest_api": True}))
    assert calls == []  # nothing enqueued, no worker needed
    forward(LOCAL)
    assert calls == [1]  # the item was committed before the worker was woken


@pytest.mark.usefixtures("forwarding")
def test_forward_holds_the_workers_threads_back_until_it_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    """While the hook runs, this process's delivery threads wait at their checkpoints (pacing)."""
    in_flight: list[int] = []
    monkeypatch.setattr(runtime, "ensure_worker", lambda: in_flight.append(pacing.in_flight()))
    assert forward(LOCAL) == 1
    assert in_flight == [1]
    assert pacing.in_flight() == 0


@pytest.mark.usefixtures("forwarding")
def test_forward_never_raises_when_the_outbox_fails(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(runtime, "get_outbox", broken)
    with caplog.at_level(logging.ERROR, logger=listener_module.__name__):
        assert forward(LOCAL) == 0
    [record] = caplog.records
    assert "could not enqueue the asset event of s3://sales/orders" in record.getMessage()
    assert record.exc_info and "disk on fire" in str(record.exc_info[1])


@pytest.mark.usefixtures("forwarding")
def test_forward_never_raises_when_enqueue_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    class Exploding:
        def enqueue(self, items: Any) -> Any:
            raise OSError("read-only file system")

    monkeypatch.setattr(runtime, "get_outbox", Exploding)
    assert forward(LOCAL) == 0
    assert pacing.in_flight() == 0


def test_forward_never_raises_on_invalid_configuration(xdeps_env: pytest.MonkeyPatch) -> None:
    xdeps_env.setenv("AIRFLOW__ASTRO_XDEPS__FORWARD_ASSETS", "sometimes")
    assert forward(LOCAL) == 0
    xdeps_env.setenv("AIRFLOW__ASTRO_XDEPS__FORWARD_ASSETS", "true")
    xdeps_env.setenv("AIRFLOW__ASTRO_XDEPS__ROUTES", '[{"targets": 3}]')
    assert forward(LOCAL) == 0


@pytest.mark.usefixtures("forwarding")
def test_forward_never_raises_when_the_worker_cannot_start(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def cannot_start() -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(runtime, "ensure_worker", cannot_start)
    with caplog.at_level(logging.ERROR, logger=listener_module.__name__):
        assert forward(LOCAL) == 1  # stored: a later worker or `outbox drain` delivers it
    assert len(stored()) == 1
    [record] = caplog.records
    assert "enqueued the asset event of s3://sales/orders but could not start" in record.getMessage()
    assert "not forwarded" not in record.getMessage()


# -- hook methods --------------------------------------------------------------------------------


@needs_3_2
@pytest.mark.usefixtures("forwarding")
def test_on_asset_event_emitted_enqueues_with_full_provenance() -> None:
    AssetForwardingListener().on_asset_event_emitted(asset_event())
    [item] = stored()
    assert item.target == "xdeps_default"
    assert item.payload["partition_key"] == "2024-06-01"
    source = item.payload["extra"]["xdeps"]["source"]
    assert source == {
        "deployment": "upstream-test",
        "uri": "s3://sales/orders",
        "name": "orders",
        "dag_id": "producer",
        "task_id": "write",
        "run_id": "manual__1",
        "map_index": -1,
        "partition_key": "2024-06-01",
        "extra": {"rows": 3},
    }


@pytest.mark.usefixtures("forwarding")
def test_on_asset_event_emitted_never_raises_on_an_unexpected_object(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger=listener_module.__name__):
        AssetForwardingListener().on_asset_event_emitted(SimpleNamespace(extra={}))
    assert stored() == []
    assert "could not read an asset event" in caplog.text


@needs_3_2
@pytest.mark.usefixtures("forwarding")
def test_on_asset_changed_does_nothing_on_airflow_3_2_plus() -> None:
    AssetForwardingListener().on_asset_changed(SimpleNamespace(uri="s3://x", name="x"))
    assert stored() == []


@pytest.mark.usefixtures("forwarding")
def test_on_asset_changed_forwards_before_3_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listener_module, "AIRFLOW_V_3_2_PLUS", False)
    AssetForwardingListener().on_asset_changed(SimpleNamespace(uri="s3://x", name="x_name"))
    [item] = stored()
    assert item.payload["uri"] == "s3://x"
    assert item.payload["extra"]["xdeps"]["source"]["name"] == "x_name"
    assert item.payload["extra"]["xdeps"]["source"]["dag_id"] is None


TASK_CONTEXT = {
    "AIRFLOW_CTX_DAG_ID": "legacy_producer",
    "AIRFLOW_CTX_TASK_ID": "write",
    "AIRFLOW_CTX_DAG_RUN_ID": "manual__2024-06-01",
}


@pytest.fixture
def in_a_task(forwarding: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The variables Airflow 2 sets in a task's process before its outlets fire on_dataset_changed."""
    for key, value in TASK_CONTEXT.items():
        forwarding.setenv(key, value)
    return forwarding


@pytest.mark.usefixtures("in_a_task")
def test_on_dataset_changed_forwards_with_the_dataset_extra_and_the_task_as_source() -> None:
    AssetForwardingListener().on_dataset_changed(SimpleNamespace(uri="s3://legacy", extra={"team": "x"}))
    [item] = stored()
    assert item.payload["uri"] == "s3://legacy"
    assert item.payload["extra"]["team"] == "x"
    source = item.payload["extra"]["xdeps"]["source"]
    assert (source["dag_id"], source["task_id"], source["run_id"]) == (
        "legacy_producer",
        "write",
        "manual__2024-06-01",
    )
    AssetForwardingListener().on_dataset_changed(SimpleNamespace(uri="s3://no-extra"))
    assert stored()[1].payload["extra"]["xdeps"]["source"]["extra"] == {}


@pytest.mark.usefixtures("forwarding")
def test_on_dataset_changed_outside_a_task_is_a_received_event_and_not_forwarded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Airflow 2's webserver fires the hook for events created over REST, without their extra."""
    monkeypatch.delenv("AIRFLOW_CTX_DAG_ID", raising=False)
    AssetForwardingListener().on_dataset_changed(SimpleNamespace(uri="s3://legacy", extra={}))
    assert stored() == []


def test_source_event_from_dataset_is_pure() -> None:
    dataset = SimpleNamespace(uri="s3://d", extra=None)
    assert source_event_from_dataset(dataset, {}) is None
    event = source_event_from_dataset(dataset, TASK_CONTEXT)
    assert event == SourceEvent(
        uri="s3://d", dag_id="legacy_producer", task_id="write", run_id="manual__2024-06-01"
    )


def test_in_a_task_process_the_item_is_stored_but_no_worker_thread_starts(
    in_a_task: pytest.MonkeyPatch,
) -> None:
    """The task process exits right after the task: the scheduler's worker sends the item.

    LocalExecutor forks task processes from the scheduler, so the command line says "scheduler";
    the marker Airflow passes to on_starting is what tells them apart.
    """
    in_a_task.setenv("AIRFLOW__ASTRO_XDEPS__DELIVERY_WORKER", "true")
    in_a_task.setattr(sys, "argv", ["airflow", "scheduler"])

    class TaskCommandMarker:  # what Airflow 2's `airflow tasks run` passes to on_starting
        pass

    listener = AssetForwardingListener()
    listener.on_starting(TaskCommandMarker())
    assert runtime.in_task_process()
    listener.on_dataset_changed(SimpleNamespace(uri="s3://legacy", extra={}))
    assert len(stored()) == 1
    assert runtime.ensure_worker() is None
    assert runtime._worker is None


@needs_3_2
@pytest.mark.usefixtures("forwarding")
def test_hooks_through_airflows_own_listener_manager() -> None:
    """Registering with Airflow's pluggy specs checks our hook and argument names."""
    manager = airflow_listener_manager()
    manager.add_listener(asset_listener)
    manager.hook.on_asset_event_emitted(asset_event=asset_event("s3://via/pluggy"))
    manager.hook.on_asset_changed(asset=SimpleNamespace(uri="s3://via/pluggy", name="n"))
    assert [i.payload["uri"] for i in stored()] == ["s3://via/pluggy"]  # once, not twice


@pytest.mark.skipif(AIRFLOW_V_3_0_PLUS, reason="on_dataset_changed is the Airflow 2.x hook")
@pytest.mark.usefixtures("forwarding")
def test_on_dataset_changed_through_airflow_2s_listener_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow 2's own specs accept our hooks, and its dataset hook forwards the dataset."""
    from airflow.datasets import Dataset

    manager = airflow_listener_manager()
    manager.add_listener(asset_listener)
    for key, value in TASK_CONTEXT.items():
        monkeypatch.setenv(key, value)
    manager.hook.on_dataset_changed(dataset=Dataset("s3://via/pluggy-2", extra={"team": "x"}))
    [item] = stored()
    assert item.payload["uri"] == "s3://via/pluggy-2"
    assert item.payload["extra"]["team"] == "x"


# -- on_starting ---------------------------------------------------------------------------------


@pytest.fixture
def worker_starts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    started: list[str] = []
    monkeypatch.setattr(runtime, "ensure_worker", lambda: started.append("worker"))
    return started


SCHEDULER_JOB = SimpleNamespace(job_type="SchedulerJob")


@pytest.mark.usefixtures("forwarding")
@pytest.mark.parametrize(
    "argv",
    [
        ["airflow", "tasks", "run", "dag", "task", "run_id"],  # a task process: short-lived
        ["airflow", "triggerer"],
        ["airflow", "dag-processor"],
        ["/venv/bin/pytest", "tests"],
    ],
)
def test_on_starting_ignores_processes_that_are_not_long_running_servers(
    monkeypatch: pytest.MonkeyPatch, worker_starts: list[str], argv: list[str]
) -> None:
    monkeypatch.setattr(sys, "argv", argv)
    AssetForwardingListener().on_starting(SCHEDULER_JOB)
    assert worker_starts == []


@pytest.mark.usefixtures("forwarding")
@pytest.mark.parametrize(
    "argv",
    [["airflow", "scheduler"], ["airflow", "api-server", "--port", "8080"], ["airflow", "webserver"]],
)
@pytest.mark.parametrize("component", [SCHEDULER_JOB, SimpleNamespace(job_type=None), None])
def test_on_starting_starts_the_worker_in_the_scheduler_and_api_server(
    monkeypatch: pytest.MonkeyPatch, worker_starts: list[str], argv: list[str], component: Any
) -> None:
    """The scheduler fires on_starting before its job_type is set: the command line decides."""
    monkeypatch.setattr(sys, "argv", argv)
    AssetForwardingListener().on_starting(component)
    assert worker_starts == ["worker"]


def test_on_starting_does_not_start_the_worker_when_forwarding_is_off(
    xdeps_env: pytest.MonkeyPatch, worker_starts: list[str]
) -> None:
    xdeps_env.setattr(sys, "argv", ["airflow", "scheduler"])
    AssetForwardingListener().on_starting(SCHEDULER_JOB)
    assert worker_starts == []


def test_on_starting_never_raises(xdeps_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    xdeps_env.setattr(sys, "argv", ["airflow", "scheduler"])
    xdeps_env.setenv("AIRFLOW__ASTRO_XDEPS__FORWARD_ASSETS", "sometimes")
    with caplog.at_level(logging.ERROR):
        AssetForwardingListener().on_starting(SCHEDULER_JOB)
    assert "could not start the delivery worker" in caplog.text

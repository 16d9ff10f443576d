"""The dependency graph: built from provenance, routes and rules; health per edge; layout."""

from __future__ import annotations

from types import SimpleNamespace

from astro_xdeps.forwarding.routes import Route
from astro_xdeps.graph.flows import flows_from_items, merge_flows, received_flow
from astro_xdeps.graph.layout import layers, layout
from astro_xdeps.graph.model import Flow, build_graph
from astro_xdeps.relay.config import parse_config


def _item(
    state: str,
    dag: str = "producer",
    target: str = "xdeps_down",
    route: str = "default",
    at: float | None = None,
):
    extra = {
        "xdeps": {
            "route": route,
            "source": {"deployment": "up", "dag_id": dag, "task_id": "t", "uri": "s3://a"},
        }
    }
    return SimpleNamespace(
        kind="asset_event",
        target=target,
        state=state,
        payload={"uri": "s3://a", "extra": extra},
        delivered_at=at,
    )


def _trigger(state: str):
    conf = {
        "xdeps": {
            "rule": "both",
            "events": [{"deployment": "up", "dag_id": "a"}, {"deployment": "up", "dag_id": "b"}],
        }
    }
    return SimpleNamespace(
        kind="dag_run",
        target="xdeps_down",
        state=state,
        payload={"dag_id": "report", "conf": conf},
        delivered_at=None,
    )


def test_items_become_flows_counted_by_state_and_path() -> None:
    flows = flows_from_items(
        [_item("delivered", at=5.0), _item("delivered", at=9.0), _item("pending"), _item("dead", dag="other")]
    )
    by_dag = {f.source_dag: f for f in flows}
    assert (by_dag["producer"].delivered, by_dag["producer"].pending, by_dag["producer"].dead) == (2, 1, 0)
    assert by_dag["producer"].last_delivered_at == 9.0
    assert by_dag["producer"].health == "pending"
    assert by_dag["other"].health == "dead"
    triggers = flows_from_items([_trigger("delivered")])
    assert {(f.source_dag, f.via_kind, f.via, f.target_dag) for f in triggers} == {
        ("a", "rule", "both", "report"),
        ("b", "rule", "both", "report"),
    }


def test_graph_from_flows_colours_each_edge_by_its_worst_health() -> None:
    flows = flows_from_items([_item("delivered", at=1.0), _item("dead", dag="other")])
    g = build_graph(flows)
    assert set(g.nodes) == {"dag:up:producer", "dag:up:other", "asset:s3://a", "deployment:xdeps_down"}
    assert g.edges[("dag:up:producer", "asset:s3://a")].health == "ok"
    assert g.edges[("dag:up:other", "asset:s3://a")].health == "dead"
    # Both flows share the asset -> target edge: it is as bad as the worst of them.
    shared = g.edges[("asset:s3://a", "deployment:xdeps_down")]
    assert shared.health == "dead" and (shared.delivered, shared.dead) == (1, 1)


def test_routes_and_rules_without_traffic_are_drawn_idle_and_used_ones_are_not_repeated() -> None:
    routes = [
        Route(name="default", targets=("xdeps_down",)),
        Route(name="ml", targets=("xdeps_ml",), uri_glob="s3://ml/*"),
    ]
    rules = parse_config(
        {
            "rules": [
                {
                    "name": "recover",
                    "when": {"type": "dag_run.failed", "dag_id": "load"},
                    "then": [{"trigger_dag": {"target": "xdeps_down", "dag_id": "recovery"}}],
                }
            ]
        }
    ).rules
    g = build_graph(
        flows_from_items([_item("delivered", at=1.0)]), routes=routes, rules=rules, deployment="up"
    )
    idle = {(e.source, e.target) for e in g.edges.values() if e.configured}
    assert idle == {
        ("deployment:up", "asset:s3://ml/*"),
        ("asset:s3://ml/*", "deployment:xdeps_ml"),
        ("dag:any deployment:load", "rule:recover"),
        ("rule:recover", "dag:xdeps_down:recovery"),
    }
    assert all(e.health == "idle" for e in g.edges.values() if e.configured)
    assert "asset:*" not in g.nodes  # the default route carried traffic: drawn through its flow
    assert g.edges[("dag:any deployment:load", "rule:recover")].label == "dag_run.failed"


def test_received_events_link_the_sender_to_the_consuming_dags() -> None:
    extra = {"xdeps": {"source": {"deployment": "up", "dag_id": "producer", "task_id": "t"}}}
    flows = merge_flows(
        received_flow(extra, uri="s3://a", deployment="down", consumers=["c1", "c2"], at=3.0)
        + received_flow(extra, uri="s3://a", deployment="down", consumers=["c1", "c2"], at=4.0)
    )
    assert {(f.target_dag, f.delivered, f.last_delivered_at) for f in flows} == {
        ("c1", 2, 4.0),
        ("c2", 2, 4.0),
    }
    assert received_flow({"plain": 1}, uri="s3://a", deployment="down", consumers=[], at=None) == []
    g = build_graph(flows)
    assert g.edges[("asset:s3://a", "dag:down:c1")].health == "ok"


def test_layers_and_layout_do_not_overlap_even_with_a_cycle() -> None:
    flows = [
        Flow("up", "p", None, "asset", "s3://a", "down", delivered=1),
        Flow("down", "c", None, "asset", "s3://b", "up", target_dag="p", delivered=1),
    ]
    g = build_graph(flows)  # dag:up:p -> asset a -> deployment down; dag:down:c -> asset b -> dag:up:p
    col = layers(g)
    assert all(col[s] != col[t] for s, t in g.edges)  # no edge inside one column
    lay = layout(g)
    assert set(lay.boxes) == set(g.nodes)
    boxes = list(lay.boxes.values())
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert a.x + a.w <= b.x or b.x + b.w <= a.x or a.y + a.h <= b.y or b.y + b.h <= a.y
        assert a.x >= 0 and a.x + a.w <= lay.width and a.y >= 0 and a.y + a.h <= lay.height


def test_empty_graph_lays_out_empty() -> None:
    lay = layout(build_graph([]))
    assert lay.boxes == {} and lay.width > 0

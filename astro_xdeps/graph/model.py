"""The dependency graph as data: who feeds whom across deployments, and how healthy each link is. Pure.

Three kinds of input, all plain values:

- :class:`Flow` — observed traffic: items this deployment sent and events it received,
  counted by state (read by :mod:`astro_xdeps.graph.flows`);
- :class:`~astro_xdeps.forwarding.routes.Route` — configured asset forwarding;
- :class:`~astro_xdeps.relay.rules.Rule` — configured relay rules.

The picture reads left to right: upstream deployment/DAG(/task) → asset or relay rule →
downstream deployment (/DAG). A configured route or rule with no observed traffic is drawn too,
as an idle link, so a link that never carried anything is visible. Each edge has a health:
``dead`` (an item gave up), ``pending`` (items waiting), ``ok`` (delivered), ``idle`` (nothing
seen), worst first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from astro_xdeps.forwarding.routes import Route
from astro_xdeps.relay.rules import Rule

HEALTH_ORDER = ("dead", "pending", "ok", "idle")  # worst first
HEALTH_COLOURS = {"dead": "#d62728", "pending": "#e6a700", "ok": "#2ca02c", "idle": "#9e9e9e"}


@dataclass(frozen=True)
class Flow:
    """Observed traffic along one path, with counts by outcome.

    ``via_kind`` is ``"asset"`` (``via`` = the asset's uri where it was produced) or ``"rule"``
    (``via`` = the relay rule). The target is a deployment (for items sent: the connection id
    they go to) and, when known, the DAG there (a triggered DAG, or a DAG scheduled on the asset).
    """

    source_deployment: str | None
    source_dag: str | None
    source_task: str | None
    via_kind: str
    via: str
    target_deployment: str
    target_dag: str | None = None
    target_asset: str | None = None
    route: str | None = None
    pending: int = 0
    delivered: int = 0
    dead: int = 0
    last_delivered_at: float | None = None

    @property
    def health(self) -> str:
        return _health(self.pending, self.delivered, self.dead)

    @property
    def path(self) -> tuple:
        """Everything but the counts: flows with the same path are one link."""
        return (
            self.source_deployment,
            self.source_dag,
            self.source_task,
            self.via_kind,
            self.via,
            self.target_deployment,
            self.target_dag,
            self.target_asset,
            self.route,
        )


@dataclass(frozen=True)
class Node:
    id: str
    kind: str  # "dag" | "deployment" | "asset" | "rule"
    label: str
    detail: str = ""


@dataclass
class Edge:
    source: str
    target: str
    health: str
    label: str = ""
    configured: bool = False  # drawn from configuration only (no traffic seen)
    pending: int = 0
    delivered: int = 0
    dead: int = 0
    last_delivered_at: float | None = None

    def merge(self, other: Edge) -> None:
        self.pending += other.pending
        self.delivered += other.delivered
        self.dead += other.dead
        if other.last_delivered_at and (self.last_delivered_at or 0) < other.last_delivered_at:
            self.last_delivered_at = other.last_delivered_at
        self.configured = self.configured and other.configured
        self.health = worst(self.health, other.health)
        labels = [part for part in (self.label, other.label) if part]
        self.label = ", ".join(dict.fromkeys(", ".join(labels).split(", "))) if labels else ""


@dataclass
class Graph:
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: dict[tuple[str, str], Edge] = field(default_factory=dict)

    def add_node(self, node: Node) -> str:
        self.nodes.setdefault(node.id, node)
        return node.id

    def add_edge(self, edge: Edge) -> None:
        key = (edge.source, edge.target)
        if key in self.edges:
            self.edges[key].merge(edge)
        else:
            self.edges[key] = edge

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes": [n.__dict__ for n in self.nodes.values()],
            "edges": [e.__dict__ for e in self.edges.values()],
        }


def worst(a: str, b: str) -> str:
    return a if HEALTH_ORDER.index(a) <= HEALTH_ORDER.index(b) else b


def _health(pending: int, delivered: int, dead: int) -> str:
    if dead:
        return "dead"
    if pending:
        return "pending"
    if delivered:
        return "ok"
    return "idle"


# -- nodes -----------------------------------------------------------------------------------
def _dag_node(deployment: str | None, dag_id: str | None, task_id: str | None = None) -> Node:
    dep = deployment or "?"
    if not dag_id:
        return Node(f"deployment:{dep}", "deployment", dep, "deployment")
    return Node(f"dag:{dep}:{dag_id}", "dag", f"{dep} / {dag_id}", f"DAG {dag_id} in {dep}")


def _target_node(deployment: str, dag_id: str | None) -> Node:
    if dag_id:
        return Node(
            f"dag:{deployment}:{dag_id}", "dag", f"{deployment} / {dag_id}", f"DAG {dag_id} in {deployment}"
        )
    return Node(f"deployment:{deployment}", "deployment", deployment, "deployment")


def _via_node(kind: str, via: str) -> Node:
    if kind == "rule":
        return Node(f"rule:{via}", "rule", f"rule {via}", "relay rule")
    return Node(f"asset:{via}", "asset", via, "asset")


# -- building --------------------------------------------------------------------------------
def build_graph(
    flows: Iterable[Flow],
    *,
    routes: Sequence[Route] = (),
    rules: Sequence[Rule] = (),
    deployment: str = "this deployment",
) -> Graph:
    """The graph of observed ``flows`` plus configured ``routes`` and ``rules`` of ``deployment``.

    A route or rule that some flow went through (by name) is represented by that flow; one that
    carried nothing yet is drawn as idle, configured edges.
    """
    graph = Graph()
    used_routes: set[str] = set()
    used_rules: set[str] = set()
    for flow in flows:
        if flow.route:
            used_routes.add(flow.route)
        if flow.via_kind == "rule":
            used_rules.add(flow.via)
        _add_flow(graph, flow)
    for route in routes:
        if route.name in used_routes:
            continue
        via = route.uri_glob if route.name_glob == "*" else f"{route.uri_glob} (name {route.name_glob})"
        for target in route.targets:
            _add_flow(
                graph,
                Flow(
                    source_deployment=deployment,
                    source_dag=None,
                    source_task=None,
                    via_kind="asset",
                    via=via,
                    target_deployment=target,
                    target_asset=route.uri,
                    route=route.name,
                ),
                configured=True,
            )
    for rule in rules:
        if rule.name in used_rules:
            continue
        for condition in rule.conditions:
            dep = None if condition.deployment == "*" else condition.deployment
            for action in rule.actions:
                _add_flow(
                    graph,
                    Flow(
                        source_deployment=dep or "any deployment",
                        source_dag=condition.dag_id,
                        source_task=None if condition.task_id == "*" else condition.task_id,
                        via_kind="rule",
                        via=rule.name,
                        target_deployment=action.target,
                        target_dag=action.dag_id if action.kind == "trigger_dag" else None,
                        target_asset=action.uri if action.kind == "asset_event" else None,
                    ),
                    configured=True,
                    label="/".join(condition.types),
                )
    return graph


def _add_flow(graph: Graph, flow: Flow, *, configured: bool = False, label: str = "") -> None:
    source = graph.add_node(_dag_node(flow.source_deployment, flow.source_dag))
    via = graph.add_node(_via_node(flow.via_kind, flow.via))
    target = graph.add_node(_target_node(flow.target_deployment, flow.target_dag))
    counts = {
        "pending": flow.pending,
        "delivered": flow.delivered,
        "dead": flow.dead,
        "last_delivered_at": flow.last_delivered_at,
    }
    health = "idle" if configured else flow.health
    first = label or (f"task {flow.source_task}" if flow.source_task else "")
    second = flow.target_asset if flow.target_asset and flow.target_asset != flow.via else ""
    if flow.route and flow.route != "default":
        second = ", ".join(p for p in (f"route {flow.route}", second) if p)
    graph.add_edge(Edge(source, via, health, first, configured, **counts))
    graph.add_edge(Edge(via, target, health, second, configured, **counts))

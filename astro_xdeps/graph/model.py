"""The dependency graph as data: who feeds whom across deployments, and how healthy each link is. Pure.

Three kinds of input, all plain values:

- :class:`Flow` — observed traffic: items this deployment sent (from the provenance in outbox
  payloads) and events it received (from the provenance in asset events' extra), counted by
  state;
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
from dataclasses import dataclass, field, replace
from typing import Any

from astro_xdeps.forwarding.routes import Route
from astro_xdeps.relay.rules import Rule

HEALTH_ORDER = ("dead", "pending", "ok", "idle")  # worst first
HEALTH_COLOURS = {"dead": "#d62728", "pending": "#e6a700", "ok": "#2ca02c", "idle": "#9e9e9e"}

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 230, 46, 170, 22, 16


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


def flows_from_items(items: Iterable[Any]) -> list[Flow]:
    """Aggregate outbox items (anything with kind, target, state, payload, delivered_at) into flows."""
    acc: dict[tuple, Flow] = {}
    for item in items:
        for key in _item_keys(item):
            counts = {"pending": 0, "delivered": 0, "dead": 0}
            counts[item.state] = 1
            flow = Flow(*key, **counts, last_delivered_at=item.delivered_at)
            if key in acc:
                old = acc[key]
                last = max((x for x in (old.last_delivered_at, flow.last_delivered_at) if x), default=None)
                acc[key] = replace(
                    old,
                    pending=old.pending + flow.pending,
                    delivered=old.delivered + flow.delivered,
                    dead=old.dead + flow.dead,
                    last_delivered_at=last,
                )
            else:
                acc[key] = flow
    return list(acc.values())


def _item_keys(item: Any) -> list[tuple]:
    """The flow keys (source dep, dag, task, via kind, via, target dep, dag, asset, route) of an item."""
    payload = item.payload or {}
    if item.kind == "dag_run":
        prov = (payload.get("conf") or {}).get("xdeps") or {}
        rule = prov.get("rule") or "?"
        events = [e for e in prov.get("events") or [] if isinstance(e, dict)] or [{}]
        return [
            (
                e.get("deployment"),
                e.get("dag_id"),
                e.get("task_id"),
                "rule",
                rule,
                item.target,
                payload.get("dag_id"),
                None,
                None,
            )
            for e in events
        ]
    prov = (payload.get("extra") or {}).get("xdeps") or {}
    uri = payload.get("uri") or "?"
    if "rule" in prov:
        events = [e for e in prov.get("events") or [] if isinstance(e, dict)] or [{}]
        return [
            (
                e.get("deployment"),
                e.get("dag_id"),
                e.get("task_id"),
                "rule",
                prov["rule"],
                item.target,
                None,
                uri,
                None,
            )
            for e in events
        ]
    source = prov.get("source") or {}
    return [
        (
            source.get("deployment"),
            source.get("dag_id"),
            source.get("task_id"),
            "asset",
            source.get("uri") or uri,
            item.target,
            None,
            uri,
            prov.get("route"),
        )
    ]


def received_flow(
    extra: dict[str, Any], *, uri: str, deployment: str, consumers: Sequence[str], at: float | None
) -> list[Flow]:
    """Flows of one asset event this deployment received (its extra carries our provenance)."""
    prov = extra.get("xdeps") if isinstance(extra, dict) else None
    if not isinstance(prov, dict):
        return []
    source = prov.get("source") or {}
    common = {
        "source_deployment": source.get("deployment"),
        "source_dag": source.get("dag_id"),
        "source_task": source.get("task_id"),
        "via_kind": "asset",
        "via": uri,
        "target_deployment": deployment,
        "delivered": 1,
        "last_delivered_at": at,
    }
    if "rule" in prov:
        events = [e for e in prov.get("events") or [] if isinstance(e, dict)] or [{}]
        first = events[-1]
        common.update(
            source_deployment=first.get("deployment"),
            source_dag=first.get("dag_id"),
            source_task=first.get("task_id"),
        )
    return [Flow(**common, target_dag=dag) for dag in consumers] or [Flow(**common)]


def merge_flows(flows: Iterable[Flow]) -> list[Flow]:
    """Sum flows with the same path (e.g. many received events of one asset)."""
    acc: dict[tuple, Flow] = {}
    for f in flows:
        key = (
            f.source_deployment,
            f.source_dag,
            f.source_task,
            f.via_kind,
            f.via,
            f.target_deployment,
            f.target_dag,
            f.target_asset,
            f.route,
        )
        if key in acc:
            o = acc[key]
            last = max((x for x in (o.last_delivered_at, f.last_delivered_at) if x), default=None)
            acc[key] = replace(
                o,
                pending=o.pending + f.pending,
                delivered=o.delivered + f.delivered,
                dead=o.dead + f.dead,
                last_delivered_at=last,
            )
        else:
            acc[key] = f
    return list(acc.values())


# -- layout ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Box:
    x: float
    y: float
    w: float
    h: float


@dataclass(frozen=True)
class Layout:
    width: float
    height: float
    boxes: dict[str, Box]

    def to_dict(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "boxes": {k: b.__dict__ for k, b in self.boxes.items()},
        }


def layers(graph: Graph) -> dict[str, int]:
    """Each node's column: the longest path reaching it from a node nothing points to.

    Cycles (a deployment that both feeds and is fed by another) are cut where a depth-first walk
    meets a node already on its path, so every node gets a finite layer.
    """
    succ: dict[str, list[str]] = {n: [] for n in graph.nodes}
    indeg = dict.fromkeys(graph.nodes, 0)
    for s, t in graph.edges:
        succ[s].append(t)
        indeg[t] += 1
    # Drop back edges found by DFS so the rest is acyclic.
    state: dict[str, int] = {}
    back: set[tuple[str, str]] = set()
    for root in sorted(graph.nodes, key=lambda n: (indeg[n] > 0, n)):
        if root in state:
            continue
        stack = [(root, iter(succ[root]))]
        state[root] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                back.add((node, nxt))
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(succ[nxt])))
    layer = dict.fromkeys(graph.nodes, 0)
    order = _topo(graph.nodes, [(s, t) for (s, t) in graph.edges if (s, t) not in back])
    for node in order:
        for t in succ[node]:
            if (node, t) not in back:
                layer[t] = max(layer[t], layer[node] + 1)
    return layer


def _topo(nodes: Iterable[str], edges: list[tuple[str, str]]) -> list[str]:
    indeg = dict.fromkeys(nodes, 0)
    succ: dict[str, list[str]] = {n: [] for n in indeg}
    for s, t in edges:
        succ[s].append(t)
        indeg[t] += 1
    ready = sorted(n for n, d in indeg.items() if d == 0)
    out = []
    while ready:
        n = ready.pop(0)
        out.append(n)
        for t in succ[n]:
            indeg[t] -= 1
            if indeg[t] == 0:
                ready.append(t)
    return out


def layout(graph: Graph) -> Layout:
    """Columns by :func:`layers`; within a column, nodes ordered by the mean row of their
    predecessors (one barycentre sweep), so most edges run straight or cross little."""
    col = layers(graph)
    columns: dict[int, list[str]] = {}
    for node in sorted(graph.nodes):
        columns.setdefault(col[node], []).append(node)
    preds: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for s, t in graph.edges:
        preds[t].append(s)
    row: dict[str, float] = {}
    for c in sorted(columns):
        nodes = columns[c]
        if c > 0:

            def key(n: str) -> tuple[float, str]:
                ps = [row[p] for p in preds[n] if p in row]
                return (sum(ps) / len(ps) if ps else float("inf"), n)

            nodes.sort(key=key)
        for i, n in enumerate(nodes):
            row[n] = i
    boxes = {}
    for c, nodes in columns.items():
        for i, n in enumerate(nodes):
            boxes[n] = Box(PAD + c * (NODE_W + GAP_X), PAD + i * (NODE_H + GAP_Y), NODE_W, NODE_H)
    ncols = max(columns, default=-1) + 1
    nrows = max((len(v) for v in columns.values()), default=0)
    width = 2 * PAD + max(0, ncols * NODE_W + (ncols - 1) * GAP_X)
    height = 2 * PAD + max(0, nrows * NODE_H + (nrows - 1) * GAP_Y)
    return Layout(width, height, boxes)

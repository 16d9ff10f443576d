"""The dependency graph as Mermaid, Graphviz DOT and plain text. Pure: a Graph in, a string out.

Mermaid and DOT are for docs and READMEs (GitHub renders Mermaid); edges are coloured by health
like on the page, and idle (configured, nothing seen yet) edges are dashed.
"""

from __future__ import annotations

import datetime as dt

from astro_xdeps.graph.layout import layers
from astro_xdeps.graph.model import HEALTH_COLOURS, Edge, Graph

FORMATS = ("mermaid", "dot", "text")


def render(graph: Graph, fmt: str) -> str:
    if fmt == "mermaid":
        return to_mermaid(graph)
    if fmt == "dot":
        return to_dot(graph)
    if fmt == "text":
        return to_text(graph)
    raise ValueError(f"unknown graph format {fmt!r}; use one of {', '.join(FORMATS)}")


def _ids(graph: Graph) -> dict[str, str]:
    """Short identifiers safe in both languages (node ids hold ':' '/' and uris)."""
    return {node_id: f"n{i}" for i, node_id in enumerate(sorted(graph.nodes))}


def _counts(edge: Edge) -> str:
    parts = [
        f"{n} {k}"
        for k, n in (("delivered", edge.delivered), ("pending", edge.pending), ("dead", edge.dead))
        if n
    ]
    return (
        ", ".join(parts) if parts else ("configured, nothing seen yet" if edge.configured else "nothing seen")
    )


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


_MERMAID_SHAPES = {
    "dag": ('["', '"]'),
    "deployment": ('[["', '"]]'),
    "asset": ('[("', '")]'),
    "rule": ('{{"', '"}}'),
}


def to_mermaid(graph: Graph) -> str:
    ids = _ids(graph)
    lines = ["flowchart LR"]
    for node_id in sorted(graph.nodes):
        node = graph.nodes[node_id]
        left, right = _MERMAID_SHAPES.get(node.kind, ('["', '"]'))
        lines.append(f"  {ids[node_id]}{left}{_mermaid_text(node.label)}{right}")
    edges = sorted(graph.edges.values(), key=lambda e: (e.source, e.target))
    for edge in edges:
        arrow = "-.->" if edge.configured else "-->"
        label = _mermaid_text(", ".join(p for p in (edge.label, _counts(edge)) if p))
        lines.append(f'  {ids[edge.source]} {arrow}|"{label}"| {ids[edge.target]}')
    for i, edge in enumerate(edges):
        lines.append(f"  linkStyle {i} stroke:{HEALTH_COLOURS[edge.health]},stroke-width:2px")
    return "\n".join(lines) + "\n"


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


_DOT_SHAPES = {"dag": "box", "deployment": "box3d", "asset": "cylinder", "rule": "hexagon"}


def to_dot(graph: Graph) -> str:
    ids = _ids(graph)
    lines = [
        "digraph xdeps {",
        "  rankdir=LR;",
        '  node [fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    for node_id in sorted(graph.nodes):
        node = graph.nodes[node_id]
        lines.append(
            f'  {ids[node_id]} [label="{_dot_text(node.label)}", shape={_DOT_SHAPES.get(node.kind, "box")}];'
        )
    for edge in sorted(graph.edges.values(), key=lambda e: (e.source, e.target)):
        label = _dot_text(", ".join(p for p in (edge.label, _counts(edge)) if p))
        style = ", style=dashed" if edge.configured else ""
        lines.append(
            f'  {ids[edge.source]} -> {ids[edge.target]} [label="{label}", color="{HEALTH_COLOURS[edge.health]}"{style}];'
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_text(graph: Graph) -> str:
    """One line per path source → via → target, with health and counts, grouped by source."""
    if not graph.edges:
        return "no dependencies: no routes, no relay rules, and nothing sent or received yet\n"
    col = layers(graph)
    out_edges: dict[str, list[Edge]] = {}
    for edge in graph.edges.values():
        out_edges.setdefault(edge.source, []).append(edge)
    lines = []
    starts = sorted((n for n in graph.nodes if col[n] == 0), key=lambda n: graph.nodes[n].label)
    for start in starts:
        for first in sorted(out_edges.get(start, []), key=lambda e: e.target):
            for second in sorted(out_edges.get(first.target, []), key=lambda e: e.target) or [None]:
                path = [graph.nodes[start].label, graph.nodes[first.target].label]
                edge = first
                if second is not None:
                    path.append(graph.nodes[second.target].label)
                    edge = second
                health = edge.health.upper()
                extra = f"  ({edge.label})" if edge.label else ""
                last = (
                    f", last delivered {dt.datetime.fromtimestamp(edge.last_delivered_at, dt.timezone.utc):%Y-%m-%d %H:%M} UTC"
                    if edge.last_delivered_at
                    else ""
                )
                lines.append(f"{' -> '.join(path)}  [{health}: {_counts(edge)}{last}]{extra}")
    return "\n".join(lines) + "\n"

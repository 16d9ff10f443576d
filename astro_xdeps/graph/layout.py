"""Where each node of the graph is drawn: columns by longest path, rows by one barycentre sweep. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from astro_xdeps.graph.model import Graph

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 230, 46, 170, 22, 16


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

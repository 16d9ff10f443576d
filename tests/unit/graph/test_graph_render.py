"""Mermaid, DOT and text output of the dependency graph."""

from __future__ import annotations

import pytest

from astro_xdeps.graph.model import HEALTH_COLOURS, Flow, build_graph
from astro_xdeps.graph.render import render, to_dot, to_mermaid, to_text


@pytest.fixture
def graph():
    return build_graph(
        [
            Flow(
                "up",
                "producer",
                "t",
                "asset",
                's3://a"b',
                "xdeps_down",
                delivered=3,
                last_delivered_at=86400.0,
            ),
            Flow("up", "flaky", None, "asset", "s3://c", "xdeps_down", dead=1),
        ]
    )


def test_mermaid(graph) -> None:
    text = to_mermaid(graph)
    assert text.startswith("flowchart LR\n")
    assert '[("s3://a#quot;b")]' in text  # quotes escaped, asset drawn as a cylinder
    assert '["up / producer"]' in text
    assert '-->|"task t, 3 delivered"|' in text
    assert f"stroke:{HEALTH_COLOURS['dead']}" in text and f"stroke:{HEALTH_COLOURS['ok']}" in text
    assert text.count("linkStyle") == len(graph.edges)


def test_dot(graph) -> None:
    text = to_dot(graph)
    assert text.startswith("digraph xdeps {") and text.rstrip().endswith("}")
    assert 'label="s3://a\\"b", shape=cylinder' in text
    assert f'color="{HEALTH_COLOURS["dead"]}"' in text


def test_text(graph) -> None:
    lines = to_text(graph).splitlines()
    assert (
        'up / producer -> s3://a"b -> xdeps_down  [OK: 3 delivered, last delivered 1970-01-02 00:00 UTC]'
        in lines
    )
    assert "up / flaky -> s3://c -> xdeps_down  [DEAD: 1 dead]" in lines
    assert to_text(build_graph([])).startswith("no dependencies")


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="use one of mermaid, dot, text"):
        render(build_graph([]), "svg")

"""``astro-xdeps graph``: the dependency graph of this deployment from its config and outbox."""

from __future__ import annotations

import json

import pytest

from astro_xdeps import runtime
from astro_xdeps.cli.main import main
from astro_xdeps.outbox import NewItem, Outbox


@pytest.fixture
def deployment(tmp_path, monkeypatch: pytest.MonkeyPatch):
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    monkeypatch.setenv("AIRFLOW__ASTRO_XDEPS__OUTBOX_URL", url)
    monkeypatch.setenv("AIRFLOW__ASTRO_XDEPS__DEPLOYMENT_NAME", "up")
    monkeypatch.setenv("AIRFLOW__ASTRO_XDEPS__FORWARD_ASSETS", "true")
    monkeypatch.setenv(
        "AIRFLOW__ASTRO_XDEPS__ROUTES",
        json.dumps([{"name": "ml", "match": {"uri": "s3://ml/*"}, "targets": ["xdeps_ml"]}]),
    )
    monkeypatch.delenv("AIRFLOW__ASTRO_XDEPS__RELAY_CONFIG", raising=False)
    runtime.reset()
    with Outbox.from_url(url) as outbox:
        extra = {"xdeps": {"route": "ml", "source": {"deployment": "up", "dag_id": "train", "task_id": "t"}}}
        outbox.enqueue([NewItem("asset_event", "xdeps_ml", {"uri": "s3://ml/model", "extra": extra}, "k1")])
    yield
    runtime.reset()


@pytest.mark.usefixtures("deployment")
def test_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", "--no-received"]) == 0
    out = capsys.readouterr().out
    assert out == "up / train -> s3://ml/model -> xdeps_ml  [PENDING: 1 pending]  (route ml)\n"


@pytest.mark.usefixtures("deployment")
def test_mermaid_and_dot(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", "--format", "mermaid", "--no-received"]) == 0
    mermaid = capsys.readouterr().out
    assert mermaid.startswith("flowchart LR") and "up / train" in mermaid and "#e6a700" in mermaid
    assert main(["graph", "--format", "dot", "--no-received"]) == 0
    assert capsys.readouterr().out.startswith("digraph xdeps {")


@pytest.mark.usefixtures("deployment")
def test_bad_routes_are_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AIRFLOW__ASTRO_XDEPS__ROUTES", "[{}]")
    assert main(["graph"]) == 2
    assert "targets: a non-empty list of connection ids is required" in capsys.readouterr().err


def test_unknown_format_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["graph", "--format", "svg"])
    assert exc.value.code == 2
    assert "invalid choice: 'svg'" in capsys.readouterr().err

"""``astro-xdeps relay check|explain``: validate a rules file, dry-run an event against it."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from astro_xdeps import runtime
from astro_xdeps.cli.main import main
from astro_xdeps.outbox import Outbox
from astro_xdeps.relay.config import load_config
from astro_xdeps.relay.engine import RelayEngine
from astro_xdeps.relay.rules import dag_run_id
from astro_xdeps.state_events import StateEvent

ENV_PREFIX = "AIRFLOW__ASTRO_XDEPS__"

RULES = """\
sources:
  - name: alerts
    secrets_env: [XDEPS_RELAY_SECRET]
rules:
  - name: recover-orders
    when: {type: dag_run.failed, dag_id: "load_orders*"}
    then:
      - trigger_dag: {target: downstream, dag_id: recover_orders, note: "{dag_id} failed"}
  - name: all-extracts
    when_all:
      - {type: dag_run.success, dag_id: extract_a}
      - {type: dag_run.success, dag_id: extract_b}
    within: 6h
    then:
      - trigger_dag: {target: downstream, dag_id: build_report}
      - asset_event: {target: reports, uri: "s3://reports/inputs"}
"""


@pytest.fixture(autouse=True)
def xdeps_env(xdeps_options: Callable[..., None], tmp_path: Path) -> Path:
    """An SQLite outbox in tmp_path, no delivery thread; per-process state reset around the test."""
    return tmp_path / "outbox.db"


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "relay.yaml"
    path.write_text(RULES)
    return path


def outbox_items(path: Path) -> list:
    with Outbox.sqlite(path) as outbox:
        return outbox.list_items()


# --- check ---------------------------------------------------------------------------------------


def test_check_lists_the_rules_of_a_valid_file(rules_file: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["relay", "check", str(rules_file)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"{rules_file}: OK — 1 source(s), 2 rule(s)",
        "  recover-orders: any match -> trigger_dag recover_orders on downstream",
        "  all-extracts: all of 2 within 21600s -> trigger_dag build_report on downstream, "
        "asset_event s3://reports/inputs on reports",
    ]
    assert err == ""


def test_check_a_json_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "relay.json"
    path.write_text(json.dumps({"rules": []}))
    assert main(["relay", "check", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: OK — 0 source(s), 0 rule(s)\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            RULES.replace("dag_id: recover_orders, ", ""),
            "rule 'recover-orders'.then[0].trigger_dag.dag_id: required",
        ),
        (RULES.replace("within: 6h", "within: six hours"), "rule 'all-extracts'.within: expected a duration"),
        (RULES.replace("{dag_id} failed", "{token} failed"), "unknown template field {token}"),
        (
            RULES.replace("secrets_env: [XDEPS_RELAY_SECRET]", "secrets: [whsec_x]"),
            "sources[0].secrets: secrets are never",
        ),
        (
            RULES.replace(
                "\n    then:\n      - trigger_dag: {target: downstream, dag_id: recover",
                "\n   then:\n      - trigger_dag: {target: downstream, dag_id: recover",
            ),
            "line 7, column 4",
        ),
    ],
    ids=["missing-dag-id", "bad-within", "unknown-template", "inline-secret", "yaml-syntax"],
)
def test_check_an_invalid_file_names_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture, text: str, expected: str
) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text(text)
    assert main(["relay", "check", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"{path}: ")
    assert expected in err
    assert "whsec_x" not in err


def test_check_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["relay", "check", str(tmp_path / "nope.yaml")]) == 1
    assert "cannot be read" in capsys.readouterr().err


# --- explain -------------------------------------------------------------------------------------


def explain(rules_file: Path, event: dict | str) -> int:
    text = event if isinstance(event, str) else json.dumps(event)
    return main(["relay", "explain", text, "--config", str(rules_file)])


def test_explain_shows_the_matching_rule_and_the_run_id(
    rules_file: Path, capsys: pytest.CaptureFixture, xdeps_env: Path
) -> None:
    event = {
        "type": "dag_run.failed",
        "dag_id": "load_orders_eu",
        "run_id": "r1",
        "id": "evt-1",
        "deployment": "up",
    }
    assert explain(rules_file, event) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "event: dag_run.failed dag_id=load_orders_eu run_id=r1 deployment=up",
        "rule recover-orders: matches",
        f"  -> trigger recover_orders on downstream as run {dag_run_id('recover-orders', ['alerts/evt-1'])}",
    ]
    assert err == ""
    assert outbox_items(xdeps_env) == []  # a dry run


def test_explain_without_an_id_uses_a_fixed_one(rules_file: Path, capsys: pytest.CaptureFixture) -> None:
    assert explain(rules_file, {"type": "dag_run.failed", "dag_id": "load_orders"}) == 0
    assert dag_run_id("recover-orders", ["alerts/explain"]) in capsys.readouterr().out


def test_explain_shows_the_run_id_of_the_source_given(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "two.yaml"
    path.write_text(RULES.replace("sources:\n", "sources:\n  - {name: ci, auth: bearer, secrets_env: [X]}\n"))
    event = json.dumps({"type": "dag_run.failed", "dag_id": "load_orders", "id": "evt-1"})
    assert main(["relay", "explain", event, "--config", str(path), "--source", "ci"]) == 0
    assert f"as run {dag_run_id('recover-orders', ['ci/evt-1'])}" in capsys.readouterr().out
    assert main(["relay", "explain", event, "--config", str(path)]) == 0
    assert "pass --source" in capsys.readouterr().out  # two sources: the run id depends on which
    assert main(["relay", "explain", event, "--config", str(path), "--source", "nope"]) == 2
    assert "'nope' is not a source" in capsys.readouterr().err


def test_explain_an_event_from_a_file(
    rules_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    event_file = tmp_path / "event.json"
    event_file.write_text(json.dumps({"alertType": "DAG_FAILURE", "dagName": "load_orders", "message": "m"}))
    assert explain(rules_file, f"@{event_file}") == 0
    out = capsys.readouterr().out
    assert "event: dag_run.failed dag_id=load_orders" in out
    assert "rule recover-orders: matches" in out


def test_explain_an_event_no_rule_matches(rules_file: Path, capsys: pytest.CaptureFixture) -> None:
    assert explain(rules_file, {"type": "dag_run.success", "dag_id": "other"}) == 0
    assert capsys.readouterr().out.splitlines()[1:] == ["no rule matches dag_run.success of other"]


def test_explain_a_many_to_one_rule_waiting_then_ready(
    rules_file: Path, capsys: pytest.CaptureFixture, xdeps_env: Path
) -> None:
    b = {"type": "dag_run.success", "dag_id": "extract_b", "id": "evt-b"}
    assert explain(rules_file, b) == 0
    assert (
        "all-extracts: matches condition(s) 2 of 2; still waiting for 1 (window 21600s)"
        in capsys.readouterr().out
    )
    # extract_a succeeded a minute ago and was recorded by the relay.
    a = StateEvent(
        id="evt-a",
        type="dag_run.success",
        dag_id="extract_a",
        occurred_at=datetime.now(timezone.utc) - timedelta(minutes=1),
        source="alerts",
    )
    RelayEngine(load_config(rules_file), runtime.get_outbox()).ingest(a)
    assert explain(rules_file, b) == 0
    out = capsys.readouterr().out
    assert "the others are recorded: it would fire" in out
    assert (
        f"as run {dag_run_id('all-extracts', ['alerts/evt-a', 'alerts/evt-b'])}" in out
    )  # the run ingest will create
    assert "  -> asset event s3://reports/inputs on reports" in out
    assert outbox_items(xdeps_env) == []


@pytest.mark.parametrize("event", ['{"type": "dag_run.failed",', "not json", "", "@/nonexistent/event.json"])
def test_explain_unreadable_event_json_is_a_usage_error(
    rules_file: Path, capsys: pytest.CaptureFixture, event: str
) -> None:
    assert explain(rules_file, event) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "the event is not readable JSON" in err


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({"type": "dag_run.failed"}, "dag_id: missing"),
        ({"type": "nope", "dag_id": "d"}, "type: 'nope' is not an event type"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_explain_an_invalid_event_is_a_usage_error(
    rules_file: Path, capsys: pytest.CaptureFixture, event: object, reason: str
) -> None:
    assert explain(rules_file, json.dumps(event)) == 2
    assert reason in capsys.readouterr().err


def test_explain_with_an_invalid_config_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text("rules: [{name: r}]\n")
    assert explain(path, {"type": "dag_run.failed", "dag_id": "d"}) == 2
    assert f"{path}: rule 'r': give exactly one of 'when'" in capsys.readouterr().err


def test_explain_with_an_unusable_outbox_says_so(
    rules_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv(f"{ENV_PREFIX}OUTBOX_URL", f"sqlite:///{tmp_path / 'missing-folder' / 'outbox.db'}")
    runtime.reset()
    assert explain(rules_file, {"type": "dag_run.failed", "dag_id": "load_orders"}) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("astro-xdeps relay explain: The outbox file's folder")

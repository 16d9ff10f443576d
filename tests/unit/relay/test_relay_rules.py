"""The relay's rules file: validation that names what is wrong, matching, templates and planning."""

from __future__ import annotations

import copy
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from astro_xdeps.exceptions import ConfigError
from astro_xdeps.relay.config import load_config, parse_config, parse_duration
from astro_xdeps.relay.rules import (
    TEMPLATE_FIELDS,
    Action,
    Condition,
    RelayConfig,
    Source,
    dag_run_id,
    event_fields,
    firing_id,
    matching_rules,
    plan_actions,
    render,
)
from astro_xdeps.state_events import StateEvent

T0 = datetime(2026, 1, 31, 12, 0, 0, tzinfo=timezone.utc)
# Airflow's default [scheduler] allowed_run_id_pattern: a triggered run id must match it.
AIRFLOW_RUN_ID = re.compile(r"^[A-Za-z0-9_.~:+-]+$")

VALID: dict[str, Any] = {
    "sources": [
        {
            "name": "astro-alerts",
            "auth": "standard-webhooks",
            "secrets_env": ["XDEPS_RELAY_SECRET", "XDEPS_RELAY_SECRET_PREVIOUS"],
            "deployment": "prod-upstream",
            "tolerance_seconds": 120,
        },
        {"name": "ci", "auth": "bearer", "secrets_conn": "xdeps_relay_bearer"},
    ],
    "rules": [
        {
            "name": "recover-orders",
            "when": {"type": "dag_run.failed", "dag_id": "load_orders*"},
            "then": [
                {
                    "trigger_dag": {
                        "target": "xdeps_downstream",
                        "dag_id": "recover_orders",
                        "conf": {"failed_dag": "{dag_id}", "failed_run": "{run_id}", "n": 3},
                        "note": "{dag_id} failed in {deployment}",
                    }
                }
            ],
        },
        {
            "name": "all-extracts-done",
            "when_all": [
                {"type": "dag_run.success", "dag_id": "extract_a"},
                {"type": "dag_run.success", "dag_id": "extract_b"},
            ],
            "within": "6h",
            "then": [
                {"trigger_dag": {"target": "xdeps_downstream", "dag_id": "build_report"}},
                {
                    "asset_event": {
                        "target": "xdeps_downstream",
                        "uri": "s3://reports/inputs",
                        "extra": {"by": "{rule}"},
                    }
                },
            ],
        },
    ],
    "max_body_bytes": 4096,
}


def config_with(change) -> dict[str, Any]:
    """A deep copy of VALID changed in place by ``change``."""
    data = copy.deepcopy(VALID)
    change(data)
    return data


def refuse(data: Any, **kw: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, **kw)
    return str(info.value)


def event(**fields: Any) -> StateEvent:
    base: dict[str, Any] = {
        "id": "evt-1",
        "type": "dag_run.failed",
        "dag_id": "load_orders",
        "occurred_at": T0,
    }
    return StateEvent(**{**base, **fields})


def rule_of(data: dict[str, Any], name: str):
    return next(r for r in parse_config(data).rules if r.name == name)


def trigger(**body: Any) -> dict[str, Any]:
    return {"trigger_dag": {"target": "down", "dag_id": "x", **body}}


def one_rule(**rule: Any) -> dict[str, Any]:
    return {"rules": [{"name": "r", "when": {"type": "dag_run.failed"}, "then": [trigger()], **rule}]}


# --- a valid file ------------------------------------------------------------------------------


def test_the_documented_example_parses_into_the_model() -> None:
    config = parse_config(VALID)
    assert config.max_body_bytes == 4096
    assert config.sources == (
        Source(
            name="astro-alerts",
            auth="standard-webhooks",
            secrets_env=("XDEPS_RELAY_SECRET", "XDEPS_RELAY_SECRET_PREVIOUS"),
            deployment="prod-upstream",
            tolerance_seconds=120.0,
        ),
        Source(name="ci", auth="bearer", secrets_conn="xdeps_relay_bearer"),
    )
    recover, extracts = config.rules
    assert (recover.all_of, recover.within_seconds) == (False, None)
    assert recover.conditions == (Condition(types=("dag_run.failed",), dag_id="load_orders*"),)
    assert recover.actions[0] == Action(
        kind="trigger_dag",
        target="xdeps_downstream",
        dag_id="recover_orders",
        conf={"failed_dag": "{dag_id}", "failed_run": "{run_id}", "n": 3},
        note="{dag_id} failed in {deployment}",
    )
    assert (extracts.all_of, extracts.within_seconds, len(extracts.conditions)) == (True, 6 * 3600, 2)
    assert [a.kind for a in extracts.actions] == ["trigger_dag", "asset_event"]
    assert extracts.actions[1].uri == "s3://reports/inputs"
    assert {a.target for r in config.rules for a in r.actions} == {"xdeps_downstream"}
    assert config.source("ci") is config.sources[1]
    assert config.source("nope") is None


def test_defaults_for_an_almost_empty_file() -> None:
    config = parse_config({"sources": [{"name": "s", "secrets_env": "ONE_VAR"}]})
    assert config == RelayConfig(
        sources=(Source(name="s", auth="standard-webhooks", secrets_env=("ONE_VAR",)),),
        rules=(),
        max_body_bytes=65536,
    )
    assert config.sources[0].tolerance_seconds == 300.0


def test_a_single_action_and_a_list_of_when_conditions_are_accepted() -> None:
    data = one_rule(
        when=[{"type": "dag_run.failed"}, {"type": ["dag_run.success", "task_instance.*"], "task_id": "t*"}]
    )
    data["rules"][0]["then"] = trigger()
    rule = parse_config(data).rules[0]
    assert len(rule.actions) == 1
    assert rule.conditions[1].types == ("dag_run.success", "task_instance.*")


@pytest.mark.parametrize("size", [256, 10_000_000])
def test_max_body_bytes_bounds_are_inclusive(size: int) -> None:
    assert parse_config({"max_body_bytes": size}).max_body_bytes == size


# --- every error names the source, rule or field -------------------------------------------------


def _set(path: str, value: Any):
    """A change that sets data[path] (``a.0.b`` style) to value."""

    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value

    return change


def _delete(path: str):
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        del node[last]

    return change


INVALID = [
    # unknown fields, at every level
    pytest.param(_set("colour", "red"), ["relay config: unknown field(s) colour", "allowed: max_body_bytes, rules, sources"], id="top-unknown"),
    pytest.param(_set("rules.0.whenn", {}), ["rules[0]: unknown field(s) whenn"], id="rule-unknown"),
    pytest.param(_set("rules.0.when.dag", "x"), ["rule 'recover-orders'.when[0]: unknown field(s) dag"], id="condition-unknown"),
    pytest.param(
        _set("rules.0.then.0.trigger_dag.run_id", "x"),
        ["rule 'recover-orders'.then[0].trigger_dag: unknown field(s) run_id", "allowed: conf, dag_id, note, target"],
        id="trigger-unknown",
    ),
    pytest.param(
        _set("rules.1.then.1.asset_event.partition", "p"),
        ["rule 'all-extracts-done'.then[1].asset_event: unknown field(s) partition"],
        id="asset-unknown",
    ),
    pytest.param(_set("sources.0.secret_env", ["X"]), ["sources[0]: unknown field(s) secret_env"], id="source-unknown"),
    # names
    pytest.param(_delete("rules.1.name"), ["rules[1].name: required"], id="rule-without-name"),
    pytest.param(_set("rules.0.name", "has space"), ["rules[0].name: required; letters, digits"], id="rule-bad-name"),
    pytest.param(_set("rules.0.name", "x" * 101), ["rules[0].name", "at most 100"], id="rule-long-name"),
    pytest.param(_delete("sources.1.name"), ["sources[1].name: required", "/events/<name>"], id="source-without-name"),
    pytest.param(_set("sources.0.name", "a/b"), ["sources[0].name"], id="source-bad-name"),
    # when / when_all / within
    pytest.param(_set("rules.0.when_all", [{}, {}]), ["rule 'recover-orders': give exactly one of 'when'"], id="both-when"),
    pytest.param(_delete("rules.0.when"), ["rule 'recover-orders': give exactly one of 'when'"], id="neither-when"),
    pytest.param(_set("rules.0.when", []), ["rule 'recover-orders'.when: list at least one condition"], id="empty-when"),
    pytest.param(_set("rules.0.within", "1h"), ["rule 'recover-orders'.within: only applies to 'when_all'"], id="within-with-when"),
    pytest.param(
        _set("rules.1.when_all", [{"type": "dag_run.success"}]),
        ["rule 'all-extracts-done'.when_all: list at least two conditions"],
        id="when-all-one",
    ),
    pytest.param(_set("rules.1.when_all", {"type": "dag_run.success"}), ["rule 'all-extracts-done'.when_all: expected a list"], id="when-all-object"),
    pytest.param(_delete("rules.1.within"), ["rule 'all-extracts-done'.within: required with 'when_all'"], id="when-all-no-within"),
    # conditions
    pytest.param(
        _set("rules.0.when.type", "dag_run.sucess"),
        ["rule 'recover-orders'.when[0].type: 'dag_run.sucess' matches no event type", "known: dag_run.success"],
        id="unknown-type",
    ),
    pytest.param(_set("rules.0.when.type", "dag.*"), ["when[0].type: 'dag.*' matches no event type"], id="unknown-type-glob"),
    pytest.param(_set("rules.1.when_all.1.type", []), ["rule 'all-extracts-done'.when_all[1].type: expected an event type"], id="empty-type-list"),
    pytest.param(_set("rules.0.when.type", 3), ["when[0].type: expected an event type"], id="type-number"),
    pytest.param(_set("rules.0.when.dag_id", ""), ["rule 'recover-orders'.when[0].dag_id: expected a non-empty string glob"], id="empty-dag-glob"),
    pytest.param(_set("rules.0.when.task_id", 5), ["when[0].task_id: expected a non-empty string glob"], id="task-glob-number"),
    pytest.param(_set("rules.0.when", "dag_run.failed"), ["rule 'recover-orders'.when[0]: expected an object, got str"], id="condition-string"),
    # actions
    pytest.param(_delete("rules.0.then"), ["rule 'recover-orders'.then: list at least one action"], id="no-then"),
    pytest.param(_set("rules.0.then", []), ["rule 'recover-orders'.then: list at least one action"], id="empty-then"),
    pytest.param(_set("rules.0.then.0", {"run_dag": {}}), ["rule 'recover-orders'.then[0]: an action is one of"], id="unknown-action"),
    pytest.param(
        _set("rules.0.then.0", {"trigger_dag": {"target": "t", "dag_id": "d"}, "asset_event": {"target": "t", "uri": "u"}}),
        ["rule 'recover-orders'.then[0]: an action is one of"],
        id="two-actions-in-one",
    ),
    pytest.param(_set("rules.0.then.0", "trigger_dag"), ["rule 'recover-orders'.then[0]: expected an object"], id="action-string"),
    pytest.param(_set("rules.0.then.0.trigger_dag", ["t"]), ["rule 'recover-orders'.then[0].trigger_dag: expected an object"], id="action-body-list"),
    pytest.param(_delete("rules.0.then.0.trigger_dag.target"), ["rule 'recover-orders'.then[0].trigger_dag.target: required"], id="no-target"),
    pytest.param(_set("rules.0.then.0.trigger_dag.target", ""), ["then[0].trigger_dag.target: required"], id="empty-target"),
    pytest.param(_delete("rules.0.then.0.trigger_dag.dag_id"), ["rule 'recover-orders'.then[0].trigger_dag.dag_id: required"], id="no-dag-id"),
    pytest.param(_delete("rules.1.then.1.asset_event.uri"), ["rule 'all-extracts-done'.then[1].asset_event.uri: required"], id="no-uri"),
    pytest.param(_delete("rules.1.then.1.asset_event.target"), ["rule 'all-extracts-done'.then[1].asset_event.target: required"], id="asset-no-target"),
    pytest.param(_set("rules.0.then.0.trigger_dag.conf", ["a"]), ["then[0].trigger_dag.conf: expected an object"], id="conf-list"),
    pytest.param(_set("rules.0.then.0.trigger_dag.note", 7), ["then[0].trigger_dag.note: expected a str"], id="note-number"),
    pytest.param(_set("rules.1.then.1.asset_event.extra", "x"), ["then[1].asset_event.extra: expected an object"], id="extra-string"),
    # templates
    pytest.param(
        _set("rules.0.then.0.trigger_dag.conf.who", "{token}"),
        ["rule 'recover-orders'.then[0].trigger_dag.conf.who: unknown template field {token}", "known: id, type, dag_id"],
        id="template-token",
    ),
    pytest.param(_set("rules.0.then.0.trigger_dag.note", "by {user}"), ["then[0].trigger_dag.note: unknown template field {user}"], id="template-note"),
    pytest.param(
        _set("rules.1.then.1.asset_event.extra", {"tags": ["ok", {"deep": "{secret}"}]}),
        ["rule 'all-extracts-done'.then[1].asset_event.extra.tags[1].deep: unknown template field {secret}"],
        id="template-nested",
    ),
    pytest.param(_set("rules.0.then.0.trigger_dag.note", "{dag_id.__class__}"), ["unknown template field {dag_id.__class__}"], id="template-attribute"),
    pytest.param(_set("rules.0.then.0.trigger_dag.note", "{}"), ["unknown template field {}"], id="template-positional"),
    pytest.param(_set("rules.0.then.0.trigger_dag.note", "{dag_id"), ["then[0].trigger_dag.note: bad template '{dag_id'"], id="template-unclosed"),
    pytest.param(_set("rules.0.then.0.trigger_dag.note", "{dag_id:d}"), ["then[0].trigger_dag.note: bad template '{dag_id:d}'"], id="template-format-spec"),
    pytest.param(_set("rules.0.then.0.trigger_dag.note", "{dag_id!x}"), ["then[0].trigger_dag.note: bad template '{dag_id!x}'"], id="template-conversion"),
    # sources
    pytest.param(
        _set("sources.0.secrets", ["whsec_abc"]),
        ["sources[0].secrets: secrets are never written in the config file", "secrets_env", "secrets_conn"],
        id="inline-secrets",
    ),
    pytest.param(
        lambda d: d["sources"][0].pop("secrets_env"),
        ["source 'astro-alerts': set secrets_env (env var names) or secrets_conn; a source needs a secret"],
        id="no-secret",
    ),
    pytest.param(_set("sources.0.secrets_env", []), ["source 'astro-alerts': set secrets_env"], id="empty-secret-list"),
    pytest.param(_set("sources.0.secrets_env", ["OK", ""]), ["source 'astro-alerts'.secrets_env: a list of environment variable names"], id="secret-env-empty-name"),
    pytest.param(_set("sources.1.secrets_conn", ""), ["source 'ci'.secrets_conn: a connection id"], id="secret-conn-empty"),
    pytest.param(_set("sources.0.auth", "hmac"), ["source 'astro-alerts'.auth: one of standard-webhooks, bearer, got 'hmac'"], id="bad-auth"),
    pytest.param(_set("sources.0.tolerance_seconds", 0), ["source 'astro-alerts'.tolerance_seconds: a positive number"], id="tolerance-zero"),
    pytest.param(_set("sources.0.tolerance_seconds", True), ["source 'astro-alerts'.tolerance_seconds"], id="tolerance-bool"),
    pytest.param(_set("sources.0.deployment", 3), ["source 'astro-alerts'.deployment: a string"], id="deployment-number"),
    # duplicates and limits
    pytest.param(_set("rules.1.name", "recover-orders"), ["relay config: duplicate rule name(s) recover-orders"], id="duplicate-rule"),
    pytest.param(_set("sources.1.name", "astro-alerts"), ["relay config: duplicate source name(s) astro-alerts"], id="duplicate-source"),
    pytest.param(_set("max_body_bytes", 255), ["max_body_bytes must be an integer between 256 and 10000000"], id="body-too-small"),
    pytest.param(_set("max_body_bytes", 10_000_001), ["max_body_bytes must be an integer between 256 and 10000000"], id="body-too-big"),
    pytest.param(_set("max_body_bytes", "64k"), ["max_body_bytes must be an integer"], id="body-string"),
    pytest.param(_set("max_body_bytes", True), ["max_body_bytes must be an integer"], id="body-bool"),
    # shapes of the containers
    pytest.param(_set("rules", {"name": "r"}), ["relay config: rules: expected a list, got dict"], id="rules-object"),
    pytest.param(_set("sources", "s"), ["relay config: sources: expected a list, got str"], id="sources-string"),
    pytest.param(_set("rules.0", "r"), ["relay config: rules[0]: expected an object, got str"], id="rule-string"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "expected"), INVALID)
def test_each_error_names_where_it_is(change, expected: list[str]) -> None:
    message = refuse(config_with(change))
    assert message.startswith("relay config: ")
    assert message.count("relay config") == 1
    for part in expected:
        assert part in message


@pytest.mark.parametrize("top", [None, [], "rules: []", 3])
def test_the_top_level_must_be_an_object_and_is_named_once(top: Any) -> None:
    message = refuse(top, source="relay.yaml")
    assert message.startswith("relay.yaml: expected an object")
    assert message.count("relay.yaml") == 1


def test_the_source_label_prefixes_every_error() -> None:
    message = refuse(config_with(_set("rules.0.when.type", "nope")), source="/etc/xdeps/relay.yaml")
    assert message.startswith("/etc/xdeps/relay.yaml: rule 'recover-orders'.when[0].type:")


def test_inline_secret_values_are_not_echoed() -> None:
    message = refuse(
        config_with(_set("sources.0.secrets", ["whsec_c2VjcmV0LXZhbHVlLXRoYXQtbXVzdC1ub3QtbGVhaw=="]))
    )
    assert "whsec_" not in message


def test_templates_may_escape_braces_and_use_every_field() -> None:
    note = "{{literal}} " + " ".join(f"{{{name}}}" for name in TEMPLATE_FIELDS)
    data = one_rule(then=[trigger(note=note, conf={"list": ["{dag_id}", 1, None, {"k": "{rule}"}]})])
    assert parse_config(data).rules[0].actions[0].note == note


# --- durations -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        ("6h", 21600),
        ("2d", 172800),
        ("45", 45),
        (" 1.5h ", 5400),
        (1.5, 1.5),
        (600, 600),
    ],
)
def test_durations(value: Any, seconds: float) -> None:
    assert parse_duration(value, "x") == seconds


@pytest.mark.parametrize("value", ["6 hours", "0s", "0", "-1h", "1w", "", "h", -5, 0, True, None, [1]])
def test_bad_durations_name_the_field(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"^rule 'r'\.within: expected a duration like 90s, 30m, 6h or 2d"):
        parse_duration(value, "rule 'r'.within")


def test_a_bad_within_is_reported_for_its_rule() -> None:
    message = refuse(config_with(_set("rules.1.within", "six hours")))
    assert "rule 'all-extracts-done'.within: expected a duration" in message
    assert "'six hours'" in message


# --- files ---------------------------------------------------------------------------------------


def test_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text(
        "sources:\n"
        "  - {name: alerts, secrets_env: [XDEPS_RELAY_SECRET]}\n"
        "rules:\n"
        "  - name: r\n"
        "    when: {type: dag_run.failed}\n"
        "    then: [{trigger_dag: {target: down, dag_id: recover}}]\n"
    )
    config = load_config(path)
    assert [s.name for s in config.sources] == ["alerts"]
    assert config.rules[0].actions[0].dag_id == "recover"


def test_yaml_syntax_errors_carry_the_line_and_the_path(tmp_path: Path) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text("rules:\n  - name: r\n    when: {type: dag_run.failed\n    then: []\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: line ")
    line = int(re.search(r"line (\d+)", message).group(1))
    assert 3 <= line <= 5


def test_yaml_validation_errors_carry_the_path(tmp_path: Path) -> None:
    path = tmp_path / "relay.yml"
    path.write_text(
        "rules:\n  - name: r\n    when: {type: dag_run.failed}\n    then: [{trigger_dag: {target: t}}]\n"
    )
    with pytest.raises(
        ConfigError, match=re.escape(f"{path}: rule 'r'.then[0].trigger_dag.dag_id: required")
    ):
        load_config(path)


def test_json_file(tmp_path: Path) -> None:
    path = tmp_path / "relay.json"
    path.write_text(json.dumps(VALID))
    assert load_config(path) == parse_config(VALID)


def test_json_syntax_errors_carry_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "relay.json"
    path.write_text('{\n  "rules": [,]\n}')
    with pytest.raises(ConfigError, match=re.escape(f"{path}: line 2, column 13")):
        load_config(path)


def test_a_missing_file_says_it_cannot_be_read(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=re.escape(f"{path}: cannot be read")):
        load_config(path)


# --- matching ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "fields", "matches"),
    [
        (Condition(), {}, True),
        (Condition(types=("dag_run.failed",)), {}, True),
        (Condition(types=("dag_run.success",)), {}, False),
        (Condition(types=("dag_run.success", "dag_run.failed")), {}, True),
        (Condition(types=("dag_run.*",)), {}, True),
        (Condition(types=("task_instance.*",)), {}, False),
        (Condition(dag_id="load_*"), {}, True),
        (Condition(dag_id="load_*"), {"dag_id": "unload_orders"}, False),
        (Condition(dag_id="load_*"), {"dag_id": "Load_orders"}, False),  # case-sensitive
        (Condition(dag_id="load_order?"), {}, True),
        (Condition(dag_id="load_[a-n]rders"), {}, False),
        (Condition(task_id="*"), {}, True),  # no task: only the catch-all matches
        (Condition(task_id="extract*"), {}, False),
        (Condition(task_id="extract*"), {"type": "task_instance.failed", "task_id": "extract_eu"}, True),
        (Condition(task_id="extract*"), {"type": "task_instance.failed", "task_id": "load"}, False),
        (Condition(deployment="prod-*"), {}, False),
        (Condition(deployment="prod-*"), {"deployment": "prod-eu"}, True),
        (Condition(deployment="prod-*"), {"deployment": "dev-eu"}, False),
        (
            Condition(types=("dag_run.failed",), dag_id="load_*", deployment="prod-eu"),
            {"deployment": "prod-eu"},
            True,
        ),
        (
            Condition(types=("dag_run.failed",), dag_id="load_*", deployment="prod-eu"),
            {"deployment": "prod-us"},
            False,
        ),
    ],
)
def test_condition_globs(condition: Condition, fields: dict[str, Any], matches: bool) -> None:
    assert condition.matches(event(**fields)) is matches


def test_matching_rules_reports_which_conditions_matched() -> None:
    data = copy.deepcopy(VALID)
    data["rules"].append(
        {
            "name": "any-extract",
            "when_all": [{"dag_id": "extract_*", "type": "dag_run.success"}, {"dag_id": "extract_b"}],
            "within": "1h",
            "then": [trigger()],
        }
    )
    config = parse_config(data)
    found = matching_rules(config, event(type="dag_run.success", dag_id="extract_b"))
    assert [(rule.name, idx) for rule, idx in found] == [("all-extracts-done", [1]), ("any-extract", [0, 1])]
    assert [r.name for r, _ in matching_rules(config, event())] == ["recover-orders"]
    assert matching_rules(config, event(dag_id="unrelated")) == []


# --- templates -----------------------------------------------------------------------------------


def test_event_fields_turn_missing_values_into_empty_strings() -> None:
    assert event_fields(event(), "r") == {
        "id": "evt-1",
        "type": "dag_run.failed",
        "dag_id": "load_orders",
        "run_id": "",
        "task_id": "",
        "deployment": "",
        "occurred_at": "2026-01-31T12:00:00+00:00",
        "message": "",
        "rule": "r",
    }
    assert set(event_fields(event(), "r")) == set(TEMPLATE_FIELDS)


def test_render_substitutes_in_nested_strings_only() -> None:
    fields = event_fields(event(run_id="run-1", deployment="prod", message="boom"), "recover")
    value = {
        "a": "{dag_id}/{run_id}",
        "b": ["{deployment}", 3, None, True, {"c": "{message} by {rule}"}],
        "d": "{{dag_id}} stays",
        "{dag_id}": "keys are not templates",
    }
    assert render(value, fields) == {
        "a": "load_orders/run-1",
        "b": ["prod", 3, None, True, {"c": "boom by recover"}],
        "d": "{dag_id} stays",
        "{dag_id}": "keys are not templates",
    }
    assert value["a"] == "{dag_id}/{run_id}"  # the input is not changed


def test_render_does_not_evaluate_braces_in_event_values() -> None:
    fields = event_fields(event(message="{rule} {0} {dag_id.__class__}"), "r")
    assert render("said: {message}", fields) == "said: {rule} {0} {dag_id.__class__}"


# --- deterministic ids ---------------------------------------------------------------------------


def test_dag_run_id_is_the_same_for_the_same_events_in_any_order() -> None:
    assert (
        dag_run_id("r", ["a", "b", "c"])
        == dag_run_id("r", ["c", "a", "b"])
        == dag_run_id("r", ["b", "c", "a"])
    )
    assert firing_id("r", ["a", "b"]) == firing_id("r", ["b", "a"])


def test_dag_run_id_differs_for_other_events_rules_or_actions() -> None:
    base = dag_run_id("r", ["a", "b"])
    others = {
        dag_run_id("r", ["a", "c"]),
        dag_run_id("r", ["a"]),
        dag_run_id("r", ["a", "b", "c"]),
        dag_run_id("r", ["ab"]),
        dag_run_id("s", ["a", "b"]),
        dag_run_id("r", ["a", "b"], 1),
    }
    assert base not in others
    assert len(others) == 6


def test_dag_run_id_shape() -> None:
    run_id = dag_run_id("recover-orders", ["evt-1"])
    assert re.fullmatch(r"xdeps__recover-orders__[0-9a-f]{20}", run_id)
    assert dag_run_id("recover-orders", ["evt-1"], 2) == run_id + "_2"


@settings(max_examples=150, deadline=None, database=None)
@given(
    rule=st.text(max_size=300),
    event_ids=st.lists(st.text(max_size=300), min_size=1, max_size=5),
    index=st.integers(0, 50),
)
def test_dag_run_ids_only_hold_characters_airflow_accepts(
    rule: str, event_ids: list[str], index: int
) -> None:
    run_id = dag_run_id(rule, event_ids, index)
    assert AIRFLOW_RUN_ID.fullmatch(run_id)
    assert len(run_id) <= 250  # Airflow's ID_LEN
    assert run_id == dag_run_id(rule, list(reversed(event_ids)), index)


# --- planning ------------------------------------------------------------------------------------


def test_plan_trigger_dag_templates_conf_and_note_and_adds_provenance() -> None:
    rule = rule_of(VALID, "recover-orders")
    failed = event(run_id="scheduled__2026-01-31", deployment="prod-eu", attributes={"try_number": 2})
    [planned] = plan_actions(rule, [failed])
    run_id = dag_run_id("recover-orders", ["evt-1"])
    assert (planned.rule, planned.kind, planned.target, planned.idempotency_key) == (
        "recover-orders",
        "dag_run",
        "xdeps_downstream",
        run_id,
    )
    assert planned.action is rule.actions[0]
    assert planned.payload == {
        "dag_id": "recover_orders",
        "dag_run_id": run_id,
        "conf": {
            "failed_dag": "load_orders",
            "failed_run": "scheduled__2026-01-31",
            "n": 3,
            "xdeps": {"rule": "recover-orders", "events": [failed.to_dict()]},
        },
        "note": "load_orders failed in prod-eu",
    }
    json.dumps(planned.payload, allow_nan=False)  # storable as it is


def test_plan_without_note_or_conf() -> None:
    rule = parse_config(one_rule()).rules[0]
    [planned] = plan_actions(rule, [event()])
    assert planned.payload["note"] is None
    assert planned.payload["conf"] == {"xdeps": {"rule": "r", "events": [event().to_dict()]}}


def test_plan_asset_event_carries_a_stable_event_id_and_key() -> None:
    rule = rule_of(VALID, "all-extracts-done")
    a = event(id="A", type="dag_run.success", dag_id="extract_a")
    b = event(id="B", type="dag_run.success", dag_id="extract_b", occurred_at=T0 + timedelta(minutes=5))
    trigger_planned, asset_planned = plan_actions(rule, [a, b])
    assert trigger_planned.payload["dag_run_id"] == dag_run_id("all-extracts-done", ["A", "B"], 0)
    event_id = f"{firing_id('all-extracts-done', ['A', 'B'])}_1"
    provenance = {"rule": "all-extracts-done", "events": [a.to_dict(), b.to_dict()]}
    assert (asset_planned.kind, asset_planned.target) == ("asset_event", "xdeps_downstream")
    assert asset_planned.idempotency_key == f"{event_id}:s3://reports/inputs"
    assert asset_planned.payload == {
        "uri": "s3://reports/inputs",
        "extra": {
            "by": "all-extracts-done",
            "xdeps_event_id": event_id,
            "xdeps": {"event_id": event_id, "hops": 1, **provenance},
        },
        "partition_key": None,
        "event_id": event_id,
    }
    assert trigger_planned.payload["conf"]["xdeps"] == provenance


def test_plan_takes_template_fields_from_the_last_event() -> None:
    data = one_rule(then=[trigger(note="{dag_id} {id}")])
    rule = parse_config(data).rules[0]
    [planned] = plan_actions(rule, [event(id="first", dag_id="a"), event(id="last", dag_id="b")])
    assert planned.payload["note"] == "b last"


def test_plan_is_repeatable_and_leaves_the_rule_unchanged() -> None:
    rule = rule_of(VALID, "all-extracts-done")
    before = copy.deepcopy((dict(rule.actions[0].conf), dict(rule.actions[1].extra)))
    first = plan_actions(rule, [event(id="A"), event(id="B")])
    second = plan_actions(rule, [event(id="B"), event(id="A")][::-1])
    assert [p.payload for p in first] == [p.payload for p in second]
    assert [p.idempotency_key for p in first] == [p.idempotency_key for p in second]
    assert (dict(rule.actions[0].conf), dict(rule.actions[1].extra)) == before


def test_one_to_many_gets_one_key_per_action_and_target() -> None:
    data = one_rule(then=[trigger(target="t1"), trigger(target="t2"), trigger(target="t1", dag_id="y")])
    planned = plan_actions(parse_config(data).rules[0], [event()])
    assert [(p.target, p.payload["dag_id"]) for p in planned] == [("t1", "x"), ("t2", "x"), ("t1", "y")]
    assert len({p.idempotency_key for p in planned}) == 3
    assert [p.idempotency_key for p in planned] == [dag_run_id("r", ["evt-1"], i) for i in range(3)]


def test_different_events_plan_different_keys() -> None:
    rule = rule_of(VALID, "all-extracts-done")
    first = plan_actions(rule, [event(id="A"), event(id="B")])
    second = plan_actions(rule, [event(id="A2"), event(id="B")])
    assert not {p.idempotency_key for p in first} & {p.idempotency_key for p in second}

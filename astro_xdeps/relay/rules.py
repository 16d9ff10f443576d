"""Relay configuration and rules: which upstream states become which actions downstream. Pure.

A relay config file (YAML or JSON)::

    sources:                        # who may post events, and how they prove it
      - name: astro-alerts          # POST /events/astro-alerts
        auth: standard-webhooks     # or "bearer"
        secrets_env: [XDEPS_RELAY_SECRET, XDEPS_RELAY_SECRET_PREVIOUS]   # env vars, for rotation
        # secrets_conn: xdeps_relay_secret   # or an Airflow connection's password
        deployment: prod-upstream   # events from here default to this source deployment
        tolerance_seconds: 300
    rules:
      - name: recover-orders        # one-to-one / one-to-many: any `when` matching event fires
        when: {type: dag_run.failed, dag_id: "load_orders*"}
        then:
          - trigger_dag: {target: xdeps_downstream, dag_id: recover_orders,
                          conf: {failed_dag: "{dag_id}", failed_run: "{run_id}"},
                          note: "{dag_id} failed in {deployment}"}
      - name: all-extracts-done     # many-to-one: fires once when every condition has a match
        when_all:                   #   within the window, then starts over
          - {type: dag_run.success, dag_id: extract_a}
          - {type: dag_run.success, dag_id: extract_b}
        within: 6h
        then:
          - trigger_dag: {target: xdeps_downstream, dag_id: build_report}
          - asset_event: {target: xdeps_downstream, uri: "s3://reports/inputs", extra: {by: "{rule}"},
                          partition_key: "{run_id}"}   # optional (Airflow 3.2+ targets)
      - name: two-of-three-regions  # any-of: fires once when at_least N conditions have a match
        when:
          - {type: dag_run.success, dag_id: sync_eu}
          - {type: dag_run.success, dag_id: sync_us}
          - {type: dag_run.success, dag_id: sync_ap}
        at_least: 2
        within: 2h
        then: [{trigger_dag: {target: xdeps_downstream, dag_id: publish}}]
      - name: page-on-repeated-load-failures   # count: N distinct matching events in the window
        when: {type: dag_run.failed, dag_id: "load_*", count: 3}
        within: 1h
        then: [{trigger_dag: {target: xdeps_ops, dag_id: page_team}}]
      - name: extract-a-by-six      # deadline (absence): the event must happen before each
        deadline:                   #   cron instant in that time zone, else `then` runs
          expect: {type: dag_run.success, dag_id: extract_a}
          cron: "0 6 * * 1-5"
          timezone: Europe/Berlin
          within: 12h               # optional: the window opens 12h before (default: last deadline)
          grace: 60s                # optional: decide this long after the deadline (default 60s)
        then: [{trigger_dag: {target: xdeps_downstream, dag_id: extract_a_fallback}}]
        on_late:                    # optional: once, when it finally happens after a miss
          - trigger_dag: {target: xdeps_downstream, dag_id: extract_a_caught_up}
    max_body_bytes: 65536

Matching: ``type``, ``dag_id``, ``task_id`` and ``deployment`` are globs (``*`` by default;
``type`` may also be a list). A rule with ``within`` keeps state (``relay/state.py``): it fires
when ``at_least`` of its conditions (all of them for ``when_all``, one for ``when``) have each
seen ``count`` distinct events (default 1) inside the window; the events of a firing are then
consumed, and the rule starts over. A deadline rule's ``then`` gets a ``dag_run.missed_deadline``
event (dag_id and task_id of ``expect``, occurred_at the deadline) for its templates, and that
event also goes through every other rule. Templates in ``conf``, ``note`` and ``extra`` substitute
``{field}`` from the event: id, type, dag_id, run_id, task_id, deployment, occurred_at,
message, rule (plain fields only: no format spec or conversion; the longest possible rendering
is capped at load, a rendered note cut to Airflow's 1000 characters). Values of ``conf`` and
``extra`` must be JSON (quote a YAML date). Targets are connection ids named here; nothing in a
payload chooses a URL, host or token.
"""

from __future__ import annotations

import datetime
import fnmatch
import hashlib
import json
import logging
import math
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astro_xdeps.exceptions import ConfigError
from astro_xdeps.outbox.actions import PROVENANCE_KEY, AssetEventAction, TriggerDagRunAction, stamped_extra
from astro_xdeps.outbox.models import MAX_TARGET_CHARS
from astro_xdeps.relay.events import DEADLINE_SOURCE, EVENT_TYPES, MAX_ID_CHARS, MAX_MESSAGE_CHARS, StateEvent
from astro_xdeps.relay.schedule import DeadlineSchedule, check_schedule

TEMPLATE_FIELDS = (
    "id",
    "type",
    "dag_id",
    "run_id",
    "task_id",
    "deployment",
    "occurred_at",
    "message",
    "rule",
)
# The longest value each field can have (events.py limits; occurred_at as isoformat()), so the
# longest rendering of a template is known at load.
TEMPLATE_FIELD_MAX_CHARS = {
    "id": MAX_ID_CHARS,
    "type": max(len(t) for t in EVENT_TYPES),
    "dag_id": MAX_ID_CHARS,
    "run_id": MAX_ID_CHARS,
    "task_id": MAX_ID_CHARS,
    "deployment": MAX_ID_CHARS,
    "occurred_at": len("2026-01-31T12:00:00.000000+00:00"),
    "message": MAX_MESSAGE_CHARS,
    "rule": 100,
}
MAX_RENDERED_CHARS = 10_000  # per template string
MAX_NOTE_CHARS = 1000  # Airflow's dag_run_note.content
MAX_ASSET_URI_CHARS = 1500  # Airflow's asset.uri
MAX_PARTITION_KEY_CHARS = 250  # Airflow's ID_LEN
log = logging.getLogger(__name__)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_RUN_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.~:+-]")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
AUTH_KINDS = ("standard-webhooks", "bearer")


# -- model --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Condition:
    types: tuple[str, ...] = ("*",)
    dag_id: str = "*"
    task_id: str = "*"
    deployment: str = "*"
    count: int = 1  # distinct matching events needed inside the window (stateful rules)

    def matches(self, event: StateEvent) -> bool:
        return (
            any(fnmatch.fnmatchcase(event.type, t) for t in self.types)
            and fnmatch.fnmatchcase(event.dag_id, self.dag_id)
            and fnmatch.fnmatchcase(event.task_id or "", self.task_id)
            and fnmatch.fnmatchcase(event.deployment or "", self.deployment)
        )


@dataclass(frozen=True)
class Action:
    """Trigger a DAG run (``kind="trigger_dag"``) or create an asset event (``"asset_event"``)."""

    kind: str
    target: str
    dag_id: str | None = None
    uri: str | None = None
    conf: Mapping[str, Any] = field(default_factory=dict)
    note: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    partition_key: str | None = None  # asset_event: a template of the event's fields (Airflow 3.2+)


@dataclass(frozen=True)
class Rule:
    name: str
    conditions: tuple[Condition, ...]
    actions: tuple[Action, ...]
    all_of: bool = False
    within_seconds: float | None = None
    at_least: int | None = None  # conditions that must be satisfied; None: all (when_all) or one
    deadline: DeadlineSchedule | None = None  # a deadline rule: conditions == (expect,)
    late_actions: tuple[Action, ...] = ()  # deadline rules: when the event comes after a miss

    @property
    def stateful(self) -> bool:
        """Whether firing depends on earlier events (a window in ``RelayState``)."""
        return self.within_seconds is not None and self.deadline is None

    @property
    def required(self) -> int:
        """How many conditions must be satisfied for a stateful rule to fire."""
        if self.at_least is not None:
            return self.at_least
        return len(self.conditions) if self.all_of else 1


@dataclass(frozen=True)
class Source:
    name: str
    auth: str
    secrets_env: tuple[str, ...] = ()
    secrets_conn: str | None = None
    deployment: str | None = None
    tolerance_seconds: float = 300.0


@dataclass(frozen=True)
class RelayConfig:
    sources: tuple[Source, ...]
    rules: tuple[Rule, ...]
    max_body_bytes: int = 65536

    def source(self, name: str) -> Source | None:
        return next((s for s in self.sources if s.name == name), None)

    @property
    def targets(self) -> set[str]:
        return {a.target for r in self.rules for a in (*r.actions, *r.late_actions)}

    @property
    def deadline_rules(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.deadline is not None)


@dataclass(frozen=True)
class PlannedAction:
    """An action made concrete for one firing: what goes into the outbox."""

    rule: str
    action: Action
    kind: str  # outbox kind: "dag_run" | "asset_event"
    target: str
    payload: dict[str, Any]
    idempotency_key: str


# -- parsing ------------------------------------------------------------------------------------
def parse_duration(value: Any, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    m = _DURATION.match(str(value)) if isinstance(value, str) else None
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"{where}: expected a duration like 90s, 30m, 6h or 2d, got {value!r}.")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _expect(obj: Any, kind: type, where: str) -> Any:
    if not isinstance(obj, kind):
        raise ConfigError(
            f"{where}: expected {'an object' if kind is dict else 'a ' + kind.__name__}, got {type(obj).__name__}."
        )
    return obj


def _check_keys(obj: Mapping, allowed: set[str], where: str) -> None:
    unknown = set(obj) - allowed
    if unknown:
        raise ConfigError(
            f"{where}: unknown field(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(allowed))}."
        )


def _glob(obj: Mapping, key: str, where: str) -> str:
    value = obj.get(key, "*")
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}.{key}: expected a non-empty string glob.")
    return value


def _parse_condition(raw: Any, where: str) -> Condition:
    _expect(raw, dict, where)
    _check_keys(raw, {"type", "dag_id", "task_id", "deployment", "count"}, where)
    count = raw.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 1000:
        raise ConfigError(f"{where}.count: an integer from 1 to 1000 (distinct events in the window).")
    types = raw.get("type", "*")
    types = [types] if isinstance(types, str) else types
    if not isinstance(types, list) or not types or not all(isinstance(t, str) for t in types):
        raise ConfigError(f"{where}.type: expected an event type or a list of them.")
    for t in types:
        if not any(fnmatch.fnmatchcase(known, t) for known in EVENT_TYPES):
            raise ConfigError(f"{where}.type: {t!r} matches no event type; known: {', '.join(EVENT_TYPES)}.")
    return Condition(
        types=tuple(types),
        dag_id=_glob(raw, "dag_id", where),
        task_id=_glob(raw, "task_id", where),
        deployment=_glob(raw, "deployment", where),
        count=count,
    )


def _check_template(value: Any, where: str) -> None:
    """Check ``conf``/``extra``/``note`` at load, so that no matching event can fail to render.

    Strings are templates of plain ``{field}``s (no format spec, no conversion: a spec such as
    ``{message:{run_id}}`` takes its width from the event, e.g. a 200 MB padding), and their
    longest possible rendering is capped. Everything else must be JSON: the outbox stores it so.
    """
    if isinstance(value, str):
        try:
            parts = list(string.Formatter().parse(value))
        except ValueError as exc:
            raise ConfigError(
                f"{where}: bad template {value!r} ({exc}); use {{dag_id}}, or {{{{ for a brace."
            ) from None
        longest = 0
        for literal, name, spec, conversion in parts:
            longest += len(literal)
            if name is None:
                continue
            if name not in TEMPLATE_FIELDS:
                raise ConfigError(
                    f"{where}: unknown template field {{{name}}}; known: {', '.join(TEMPLATE_FIELDS)}."
                )
            if spec or conversion:
                raise ConfigError(
                    f"{where}: bad template {_short(value)}: {{{name}}} has a format spec or conversion; "
                    f"templates take plain fields only, such as {{{name}}}."
                )
            longest += TEMPLATE_FIELD_MAX_CHARS[name]
        if longest > MAX_RENDERED_CHARS:
            raise ConfigError(
                f"{where}: template {_short(value)} can render up to {longest} characters; at most "
                f"{MAX_RENDERED_CHARS} are allowed (use fewer or shorter fields, e.g. not {{message}} twice)."
            )
    elif isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{where}: keys must be strings, got {k!r}; quote it.")
            _check_template(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_template(v, f"{where}[{i}]")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {value!r} is not a number JSON can hold.")
    elif value is not None and not isinstance(value, (bool, int)):
        hint = (
            f"YAML read {value!r} as a {type(value).__name__}; quote it to keep it a string (e.g. '{value}')"
            if isinstance(value, (datetime.date, datetime.time))
            else f"got a {type(value).__name__}"
        )
        raise ConfigError(
            f"{where}: values must be strings, numbers, booleans, null, lists or objects; {hint}."
        )


def _short(value: str, limit: int = 60) -> str:
    return repr(value[:limit]) + ("..." if len(value) > limit else "")


def _check_action_text(body: Mapping, key: str, where: str, max_chars: int) -> None:
    value = body[key]
    if len(value) > max_chars or _CONTROL.search(value):
        raise ConfigError(
            f"{where}.{key}: at most {max_chars} characters without control characters "
            f"(got {len(value)}: {_short(value)})."
        )


def _parse_action(raw: Any, where: str) -> Action:
    _expect(raw, dict, where)
    if len(raw) != 1 or next(iter(raw)) not in ("trigger_dag", "asset_event"):
        raise ConfigError(
            f"{where}: an action is one of {{trigger_dag: {{...}}}} or {{asset_event: {{...}}}}."
        )
    kind, body = next(iter(raw.items()))
    where = f"{where}.{kind}"
    _expect(body, dict, where)
    if kind == "trigger_dag":
        _check_keys(body, {"target", "dag_id", "conf", "note"}, where)
        required = ("target", "dag_id")
    else:
        _check_keys(body, {"target", "uri", "extra", "partition_key"}, where)
        required = ("target", "uri")
    for key in required:
        if not isinstance(body.get(key), str) or not body[key]:
            raise ConfigError(f"{where}.{key}: required (a non-empty string).")
    # Limits of the outbox and of Airflow, checked now rather than answered with a 500 later.
    _check_action_text(body, "target", where, MAX_TARGET_CHARS)
    if kind == "trigger_dag":
        _check_action_text(body, "dag_id", where, MAX_ID_CHARS)
    else:
        _check_action_text(body, "uri", where, MAX_ASSET_URI_CHARS)
    for key in ("conf", "extra"):
        if key in body:
            _expect(body[key], dict, f"{where}.{key}")
            _check_template(body[key], f"{where}.{key}")
    if "note" in body:
        _expect(body["note"], str, f"{where}.note")
        _check_template(body["note"], f"{where}.note")
    if "partition_key" in body:
        key = body["partition_key"]
        if not isinstance(key, str) or not key.strip():
            raise ConfigError(f"{where}.partition_key: a non-empty string, e.g. '{{run_id}}' or 'eu'.")
        _check_template(key, f"{where}.partition_key")
        if len(key) > MAX_PARTITION_KEY_CHARS or _CONTROL.search(key):
            raise ConfigError(
                f"{where}.partition_key: at most {MAX_PARTITION_KEY_CHARS} characters without control "
                f"characters (Airflow's limit), got {_short(key)}."
            )
    return Action(
        kind=kind,
        target=body["target"],
        dag_id=body.get("dag_id"),
        uri=body.get("uri"),
        conf=body.get("conf", {}),
        note=body.get("note"),
        extra=body.get("extra", {}),
        partition_key=body.get("partition_key"),
    )


def _parse_actions(raw: Any, where: str) -> tuple[Action, ...]:
    actions_raw = [raw] if isinstance(raw, dict) else raw
    if not isinstance(actions_raw, list) or not actions_raw:
        raise ConfigError(f"{where}: list at least one action.")
    return tuple(_parse_action(a, f"{where}[{i}]") for i, a in enumerate(actions_raw))


_LITERAL_ID = re.compile(r"^[\w.-]+$")


def _parse_deadline(raw: Any, where: str) -> tuple[Condition, DeadlineSchedule]:
    _expect(raw, dict, where)
    _check_keys(raw, {"expect", "cron", "timezone", "within", "grace"}, where)
    if "expect" not in raw:
        raise ConfigError(
            f"{where}.expect: required, the event that must happen, e.g. "
            "{type: dag_run.success, dag_id: extract_a}."
        )
    cond = _parse_condition(raw["expect"], f"{where}.expect")
    if cond.count != 1:
        raise ConfigError(f"{where}.expect.count: not used by deadlines (one event meets a deadline).")
    # The missed-deadline event names this DAG (and task): they must be ids, not globs.
    if not _LITERAL_ID.match(cond.dag_id):
        raise ConfigError(
            f"{where}.expect.dag_id: a deadline watches one DAG; give its id, not {cond.dag_id!r}."
        )
    if cond.task_id != "*" and not _LITERAL_ID.match(cond.task_id):
        raise ConfigError(f"{where}.expect.task_id: a task id, not the glob {cond.task_id!r}.")
    if any(t.endswith("missed_deadline") for t in cond.types):
        raise ConfigError(
            f"{where}.expect.type: a deadline expects an upstream state, not a missed deadline."
        )
    check_schedule(raw.get("cron"), raw.get("timezone"), where)
    within = parse_duration(raw["within"], f"{where}.within") if "within" in raw else None
    grace = parse_duration(raw["grace"], f"{where}.grace") if "grace" in raw else 60.0
    schedule = DeadlineSchedule(
        cron=raw["cron"], timezone=raw["timezone"], within_seconds=within, grace_seconds=grace
    )
    return cond, schedule


def _parse_rule(raw: Any, where: str) -> Rule:
    _expect(raw, dict, where)
    _check_keys(raw, {"name", "when", "when_all", "within", "at_least", "deadline", "then", "on_late"}, where)
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{where}.name: required; letters, digits, '_', '.', '-' (at most 100).")
    where = f"rule {name!r}"
    if sum(k in raw for k in ("when", "when_all", "deadline")) != 1:
        raise ConfigError(
            f"{where}: give exactly one of 'when' (any event matching), 'when_all' (all, within a "
            f"window) or 'deadline' (an event that must happen by a time)."
        )
    if "deadline" in raw:
        for key in ("within", "at_least"):
            if key in raw:
                raise ConfigError(f"{where}.{key}: not used by deadline rules (see deadline.within).")
        cond, schedule = _parse_deadline(raw["deadline"], f"{where}.deadline")
        actions = _parse_actions(raw.get("then"), f"{where}.then")
        late = _parse_actions(raw["on_late"], f"{where}.on_late") if "on_late" in raw else ()
        return Rule(name=name, conditions=(cond,), actions=actions, deadline=schedule, late_actions=late)
    if "on_late" in raw:
        raise ConfigError(f"{where}.on_late: only applies to deadline rules.")
    key = "when" if "when" in raw else "when_all"
    if key == "when":
        conds = raw["when"] if isinstance(raw["when"], list) else [raw["when"]]
        if not conds:
            raise ConfigError(f"{where}.when: list at least one condition.")
    else:
        conds = _expect(raw["when_all"], list, f"{where}.when_all")
        if len(conds) < 2:
            raise ConfigError(f"{where}.when_all: list at least two conditions (one is a plain 'when').")
    conditions = tuple(_parse_condition(c, f"{where}.{key}[{i}]") for i, c in enumerate(conds))
    actions = _parse_actions(raw.get("then"), f"{where}.then")
    at_least = raw.get("at_least")
    if at_least is not None and (
        isinstance(at_least, bool) or not isinstance(at_least, int) or not 1 <= at_least <= len(conditions)
    ):
        raise ConfigError(
            f"{where}.at_least: an integer from 1 to {len(conditions)} (the number of conditions)."
        )
    stateful = key == "when_all" or at_least is not None or any(c.count > 1 for c in conditions)
    if stateful and "within" not in raw:
        why = "'when_all'" if key == "when_all" else "'at_least' or 'count'"
        raise ConfigError(f"{where}.within: required with {why}, e.g. 6h.")
    if not stateful and "within" in raw:
        raise ConfigError(f"{where}.within: only applies to 'when_all', 'at_least' or a condition's 'count'.")
    within = parse_duration(raw["within"], f"{where}.within") if stateful else None
    return Rule(
        name=name,
        conditions=conditions,
        actions=actions,
        all_of=key == "when_all",
        within_seconds=within,
        at_least=at_least,
    )


def _parse_source(raw: Any, where: str) -> Source:
    _expect(raw, dict, where)
    _check_keys(
        raw,
        {"name", "auth", "secrets_env", "secrets_conn", "deployment", "tolerance_seconds", "secrets"},
        where,
    )
    if "secrets" in raw:
        raise ConfigError(
            f"{where}.secrets: secrets are never written in the config file. Put them in environment "
            f"variables (secrets_env: [VAR, ...]) or an Airflow connection's password (secrets_conn)."
        )
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"{where}.name: required; letters, digits, '_', '.', '-' (it is the URL path /events/<name>)."
        )
    where = f"source {name!r}"
    auth = raw.get("auth", "standard-webhooks")
    if auth not in AUTH_KINDS:
        raise ConfigError(f"{where}.auth: one of {', '.join(AUTH_KINDS)}, got {auth!r}.")
    env = raw.get("secrets_env", [])
    env = [env] if isinstance(env, str) else env
    if not isinstance(env, list) or not all(isinstance(e, str) and e for e in env):
        raise ConfigError(f"{where}.secrets_env: a list of environment variable names.")
    conn = raw.get("secrets_conn")
    if conn is not None and (not isinstance(conn, str) or not conn):
        raise ConfigError(f"{where}.secrets_conn: a connection id.")
    if not env and not conn:
        raise ConfigError(
            f"{where}: set secrets_env (env var names) or secrets_conn; a source needs a secret."
        )
    tolerance = raw.get("tolerance_seconds", 300)
    if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool) or tolerance <= 0:
        raise ConfigError(f"{where}.tolerance_seconds: a positive number of seconds.")
    deployment = raw.get("deployment")
    if deployment is not None and not isinstance(deployment, str):
        raise ConfigError(f"{where}.deployment: a string.")
    return Source(
        name=name,
        auth=auth,
        secrets_env=tuple(env),
        secrets_conn=conn,
        deployment=deployment,
        tolerance_seconds=float(tolerance),
    )


def parse_config(data: Any, *, source: str = "relay config") -> RelayConfig:
    """Validate a relay config; every error names the source, rule or field it is about."""
    _expect(data, dict, source)
    _check_keys(data, {"sources", "rules", "max_body_bytes"}, source)
    try:
        sources = tuple(
            _parse_source(s, f"sources[{i}]")
            for i, s in enumerate(_expect(data.get("sources", []), list, "sources"))
        )
        rules = tuple(
            _parse_rule(r, f"rules[{i}]") for i, r in enumerate(_expect(data.get("rules", []), list, "rules"))
        )
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    for kind, names in (("source", [s.name for s in sources]), ("rule", [r.name for r in rules])):
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ConfigError(f"{source}: duplicate {kind} name(s) {', '.join(sorted(dupes))}.")
    max_body = data.get("max_body_bytes", 65536)
    if not isinstance(max_body, int) or isinstance(max_body, bool) or not 256 <= max_body <= 10_000_000:
        raise ConfigError(f"{source}: max_body_bytes must be an integer between 256 and 10000000.")
    return RelayConfig(sources=sources, rules=rules, max_body_bytes=max_body)


def load_config(path: str | Path) -> RelayConfig:
    """Read a relay config file (YAML or JSON). YAML errors carry the line number."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror}).") from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: line {exc.lineno}, column {exc.colno}: {exc.msg}.") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            raise ConfigError(f"{path}: {where}{getattr(exc, 'problem', exc)}.") from None
    return parse_config(data, source=str(path))


# -- evaluation (pure) --------------------------------------------------------------------------
def event_fields(event: StateEvent, rule: str) -> dict[str, str]:
    return {
        "id": event.id,
        "type": event.type,
        "dag_id": event.dag_id,
        "run_id": event.run_id or "",
        "task_id": event.task_id or "",
        "deployment": event.deployment or "",
        "occurred_at": event.occurred_at.isoformat(),
        "message": event.message or "",
        "rule": rule,
    }


def render(value: Any, fields: Mapping[str, str]) -> Any:
    """Substitute ``{field}`` in every string of ``value`` (validated at load time)."""
    if isinstance(value, str):
        return value.format_map(fields)
    if isinstance(value, dict):
        return {k: render(v, fields) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, fields) for v in value]
    return value


def firing_id(rule: str, event_ids: Sequence[str]) -> str:
    """A stable id for one firing of ``rule`` by exactly these events."""
    digest = hashlib.sha256("\x1f".join([rule, *sorted(event_ids)]).encode()).hexdigest()
    return digest[:20]


def dag_run_id(rule: str, event_ids: Sequence[str], action_index: int = 0) -> str:
    """Deterministic run id: the same firing always asks for the same run, so 409 means done."""
    safe_rule = _RUN_ID_UNSAFE.sub("_", rule)[:100]
    suffix = f"_{action_index}" if action_index else ""
    return f"xdeps__{safe_rule}__{firing_id(rule, event_ids)}{suffix}"


def plan_actions(
    rule: Rule, events: Sequence[StateEvent], actions: Sequence[Action] | None = None
) -> list[PlannedAction]:
    """The outbox items for one firing of ``rule`` by ``events`` (the last one is the trigger).

    ``actions``: another action list of the rule (a deadline rule's ``on_late``); its events
    must then differ from any firing of ``rule.actions``, so the ids do.
    """
    # Keys, not bare ids: the same id from two sources is two events (see StateEvent.key).
    event_ids = [e.key for e in events]
    fields = event_fields(events[-1], rule.name)
    fid = firing_id(rule.name, event_ids)
    planned = []
    for i, action in enumerate(rule.actions if actions is None else actions):
        provenance = {"rule": rule.name, "events": [e.to_dict() for e in events]}
        if action.kind == "trigger_dag":
            run_id = dag_run_id(rule.name, event_ids, i)
            conf = render(dict(action.conf), fields)
            conf.setdefault(PROVENANCE_KEY, provenance)
            note = render(action.note, fields) if action.note else None
            if note is not None and len(note) > MAX_NOTE_CHARS:
                note = note[: MAX_NOTE_CHARS - 1] + "…"
            item = TriggerDagRunAction(action.dag_id, run_id, conf, note).to_item(action.target)
        else:
            event_id = f"{fid}_{i}"
            extra = stamped_extra(render(dict(action.extra), fields), event_id, {"hops": 1, **provenance})
            partition_key = render(action.partition_key, fields) if action.partition_key else None
            if partition_key is not None and (
                len(partition_key) > MAX_PARTITION_KEY_CHARS or _CONTROL.search(partition_key)
            ):
                # Airflow would refuse the event; sent without a key, and said why.
                log.warning(
                    "Rule %s: partition key %s is not one Airflow keeps (at most %d characters, no "
                    "control characters); the asset event is sent without a partition key",
                    rule.name,
                    _short(partition_key),
                    MAX_PARTITION_KEY_CHARS,
                )
                partition_key = None
            partition_key = partition_key if partition_key and partition_key.strip() else None
            item = AssetEventAction(action.uri, event_id, extra, partition_key).to_item(action.target)
        planned.append(
            PlannedAction(rule.name, action, item.kind, item.target, item.payload, item.idempotency_key)
        )
    return planned


def matching_rules(config: RelayConfig, event: StateEvent) -> list[tuple[Rule, list[int]]]:
    """Rules that ``event`` concerns, with the indexes of the conditions it matches."""
    out = []
    for rule in config.rules:
        if rule.deadline is not None and event.source == DEADLINE_SOURCE:
            continue  # a missed deadline never meets (or is late for) a deadline
        idx = [i for i, c in enumerate(rule.conditions) if c.matches(event)]
        if idx:
            out.append((rule, idx))
    return out

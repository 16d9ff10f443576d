"""The relay's rules: which upstream states become which actions downstream. Pure.

The model (``Condition``, ``Action``, ``Rule``, ``Source``, ``RelayConfig``), which rules an
event concerns (``matching_rules``) and the outbox items a firing makes (``plan_actions``).
Configs are read and validated by ``config.py``; the file format and the matching and template
semantics are described in the README ("State-based triggers: the relay").
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from astro_xdeps.outbox.actions import PROVENANCE_KEY, AssetEventAction, TriggerDagRunAction, stamped_extra
from astro_xdeps.relay.schedule import DeadlineSchedule
from astro_xdeps.state_events import CONTROL_CHARS, DEADLINE_SOURCE, StateEvent, describe

# The fields a template may substitute (``event_fields``).
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
MAX_NOTE_CHARS = 1000  # Airflow's dag_run_note.content
MAX_PARTITION_KEY_CHARS = 250  # Airflow's ID_LEN
log = logging.getLogger(__name__)
_RUN_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.~:+-]")


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
                len(partition_key) > MAX_PARTITION_KEY_CHARS or CONTROL_CHARS.search(partition_key)
            ):
                # Airflow would refuse the event; sent without a key, and said why.
                log.warning(
                    "Rule %s: partition key %s is not one Airflow keeps (at most %d characters, no "
                    "control characters); the asset event is sent without a partition key",
                    rule.name,
                    describe(partition_key),
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

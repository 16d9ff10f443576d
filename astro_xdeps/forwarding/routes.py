"""Routes: which asset events go to which deployments, as what uri.

A route, in JSON or YAML::

    {"name": "bears",                       # optional, shown in provenance and errors
     "match": {"uri": "file://include/*", "name": "bears*"},   # globs; all given must match
     "targets": ["xdeps_analytics", "xdeps_ml"],                # connection ids
     "uri": "s3://analytics/bears",        # optional: the asset's uri downstream
     "partition_key": "eu-{partition_key}", # optional: the partition key downstream (Airflow
                                            #   3.2+): a template of {partition_key}, {dag_id},
                                            #   {task_id}, {run_id}; a fixed key; or null to drop
     "forward_received": false}             # also forward events that arrived over the REST API

Every matching route applies (one event can go to many deployments); an event goes to a
given (target, uri) once. With no routes configured, one route sends every asset to
``[astro_xdeps] conn_id``.
"""

from __future__ import annotations

import fnmatch
import json
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astro_xdeps.exceptions import ConfigError

_ROUTE_KEYS = {"name", "match", "targets", "uri", "forward_received", "partition_key"}
_MATCH_KEYS = {"uri", "name"}
PARTITION_FIELDS = ("partition_key", "dag_id", "task_id", "run_id")
KEEP_PARTITION = "{partition_key}"  # the default: the upstream key as it is
MAX_PARTITION_KEY_CHARS = 250  # Airflow's ID_LEN


@dataclass(frozen=True)
class Route:
    name: str
    targets: tuple[str, ...]
    uri_glob: str = "*"
    name_glob: str = "*"
    uri: str | None = None
    forward_received: bool = False
    partition_key: str | None = KEEP_PARTITION  # template; None drops the key

    def matches(self, uri: str, name: str | None) -> bool:
        return fnmatch.fnmatchcase(uri, self.uri_glob) and fnmatch.fnmatchcase(name or uri, self.name_glob)


@dataclass(frozen=True)
class Destination:
    """One place an event goes: a target connection and the asset's uri there."""

    target: str
    uri: str
    route: str
    partition_key: str | None = KEEP_PARTITION  # the route's template (see map_partition_key)


def check_partition_template(value: object, where: str) -> str | None:
    """Validate a partition key template at load: plain fields of PARTITION_FIELDS, or null."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_PARTITION_KEY_CHARS:
        raise ConfigError(
            f"{where}: a partition key template such as '{{partition_key}}' or 'eu-{{partition_key}}', "
            f"a fixed key, or null to drop the key (at most {MAX_PARTITION_KEY_CHARS} characters)."
        )
    try:
        parts = list(string.Formatter().parse(value))
    except ValueError as exc:
        raise ConfigError(f"{where}: bad template {value!r} ({exc}); use {{{{ for a brace.") from None
    for _, name, spec, conversion in parts:
        if name is not None and (name not in PARTITION_FIELDS or spec or conversion):
            raise ConfigError(
                f"{where}: unknown template field {{{name}}} in {value!r}; known: "
                f"{', '.join('{' + f + '}' for f in PARTITION_FIELDS)} (plain, no format spec)."
            )
    return value


def map_partition_key(template: str | None, fields: dict[str, str | None]) -> str | None:
    """The partition key downstream: ``template`` rendered from the upstream event. Pure.

    No key when the template is None, or when it uses a field the event lacks (an event
    without a partition key stays without one). A rendering longer than Airflow allows, or
    blank, is no key either rather than a refused request.
    """
    if template is None:
        return None
    names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    if any(not fields.get(n) for n in names):
        return None
    key = template.format_map({n: fields[n] for n in names})
    return key if key.strip() and len(key) <= MAX_PARTITION_KEY_CHARS else None


def default_routes(conn_id: str) -> list[Route]:
    return [Route(name="default", targets=(conn_id,))]


def parse_routes(data: Any, *, source: str = "routes") -> list[Route]:
    """Validate route objects; errors name the route (by index) and the field."""
    if isinstance(data, dict) and "routes" in data:
        data = data["routes"]
    if not isinstance(data, list):
        raise ConfigError(f"{source}: expected a list of routes, got {type(data).__name__}.")
    routes = []
    for i, raw in enumerate(data):
        where = f"{source}[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: a route must be an object, got {type(raw).__name__}.")
        unknown = set(raw) - _ROUTE_KEYS
        if unknown:
            raise ConfigError(
                f"{where}: unknown field(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_ROUTE_KEYS))}."
            )
        targets = raw.get("targets")
        if isinstance(targets, str):
            targets = [targets]
        if (
            not isinstance(targets, (list, tuple))
            or not targets
            or not all(isinstance(t, str) and t for t in targets)
        ):
            raise ConfigError(f"{where}.targets: a non-empty list of connection ids is required.")
        match = raw.get("match", {})
        if not isinstance(match, dict) or set(match) - _MATCH_KEYS:
            raise ConfigError(f"{where}.match: an object with 'uri' and/or 'name' globs.")
        for key in ("uri", "name"):
            if key in match and not isinstance(match[key], str):
                raise ConfigError(f"{where}.match.{key}: must be a string glob.")
        if "uri" in raw and not (isinstance(raw["uri"], str) and raw["uri"]):
            raise ConfigError(f"{where}.uri: must be a non-empty string (the asset's uri downstream).")
        if not isinstance(raw.get("forward_received", False), bool):
            raise ConfigError(f"{where}.forward_received: must be true or false.")
        partition = check_partition_template(
            raw.get("partition_key", KEEP_PARTITION), f"{where}.partition_key"
        )
        routes.append(
            Route(
                name=str(raw.get("name") or f"route{i}"),
                targets=tuple(targets),
                uri_glob=match.get("uri", "*"),
                name_glob=match.get("name", "*"),
                uri=raw.get("uri"),
                forward_received=raw.get("forward_received", False),
                partition_key=partition,
            )
        )
    return routes


def load_routes_text(text: str, *, source: str) -> list[Route]:
    """Parse JSON, or YAML when the text is not JSON."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:
            import yaml

            data = yaml.safe_load(text)
        except Exception as exc:
            raise ConfigError(f"{source}: neither valid JSON nor YAML ({exc}).") from None
    return parse_routes(data, source=source)


def load_routes_file(path: str | Path) -> list[Route]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"routes_file {path}: cannot be read ({exc.strerror}).") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"routes_file {path}: cannot be read (not UTF-8 text: {exc.reason}).") from None
    return load_routes_text(text, source=str(path))


def destinations(routes: Sequence[Route], uri: str, name: str | None, *, received: bool) -> list[Destination]:
    """Where an event of asset ``uri`` goes. ``received``: it arrived over the REST API."""
    seen: set[tuple[str, str]] = set()
    out = []
    for route in routes:
        if received and not route.forward_received:
            continue
        if not route.matches(uri, name):
            continue
        for target in route.targets:
            key = (target, route.uri or uri)
            if key not in seen:
                seen.add(key)
                out.append(
                    Destination(
                        target=target,
                        uri=route.uri or uri,
                        route=route.name,
                        partition_key=route.partition_key,
                    )
                )
    return out


def all_targets(routes: Iterable[Route]) -> set[str]:
    return {t for r in routes for t in r.targets}

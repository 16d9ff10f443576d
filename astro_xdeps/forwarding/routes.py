"""Routes: which asset events go to which deployments, as what uri.

A route, in JSON or YAML::

    {"name": "bears",                       # optional, shown in provenance and errors
     "match": {"uri": "file://include/*", "name": "bears*"},   # globs; all given must match
     "targets": ["xdeps_analytics", "xdeps_ml"],                # connection ids
     "uri": "s3://analytics/bears",        # optional: the asset's uri downstream
     "forward_received": false}             # also forward events that arrived over the REST API

Every matching route applies (one event can go to many deployments); an event goes to a
given (target, uri) once. With no routes configured, one route sends every asset to
``[astro_xdeps] conn_id``.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astro_xdeps.exceptions import ConfigError

_ROUTE_KEYS = {"name", "match", "targets", "uri", "forward_received"}
_MATCH_KEYS = {"uri", "name"}


@dataclass(frozen=True)
class Route:
    name: str
    targets: tuple[str, ...]
    uri_glob: str = "*"
    name_glob: str = "*"
    uri: str | None = None
    forward_received: bool = False

    def matches(self, uri: str, name: str | None) -> bool:
        return fnmatch.fnmatchcase(uri, self.uri_glob) and fnmatch.fnmatchcase(name or uri, self.name_glob)


@dataclass(frozen=True)
class Destination:
    """One place an event goes: a target connection and the asset's uri there."""

    target: str
    uri: str
    route: str


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
        routes.append(
            Route(
                name=str(raw.get("name") or f"route{i}"),
                targets=tuple(targets),
                uri_glob=match.get("uri", "*"),
                name_glob=match.get("name", "*"),
                uri=raw.get("uri"),
                forward_received=raw.get("forward_received", False),
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
                out.append(Destination(target=target, uri=route.uri or uri, route=route.name))
    return out


def all_targets(routes: Iterable[Route]) -> set[str]:
    return {t for r in routes for t in r.targets}

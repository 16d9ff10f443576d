"""Routes: parsing and validation (JSON, YAML, files), matching, one-to-many, uri mapping, dedupe."""

from __future__ import annotations

import json
from typing import Any

import pytest

from astro_xdeps.exceptions import ConfigError
from astro_xdeps.forwarding.routes import (
    Destination,
    Route,
    all_targets,
    default_routes,
    destinations,
    load_routes_file,
    load_routes_text,
    parse_routes,
)

# -- parsing -------------------------------------------------------------------------------------


def test_parse_full_route() -> None:
    [route] = parse_routes(
        [
            {
                "name": "bears",
                "match": {"uri": "file://include/*", "name": "bears*"},
                "targets": ["xdeps_analytics", "xdeps_ml"],
                "uri": "s3://analytics/bears",
                "forward_received": True,
            }
        ]
    )
    assert route == Route(
        name="bears",
        targets=("xdeps_analytics", "xdeps_ml"),
        uri_glob="file://include/*",
        name_glob="bears*",
        uri="s3://analytics/bears",
        forward_received=True,
    )


def test_parse_minimal_route_gets_defaults_and_an_index_name() -> None:
    routes = parse_routes([{"targets": ["a"]}, {"targets": "b"}])
    assert routes == [
        Route(name="route0", targets=("a",)),
        Route(name="route1", targets=("b",)),  # a single target may be a plain string
    ]
    assert routes[0].uri_glob == "*" and routes[0].name_glob == "*"
    assert routes[0].uri is None and routes[0].forward_received is False


def test_parse_accepts_a_routes_wrapper_object() -> None:
    assert parse_routes({"routes": [{"targets": ["a"]}]}) == [Route(name="route0", targets=("a",))]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"targets": ["a"]}, "cfg: expected a list of routes, got dict"),
        ("a", "cfg: expected a list of routes, got str"),
        (None, "cfg: expected a list of routes, got NoneType"),
        ([{"targets": ["a"]}, "b"], "cfg[1]: a route must be an object, got str"),
        ([{"targets": ["a"], "target": "b"}], "cfg[0]: unknown field(s) target; known: "),
        ([{"name": "x"}], "cfg[0].targets: a non-empty list of connection ids is required"),
        ([{"targets": []}], "cfg[0].targets: a non-empty list"),
        ([{"targets": ""}], "cfg[0].targets: a non-empty list"),
        ([{"targets": ["a", ""]}], "cfg[0].targets: a non-empty list"),
        ([{"targets": ["a", 3]}], "cfg[0].targets: a non-empty list"),
        ([{"targets": 5}], "cfg[0].targets: a non-empty list"),
        ([{"targets": {"a": 1}}], "cfg[0].targets: a non-empty list"),
        ([{"targets": ["a"], "match": "s3://*"}], "cfg[0].match: an object with 'uri' and/or 'name' globs"),
        ([{"targets": ["a"], "match": {"url": "s3://*"}}], "cfg[0].match: an object with"),
        ([{"targets": ["a"], "match": {"uri": 3}}], "cfg[0].match.uri: must be a string glob"),
        ([{"targets": ["a"], "match": {"name": ["x"]}}], "cfg[0].match.name: must be a string glob"),
        ([{"targets": ["a"], "uri": ""}], "cfg[0].uri: must be a non-empty string"),
        ([{"targets": ["a"], "uri": 7}], "cfg[0].uri: must be a non-empty string"),
        ([{"targets": ["a"], "forward_received": "yes"}], "cfg[0].forward_received: must be true or false"),
    ],
)
def test_parse_errors_name_the_route_index_and_field(data: Any, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_routes(data, source="cfg")
    assert str(info.value).startswith(expected)


def test_parse_error_points_at_the_bad_route_not_the_first() -> None:
    good = {"targets": ["a"]}
    with pytest.raises(ConfigError, match=r"^routes\[2\]\.uri: "):
        parse_routes([good, good, {"targets": ["a"], "uri": ""}])


def test_unknown_fields_are_listed_sorted_with_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        parse_routes([{"targets": ["a"], "zeta": 1, "alpha": 2}])
    assert str(info.value) == (
        "routes[0]: unknown field(s) alpha, zeta; known: forward_received, match, name, partition_key, targets, uri."
    )


# -- text and files ------------------------------------------------------------------------------

ROUTES = [{"name": "sales", "match": {"uri": "s3://sales/*"}, "targets": ["fin", "ml"]}]
EXPECTED = [Route(name="sales", targets=("fin", "ml"), uri_glob="s3://sales/*")]

YAML_TEXT = """\
routes:
  - name: sales
    match:
      uri: "s3://sales/*"
    targets: [fin, ml]
"""


def test_load_json_text() -> None:
    assert load_routes_text(json.dumps(ROUTES), source="s") == EXPECTED


def test_load_yaml_text() -> None:
    assert load_routes_text(YAML_TEXT, source="s") == EXPECTED


def test_load_yaml_list_without_wrapper() -> None:
    text = "- targets: [fin]\n  uri: s3://x/y\n  forward_received: true\n"
    assert load_routes_text(text, source="s") == [
        Route(name="route0", targets=("fin",), uri="s3://x/y", forward_received=True)
    ]


def test_load_text_neither_json_nor_yaml() -> None:
    with pytest.raises(ConfigError, match=r"^my-source: neither valid JSON nor YAML \("):
        load_routes_text("routes: [unclosed", source="my-source")


def test_load_text_errors_carry_the_source() -> None:
    with pytest.raises(ConfigError, match=r"^\[astro_xdeps\] routes\[0\]\.targets: "):
        load_routes_text('[{"name": "x"}]', source="[astro_xdeps] routes")


def test_load_routes_file_json_and_yaml(tmp_path) -> None:
    json_file = tmp_path / "routes.json"
    json_file.write_text(json.dumps(ROUTES))
    yaml_file = tmp_path / "routes.yaml"
    yaml_file.write_text(YAML_TEXT)
    assert load_routes_file(json_file) == EXPECTED
    assert load_routes_file(str(yaml_file)) == EXPECTED


def test_load_routes_file_errors_name_the_file(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- targets: []\n")
    with pytest.raises(ConfigError, match=rf"^{bad}\[0\]\.targets: "):
        load_routes_file(bad)


def test_missing_routes_file(tmp_path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(ConfigError) as info:
        load_routes_file(missing)
    assert str(info.value) == f"routes_file {missing}: cannot be read (No such file or directory)."
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_routes_file_that_is_a_directory(tmp_path) -> None:
    with pytest.raises(ConfigError, match=rf"^routes_file {tmp_path}: cannot be read \(Is a directory\)"):
        load_routes_file(tmp_path)


def test_routes_file_that_is_not_text(tmp_path) -> None:
    binary = tmp_path / "routes.json"
    binary.write_bytes(b"\xff\xfe\x00\x80 not utf-8")
    with pytest.raises(ConfigError, match=rf"^routes_file {binary}: cannot be read \(not UTF-8 text"):
        load_routes_file(binary)


# -- matching ------------------------------------------------------------------------------------


def route(**kw: Any) -> Route:
    kw.setdefault("name", "r")
    kw.setdefault("targets", ("t",))
    return Route(**kw)


@pytest.mark.parametrize(
    ("uri_glob", "uri", "expected"),
    [
        ("*", "s3://anything/at/all", True),
        ("s3://sales/*", "s3://sales/orders", True),
        ("s3://sales/*", "s3://sales/2024/orders", True),  # fnmatch's * crosses slashes
        ("s3://sales/*", "s3://finance/orders", False),
        ("s3://sales/?rders", "s3://sales/orders", True),
        ("s3://sales/[ab]*", "s3://sales/alpha", True),
        ("s3://sales/[ab]*", "s3://sales/gamma", False),
        ("s3://Sales/*", "s3://sales/orders", False),  # case-sensitive on every platform
        ("s3://sales/orders", "s3://sales/orders", True),
        ("s3://sales/orders", "s3://sales/orders2", False),
    ],
)
def test_uri_glob(uri_glob: str, uri: str, expected: bool) -> None:
    assert route(uri_glob=uri_glob).matches(uri, None) is expected


def test_name_glob_matches_the_asset_name() -> None:
    r = route(name_glob="bears*")
    assert r.matches("s3://x/1", "bears_daily")
    assert not r.matches("s3://x/1", "wolves")


def test_name_glob_falls_back_to_the_uri_when_the_asset_has_no_name() -> None:
    r = route(name_glob="s3://x/*")
    assert r.matches("s3://x/1", None)
    assert not r.matches("s3://y/1", None)


def test_both_globs_must_match() -> None:
    r = route(uri_glob="s3://x/*", name_glob="bears*")
    assert r.matches("s3://x/1", "bears")
    assert not r.matches("s3://x/1", "wolves")
    assert not r.matches("s3://y/1", "bears")


# -- destinations --------------------------------------------------------------------------------


def test_default_route_sends_everything_to_the_connection() -> None:
    routes = default_routes("xdeps_default")
    assert routes == [Route(name="default", targets=("xdeps_default",))]
    assert destinations(routes, "s3://any/thing", "thing", received=False) == [
        Destination(target="xdeps_default", uri="s3://any/thing", route="default")
    ]


def test_default_route_does_not_forward_received_events() -> None:
    assert destinations(default_routes("d"), "s3://a", None, received=True) == []


def test_one_route_to_many_targets() -> None:
    routes = [route(name="fan", targets=("a", "b", "c"))]
    assert destinations(routes, "s3://x", None, received=False) == [
        Destination("a", "s3://x", "fan"),
        Destination("b", "s3://x", "fan"),
        Destination("c", "s3://x", "fan"),
    ]


def test_every_matching_route_applies_and_non_matching_do_not() -> None:
    routes = [
        route(name="sales", uri_glob="s3://sales/*", targets=("fin",)),
        route(name="hr", uri_glob="s3://hr/*", targets=("people",)),
        route(name="all", targets=("archive",)),
    ]
    assert destinations(routes, "s3://sales/q1", None, received=False) == [
        Destination("fin", "s3://sales/q1", "sales"),
        Destination("archive", "s3://sales/q1", "all"),
    ]
    assert destinations(routes, "s3://other", None, received=False) == [
        Destination("archive", "s3://other", "all")
    ]


def test_route_uri_maps_the_asset_to_a_different_uri_downstream() -> None:
    routes = [route(name="map", uri_glob="file://include/bears*", targets=("a",), uri="s3://analytics/bears")]
    assert destinations(routes, "file://include/bears.csv", None, received=False) == [
        Destination("a", "s3://analytics/bears", "map")
    ]


def test_same_target_and_uri_is_sent_once_first_route_wins() -> None:
    routes = [
        route(name="first", targets=("a", "b")),
        route(name="second", targets=("b", "c")),
        route(name="third", targets=("a",)),
    ]
    assert destinations(routes, "s3://x", None, received=False) == [
        Destination("a", "s3://x", "first"),
        Destination("b", "s3://x", "first"),
        Destination("c", "s3://x", "second"),
    ]


def test_dedupe_is_per_target_and_uri_so_two_uris_on_one_target_both_go() -> None:
    routes = [
        route(name="as-is", targets=("a",)),
        route(name="mapped", targets=("a",), uri="s3://elsewhere"),
        route(name="mapped-again", targets=("a",), uri="s3://elsewhere"),
    ]
    assert destinations(routes, "s3://x", None, received=False) == [
        Destination("a", "s3://x", "as-is"),
        Destination("a", "s3://elsewhere", "mapped"),
    ]


def test_mapped_uri_equal_to_the_original_dedupes_with_the_plain_route() -> None:
    routes = [route(name="plain", targets=("a",)), route(name="same", targets=("a",), uri="s3://x")]
    assert destinations(routes, "s3://x", None, received=False) == [Destination("a", "s3://x", "plain")]


def test_forward_received_gates_received_events_per_route() -> None:
    routes = [
        route(name="local-only", targets=("a",)),
        route(name="relay", targets=("b",), forward_received=True),
    ]
    assert destinations(routes, "s3://x", None, received=True) == [Destination("b", "s3://x", "relay")]
    assert destinations(routes, "s3://x", None, received=False) == [
        Destination("a", "s3://x", "local-only"),
        Destination("b", "s3://x", "relay"),
    ]


def test_no_routes_no_destinations() -> None:
    assert destinations([], "s3://x", None, received=False) == []


def test_all_targets() -> None:
    routes = [route(targets=("a", "b")), route(targets=("b", "c"))]
    assert all_targets(routes) == {"a", "b", "c"}
    assert all_targets([]) == set()

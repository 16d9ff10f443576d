"""Operations on a deployment's REST API, in Airflow 3 (``/api/v2``) and Airflow 2 (``/api/v1``) form."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
import requests
import responses
from responses import matchers

from astro_xdeps.client import Asset, TriggerResult
from astro_xdeps.exceptions import AuthError, NotFoundError, RequestRejected, TransientError
from tests.unit.client.target import BASE, TOKEN, client_for

pytestmark = pytest.mark.usefixtures("sleeps")  # retries back off instantly

URI = "s3://bucket/orders"
ASSETS = f"{BASE}/api/v2/assets"
EVENTS_V2 = f"{BASE}/api/v2/assets/events"
EVENTS_V1 = f"{BASE}/api/v1/datasets/events"
DATASET_V1 = f"{BASE}/api/v1/datasets/s3%3A%2F%2Fbucket%2Forders"


def asset_search(uri: str, offset: int = 0) -> list:
    """Match the v2 asset search for ``uri`` at ``offset``: the uri goes in unescaped as the pattern."""
    params = {"uri_pattern": uri, "limit": 100, "offset": offset, "order_by": "id"}
    return [matchers.query_param_matcher(params)]


def asset_page(*assets: tuple[int, str], total: int | None = None) -> dict:
    items = [{"id": i, "uri": u, "name": u} for i, u in assets]
    return {"assets": items, "total_entries": len(items) if total is None else total}


def register_resolve(mock: responses.RequestsMock, uri: str = URI, asset_id: int = 7) -> None:
    mock.get(ASSETS, json=asset_page((asset_id, uri)), match=asset_search(uri))


def event(event_id: int, **extra: Any) -> dict:
    return {"id": event_id, "asset_id": 7, "uri": URI, "extra": {**extra, "from_rest_api": True}}


def json_body(body: dict) -> list:
    return [matchers.json_params_matcher(body)]


def posts(mock: responses.RequestsMock) -> list:
    return [c for c in mock.calls if c.request.method == "POST"]


# -- API version detection ----------------------------------------------------------------------


def test_detects_v2_when_api_v2_version_answers(rsps: responses.RequestsMock) -> None:
    rsps.get(f"{BASE}/api/v2/version", json={"version": "3.3.2"})
    assert client_for(api_version="auto").api_version == "v2"
    assert "Authorization" not in rsps.calls[0].request.headers  # /version needs no token


def test_detects_v1_when_v2_is_missing_and_v1_answers(rsps: responses.RequestsMock) -> None:
    rsps.get(f"{BASE}/api/v2/version", status=404)
    rsps.get(f"{BASE}/api/v1/version", json={"version": "2.11.2"})
    assert client_for(api_version="auto").api_version == "v1"


@pytest.mark.parametrize("status", [401, 403])
def test_detects_v1_when_v1_version_needs_credentials(rsps: responses.RequestsMock, status: int) -> None:
    rsps.get(f"{BASE}/api/v2/version", status=404)
    rsps.get(f"{BASE}/api/v1/version", status=status)
    assert client_for(api_version="auto").api_version == "v1"


def test_no_api_under_either_version_is_rejected_with_a_hint(rsps: responses.RequestsMock) -> None:
    rsps.get(f"{BASE}/api/v2/version", status=404)
    rsps.get(f"{BASE}/api/v1/version", status=404)
    with pytest.raises(RequestRejected, match="No Airflow REST API found") as info:
        _ = client_for(api_version="auto").api_version
    assert "base_url" in str(info.value)
    assert len(rsps.calls) == 2  # a 404 is an answer, not retried


def test_version_is_detected_once_per_client(rsps: responses.RequestsMock) -> None:
    rsps.get(f"{BASE}/api/v2/version", json={"version": "3.3.2"})
    client = client_for(api_version="auto")
    assert (client.api_version, client.api_version) == ("v2", "v2")
    assert len(rsps.calls) == 1


def test_detection_retries_a_failing_server(ordered: responses.RequestsMock) -> None:
    ordered.get(f"{BASE}/api/v2/version", status=503)
    ordered.get(f"{BASE}/api/v2/version", json={"version": "3.3.2"})
    assert client_for(api_version="auto").api_version == "v2"


@pytest.mark.parametrize("forced", ["v1", "v2"])
def test_forced_api_version_skips_detection(rsps: responses.RequestsMock, forced: str) -> None:
    rsps.get(f"{BASE}/api/{forced}/dags/etl", json={"dag_id": "etl"})
    client = client_for(api_version=forced)
    assert client.api_version == forced
    client.get_dag("etl")
    assert [c.request.url for c in rsps.calls] == [f"{BASE}/api/{forced}/dags/etl"]


def test_detected_v1_makes_later_calls_use_api_v1(rsps: responses.RequestsMock) -> None:
    rsps.get(f"{BASE}/api/v2/version", status=404)
    rsps.get(f"{BASE}/api/v1/version", json={"version": "2.11.2"})
    rsps.get(f"{BASE}/api/v1/dags/etl", json={"dag_id": "etl"})
    assert client_for(api_version="auto").get_dag("etl") == {"dag_id": "etl"}


# -- version, health, auth check ----------------------------------------------------------------


def test_version_v2(rsps: responses.RequestsMock) -> None:
    rsps.get(f"{BASE}/api/v2/version", json={"version": "3.3.2", "git_version": None})
    assert client_for().version()["version"] == "3.3.2"


def test_version_v1_sends_credentials(rsps: responses.RequestsMock) -> None:
    auth = matchers.header_matcher({"Authorization": f"Bearer {TOKEN}"})
    rsps.get(f"{BASE}/api/v1/version", json={"version": "2.11.2"}, match=[auth])
    assert client_for(api_version="v1").version()["version"] == "2.11.2"


def test_health_v2_uses_the_monitor_endpoint_without_credentials(rsps: responses.RequestsMock) -> None:
    report = {"metadatabase": {"status": "healthy"}, "scheduler": {"status": "healthy"}}
    rsps.get(f"{BASE}/api/v2/monitor/health", json=report)
    assert client_for().health() == report
    assert "Authorization" not in rsps.calls[0].request.headers


def test_health_v1(rsps: responses.RequestsMock) -> None:
    rsps.get(f"{BASE}/api/v1/health", json={"metadatabase": {"status": "healthy"}})
    assert client_for(api_version="v1").health() == {"metadatabase": {"status": "healthy"}}


def test_health_of_a_down_server_is_transient(rsps: responses.RequestsMock) -> None:
    rsps.get(f"{BASE}/api/v2/monitor/health", body=requests.ConnectionError("Connection refused"))
    with pytest.raises(TransientError):
        client_for(retries=0).health()


def test_check_auth_makes_one_cheap_authenticated_call(rsps: responses.RequestsMock) -> None:
    rsps.get(
        f"{BASE}/api/v2/dags",
        json={"dags": []},
        match=[
            matchers.query_param_matcher({"limit": 1}),
            matchers.header_matcher({"Authorization": f"Bearer {TOKEN}"}),
        ],
    )
    client_for().check_auth()


def test_check_auth_raises_auth_error_for_a_token_of_another_deployment(rsps: responses.RequestsMock) -> None:
    rsps.get(f"{BASE}/api/v2/dags", status=403)
    with pytest.raises(AuthError):
        client_for().check_auth()


# -- resolve_asset, Airflow 3 ---------------------------------------------------------------------


def test_resolve_asset_v2_returns_id_and_name(rsps: responses.RequestsMock) -> None:
    register_resolve(rsps, asset_id=7)
    assert client_for().resolve_asset(URI) == Asset(id=7, uri=URI, name=URI)


def test_resolve_asset_v2_picks_the_exact_uri_among_like_wildcard_matches(
    rsps: responses.RequestsMock,
) -> None:
    # uri_pattern is a LIKE: "_" matches any character, so s3://aXb comes back too, and first.
    rsps.get(ASSETS, json=asset_page((1, "s3://aXb"), (2, "s3://a_b")), match=asset_search("s3://a_b"))
    assert client_for().resolve_asset("s3://a_b").id == 2


def test_resolve_asset_v2_ignores_a_case_insensitive_match(rsps: responses.RequestsMock) -> None:
    rsps.get(ASSETS, json=asset_page((1, "S3://Bucket/Orders")), match=asset_search(URI))
    with pytest.raises(NotFoundError):
        client_for().resolve_asset(URI)


def test_resolve_asset_v2_ignores_uris_that_merely_contain_the_uri(rsps: responses.RequestsMock) -> None:
    # LIKE '%s3://bucket/orders%' also finds longer uris.
    rsps.get(ASSETS, json=asset_page((1, f"{URI}/2024"), (2, f"x{URI}")), match=asset_search(URI))
    with pytest.raises(NotFoundError):
        client_for().resolve_asset(URI)


def test_resolve_asset_v2_treats_percent_as_data_not_as_a_wildcard(rsps: responses.RequestsMock) -> None:
    rsps.get(
        ASSETS, json=asset_page((1, "file:///a%20b/x"), (2, "file:///a%b")), match=asset_search("file:///a%b")
    )
    assert client_for().resolve_asset("file:///a%b").id == 2


def test_resolve_asset_v2_reads_every_page_until_it_finds_the_uri(rsps: responses.RequestsMock) -> None:
    others = [(i, f"{URI}/part-{i}") for i in range(1, 201)]
    rsps.get(ASSETS, json=asset_page(*others[:100], total=250), match=asset_search(URI, 0))
    rsps.get(ASSETS, json=asset_page(*others[100:], total=250), match=asset_search(URI, 100))
    rsps.get(ASSETS, json=asset_page((300, f"{URI}/x"), (301, URI), total=250), match=asset_search(URI, 200))
    assert client_for().resolve_asset(URI).id == 301
    assert len(rsps.calls) == 3


def test_resolve_asset_v2_stops_paging_at_total_entries(rsps: responses.RequestsMock) -> None:
    others = [(i, f"{URI}/part-{i}") for i in range(1, 151)]
    rsps.get(ASSETS, json=asset_page(*others[:100], total=150), match=asset_search(URI, 0))
    rsps.get(ASSETS, json=asset_page(*others[100:], total=150), match=asset_search(URI, 100))
    with pytest.raises(NotFoundError):
        client_for().resolve_asset(URI)
    assert len(rsps.calls) == 2


def test_resolve_asset_v2_stops_on_an_empty_page_even_if_total_says_more(
    rsps: responses.RequestsMock,
) -> None:
    rsps.get(ASSETS, json={"assets": [], "total_entries": 500}, match=asset_search(URI, 0))
    with pytest.raises(NotFoundError):
        client_for().resolve_asset(URI)
    assert len(rsps.calls) == 1


def test_missing_asset_error_names_the_uri_and_how_to_fix_it(rsps: responses.RequestsMock) -> None:
    rsps.get(ASSETS, json=asset_page(), match=asset_search(URI))
    with pytest.raises(NotFoundError) as info:
        client_for().resolve_asset(URI)
    assert URI in str(info.value)
    assert "deploy the consuming DAG" in str(info.value)


def test_resolved_asset_is_cached_so_a_second_resolve_makes_no_call(rsps: responses.RequestsMock) -> None:
    register_resolve(rsps)
    client = client_for()
    first = client.resolve_asset(URI)
    assert client.resolve_asset(URI) == first
    assert len(rsps.calls) == 1


def test_refresh_bypasses_the_cache(ordered: responses.RequestsMock) -> None:
    register_resolve(ordered, asset_id=7)
    register_resolve(ordered, asset_id=8)
    client = client_for()
    client.resolve_asset(URI)
    assert client.resolve_asset(URI, refresh=True).id == 8
    assert client.resolve_asset(URI).id == 8


def test_a_missing_asset_is_not_cached(ordered: responses.RequestsMock) -> None:
    ordered.get(ASSETS, json=asset_page(), match=asset_search(URI))
    register_resolve(ordered, asset_id=9)  # deployed in between
    client = client_for()
    with pytest.raises(NotFoundError):
        client.resolve_asset(URI)
    assert client.resolve_asset(URI).id == 9


# -- resolve_asset, Airflow 2 ---------------------------------------------------------------------


def test_resolve_dataset_v1_looks_up_the_urlencoded_uri(rsps: responses.RequestsMock) -> None:
    rsps.get(DATASET_V1, json={"id": 5, "uri": URI})
    assert client_for(api_version="v1").resolve_asset(URI) == Asset(id=5, uri=URI)
    assert rsps.calls[0].request.url == DATASET_V1  # slashes encoded too: one path segment


def test_resolve_dataset_v1_encodes_query_characters_into_the_path(rsps: responses.RequestsMock) -> None:
    rsps.get(f"{BASE}/api/v1/datasets/postgres%3A%2F%2Fdb%2Ft%3Fschema%3Da%26x%3D1", json={"id": 6})
    asset = client_for(api_version="v1").resolve_asset("postgres://db/t?schema=a&x=1")
    assert asset == Asset(id=6, uri="postgres://db/t?schema=a&x=1")


def test_resolve_dataset_v1_missing_is_not_found(rsps: responses.RequestsMock) -> None:
    rsps.get(DATASET_V1, status=404, json={"title": "Dataset not found"})
    with pytest.raises(NotFoundError, match="No asset with uri"):
        client_for(api_version="v1").resolve_asset(URI)


def test_resolve_dataset_v1_is_cached(rsps: responses.RequestsMock) -> None:
    rsps.get(DATASET_V1, json={"id": 5, "uri": URI})
    client = client_for(api_version="v1")
    client.resolve_asset(URI)
    client.resolve_asset(URI)
    assert len(rsps.calls) == 1


# -- create_asset_event, Airflow 3 ----------------------------------------------------------------


def test_create_event_v2_posts_asset_id_and_extra(rsps: responses.RequestsMock) -> None:
    register_resolve(rsps, asset_id=7)
    rsps.post(EVENTS_V2, json=event(100, k="v"), match=json_body({"asset_id": 7, "extra": {"k": "v"}}))
    assert client_for().create_asset_event(URI, {"k": "v"})["id"] == 100


def test_create_event_v2_sends_the_partition_key(rsps: responses.RequestsMock) -> None:
    rsps.get(f"{BASE}/api/v2/version", json={"version": "3.2.0"})
    register_resolve(rsps, asset_id=7)
    body = {"asset_id": 7, "extra": {}, "partition_key": "2024-06-01"}
    rsps.post(EVENTS_V2, json=event(100), match=json_body(body))
    client_for().create_asset_event(URI, partition_key="2024-06-01")


def test_create_event_puts_the_dedupe_id_into_extra_without_touching_the_callers_dict(
    rsps: responses.RequestsMock,
) -> None:
    register_resolve(rsps, asset_id=7)
    rsps.post(EVENTS_V2, json=event(1), match=json_body({"asset_id": 7, "extra": {"k": 1, "eid": "e-1"}}))
    extra = {"k": 1}
    client_for().create_asset_event(URI, extra, dedupe=("eid", "e-1"))
    assert extra == {"k": 1}


def test_create_event_for_a_missing_asset_sends_nothing(rsps: responses.RequestsMock) -> None:
    rsps.get(ASSETS, json=asset_page(), match=asset_search(URI))
    with pytest.raises(NotFoundError, match="No asset with uri"):
        client_for().create_asset_event(URI, {})
    assert posts(rsps) == []


def test_404_on_post_re_resolves_the_asset_and_resends(ordered: responses.RequestsMock) -> None:
    register_resolve(ordered, asset_id=7)
    ordered.post(EVENTS_V2, status=404, match=json_body({"asset_id": 7, "extra": {}}))
    register_resolve(ordered, asset_id=8)  # the asset was re-created by a deploy
    ordered.post(EVENTS_V2, json=event(100), match=json_body({"asset_id": 8, "extra": {}}))
    client = client_for()
    assert client.create_asset_event(URI)["id"] == 100
    assert client.resolve_asset(URI).id == 8  # the cache holds the new id, no further call


def test_404_on_post_after_a_cached_resolve_invalidates_the_cache(ordered: responses.RequestsMock) -> None:
    register_resolve(ordered, asset_id=7)
    ordered.post(EVENTS_V2, json=event(1), match=json_body({"asset_id": 7, "extra": {}}))
    ordered.post(EVENTS_V2, status=404, match=json_body({"asset_id": 7, "extra": {}}))
    register_resolve(ordered, asset_id=8)
    ordered.post(EVENTS_V2, json=event(2), match=json_body({"asset_id": 8, "extra": {}}))
    client = client_for()
    client.create_asset_event(URI)
    assert client.create_asset_event(URI)["id"] == 2


def test_404_on_post_when_the_asset_is_gone_is_not_found_without_a_second_post(
    ordered: responses.RequestsMock,
) -> None:
    register_resolve(ordered, asset_id=7)
    ordered.post(EVENTS_V2, status=404)
    ordered.get(ASSETS, json=asset_page(), match=asset_search(URI))
    with pytest.raises(NotFoundError):
        client_for().create_asset_event(URI)
    assert len(posts(ordered)) == 1


@pytest.mark.parametrize(
    "failure",
    [{"status": 500}, {"status": 504}, {"body": requests.ReadTimeout("read timed out")}],
    ids=["500", "504", "read-timeout"],
)
def test_ambiguous_failure_with_dedupe_returns_the_event_that_did_arrive(
    ordered: responses.RequestsMock, failure: dict
) -> None:
    register_resolve(ordered, asset_id=7)
    ordered.post(EVENTS_V2, **failure)
    ordered.get(
        EVENTS_V2,
        json={"asset_events": [event(41, eid="other"), event(42, eid="e-1")], "total_entries": 2},
        match=[
            matchers.query_param_matcher(
                {"asset_id": 7, "order_by": "-timestamp", "limit": 100, "offset": 0}, strict_match=False
            )
        ],
    )
    found = client_for().create_asset_event(URI, {}, dedupe=("eid", "e-1"))
    assert found["id"] == 42
    assert len(posts(ordered)) == 1


def test_ambiguous_failure_with_dedupe_sends_again_when_the_event_did_not_arrive(
    ordered: responses.RequestsMock,
) -> None:
    body = json_body({"asset_id": 7, "extra": {"eid": "e-1"}})
    register_resolve(ordered, asset_id=7)
    ordered.post(EVENTS_V2, status=500, match=body)
    ordered.get(EVENTS_V2, json={"asset_events": [event(41, eid="other"), {"id": 40, "extra": None}]})
    ordered.post(EVENTS_V2, json=event(43, eid="e-1"), match=body)
    assert client_for().create_asset_event(URI, dedupe=("eid", "e-1"))["id"] == 43
    assert len(posts(ordered)) == 2


def test_ambiguous_failures_with_dedupe_stop_after_the_configured_retries(
    rsps: responses.RequestsMock,
) -> None:
    register_resolve(rsps, asset_id=7)
    rsps.post(EVENTS_V2, status=500)
    rsps.get(EVENTS_V2, json={"asset_events": []})
    with pytest.raises(TransientError):
        client_for(retries=2).create_asset_event(URI, dedupe=("eid", "e-1"))
    assert len(posts(rsps)) == 3


@pytest.mark.parametrize(
    "failure",
    [{"status": 500}, {"status": 504}, {"body": requests.ReadTimeout("read timed out")}],
    ids=["500", "504", "read-timeout"],
)
def test_ambiguous_failure_without_dedupe_raises_after_exactly_one_post(
    rsps: responses.RequestsMock, failure: dict
) -> None:
    register_resolve(rsps, asset_id=7)
    rsps.post(EVENTS_V2, **failure)
    with pytest.raises(TransientError) as info:
        client_for(retries=3).create_asset_event(URI, {"k": "v"})
    assert info.value.ambiguous is True
    assert len(posts(rsps)) == 1


def test_429_is_retried_without_looking_for_the_event(ordered: responses.RequestsMock) -> None:
    register_resolve(ordered, asset_id=7)
    ordered.post(EVENTS_V2, status=429)
    ordered.post(EVENTS_V2, json=event(5))  # no GET of recent events in between
    assert client_for().create_asset_event(URI, dedupe=("eid", "e-1"))["id"] == 5


def test_429_is_retried_without_dedupe_too(ordered: responses.RequestsMock) -> None:
    register_resolve(ordered, asset_id=7)
    ordered.post(EVENTS_V2, status=429)
    ordered.post(EVENTS_V2, json=event(5))
    assert client_for().create_asset_event(URI)["id"] == 5


@pytest.mark.parametrize("status", [502, 503])
def test_502_503_look_for_the_event_before_resending(ordered: responses.RequestsMock, status: int) -> None:
    """Regression (issue 9, defect 2): the proxy forwarded the POST, the event exists: no second POST."""
    register_resolve(ordered, asset_id=7)
    ordered.post(EVENTS_V2, status=status)
    ordered.get(EVENTS_V2, json={"asset_events": [event(42, eid="e-1")], "total_entries": 1})
    found = client_for().create_asset_event(URI, {}, dedupe=("eid", "e-1"))
    assert found["id"] == 42
    assert len(posts(ordered)) == 1


@pytest.mark.parametrize("status", [502, 503])
def test_502_503_without_dedupe_are_not_resent(rsps: responses.RequestsMock, status: int) -> None:
    """Regression (issue 9, defect 2): without an id to look for, an ambiguous 502/503 is raised."""
    register_resolve(rsps, asset_id=7)
    rsps.post(EVENTS_V2, status=status)
    with pytest.raises(TransientError) as info:
        client_for(retries=3).create_asset_event(URI, {"k": "v"})
    assert info.value.ambiguous is True
    assert len(posts(rsps)) == 1


def test_connection_refused_on_post_is_retried_without_dedupe(ordered: responses.RequestsMock) -> None:
    register_resolve(ordered, asset_id=7)
    ordered.post(EVENTS_V2, body=requests.ConnectionError("Connection refused"))
    ordered.post(EVENTS_V2, json=event(5))
    assert client_for().create_asset_event(URI)["id"] == 5


def test_429_on_post_waits_for_retry_after(ordered: responses.RequestsMock, sleeps: list[float]) -> None:
    register_resolve(ordered, asset_id=7)
    ordered.post(EVENTS_V2, status=429, headers={"Retry-After": "11"})
    ordered.post(EVENTS_V2, json=event(5))
    client_for().create_asset_event(URI)
    assert sleeps == [11.0]


def test_429_on_every_post_gives_up_after_retries_plus_one(rsps: responses.RequestsMock) -> None:
    register_resolve(rsps, asset_id=7)
    rsps.post(EVENTS_V2, status=429)
    with pytest.raises(TransientError) as info:
        client_for(retries=2).create_asset_event(URI)
    assert info.value.ambiguous is False
    assert len(posts(rsps)) == 3


def test_422_on_post_is_rejected_and_not_retried(rsps: responses.RequestsMock) -> None:
    rsps.get(f"{BASE}/api/v2/version", json={"version": "3.3.2"})
    register_resolve(rsps, asset_id=7)
    rsps.post(EVENTS_V2, status=422, json={"detail": [{"msg": "Extra inputs are not permitted"}]})
    with pytest.raises(RequestRejected, match="Extra inputs"):
        client_for().create_asset_event(URI, partition_key="p1")
    assert len(posts(rsps)) == 1


# -- create_asset_event, Airflow 2 ----------------------------------------------------------------


def test_create_event_v1_posts_dataset_uri_and_extra(rsps: responses.RequestsMock) -> None:
    rsps.post(
        EVENTS_V1,
        json={"id": 9, "dataset_uri": URI},
        match=json_body({"dataset_uri": URI, "extra": {"k": 1}}),
    )
    assert client_for(api_version="v1").create_asset_event(URI, {"k": 1})["id"] == 9
    assert len(rsps.calls) == 1  # no lookup needed: v1 takes the uri


def test_partition_key_to_v1_travels_in_the_extra(rsps: responses.RequestsMock) -> None:
    """Airflow 2 has no partition keys (issue 14: older than 3.2 gets the key in the extra)."""
    rsps.post(
        EVENTS_V1,
        json={"id": 1},
        match=json_body({"dataset_uri": URI, "extra": {"k": "v", "xdeps_partition_key": "p1"}}),
    )
    client_for(api_version="v1").create_asset_event(URI, {"k": "v"}, partition_key="p1")


def test_partition_key_to_airflow_3_1_travels_in_the_extra_and_the_version_is_asked_once(
    rsps: responses.RequestsMock,
) -> None:
    rsps.get(f"{BASE}/api/v2/version", json={"version": "3.1.7"})
    register_resolve(rsps, asset_id=7)
    body = {"asset_id": 7, "extra": {"xdeps_partition_key": "2026-11-30"}}
    rsps.post(EVENTS_V2, json=event(100), match=json_body(body))
    rsps.post(EVENTS_V2, json=event(101), match=json_body({"asset_id": 7, "extra": {}}))
    client = client_for()
    client.create_asset_event(URI, partition_key="2026-11-30")
    client.create_asset_event(URI)  # no key: nothing added
    assert sum(c.request.url.endswith("/api/v2/version") for c in rsps.calls) == 1


def test_create_event_v1_for_an_unknown_dataset_is_not_found(rsps: responses.RequestsMock) -> None:
    rsps.post(EVENTS_V1, status=404)
    with pytest.raises(NotFoundError):
        client_for(api_version="v1").create_asset_event(URI)
    assert len(rsps.calls) == 1


def test_ambiguous_failure_with_dedupe_on_v1_finds_the_dataset_event(ordered: responses.RequestsMock) -> None:
    ordered.post(EVENTS_V1, status=500)
    ordered.get(DATASET_V1, json={"id": 5, "uri": URI})
    ordered.get(
        EVENTS_V1,
        json={"dataset_events": [{"id": 77, "extra": {"eid": "e-1"}}], "total_entries": 1},
        match=[
            matchers.query_param_matcher(
                {"dataset_id": 5, "order_by": "-timestamp", "limit": 100, "offset": 0}
            )
        ],
    )
    assert client_for(api_version="v1").create_asset_event(URI, dedupe=("eid", "e-1"))["id"] == 77
    assert len(posts(ordered)) == 1


# -- recent events ------------------------------------------------------------------------------


def events_page(offset: int, *events: dict, since: str | None = None) -> dict:
    params = {"asset_id": 7, "order_by": "-timestamp", "limit": 100, "offset": offset}
    if since is not None:
        params["timestamp_gte"] = since
    return {"json": {"asset_events": list(events)}, "match": [matchers.query_param_matcher(params)]}


def test_find_event_pages_past_the_100_newest_events(ordered: responses.RequestsMock) -> None:
    """Regression (issue 9, defect 12): on a busy asset the sought event is not among the 100 newest."""
    register_resolve(ordered, asset_id=7)
    ordered.get(EVENTS_V2, **events_page(0, *(event(1000 - i, eid=f"other-{i}") for i in range(100))))
    ordered.get(
        EVENTS_V2,
        **events_page(100, *(event(900 - i, eid=f"older-{i}") for i in range(40)), event(5, eid="e-1")),
    )
    assert client_for().find_event(URI, "eid", "e-1")["id"] == 5


def test_find_event_since_filters_on_the_server_with_a_clock_skew_margin(
    rsps: responses.RequestsMock,
) -> None:
    register_resolve(rsps, asset_id=7)
    since = datetime(2026, 11, 30, 12, 0, 0, tzinfo=timezone.utc).timestamp()
    rsps.get(EVENTS_V2, **events_page(0, event(5, eid="e-1"), since="2026-11-30T11:50:00.000000Z"))
    assert client_for().find_event(URI, "eid", "e-1", since=since)["id"] == 5


def test_find_event_on_v1_stops_paging_at_events_older_than_since(ordered: responses.RequestsMock) -> None:
    ordered.get(DATASET_V1, json={"id": 5, "uri": URI})
    page = [{"id": 100 - i, "extra": {}, "timestamp": "2026-11-30T12:30:00+00:00"} for i in range(99)]
    page.append({"id": 1, "extra": {}, "timestamp": "2026-11-30T10:00:00+00:00"})
    ordered.get(
        EVENTS_V1,
        json={"dataset_events": page},
        match=[
            matchers.query_param_matcher(
                {"dataset_id": 5, "order_by": "-timestamp", "limit": 100, "offset": 0}
            )
        ],
    )
    since = datetime(2026, 11, 30, 12, 0, 0, tzinfo=timezone.utc).timestamp()
    assert client_for(api_version="v1").find_event(URI, "eid", "e-1", since=since) is None
    assert len(ordered.calls) == 2  # no second page: the rest is older than the first attempt


def test_find_event_returns_none_when_no_recent_event_matches(rsps: responses.RequestsMock) -> None:
    register_resolve(rsps, asset_id=7)
    rsps.get(EVENTS_V2, json={"asset_events": [event(1, eid="a"), {"id": 2, "extra": None}]})
    assert client_for().find_event(URI, "eid", "b") is None


def test_recent_events_honours_the_limit(rsps: responses.RequestsMock) -> None:
    register_resolve(rsps, asset_id=7)
    rsps.get(
        EVENTS_V2,
        json={"asset_events": [event(1)]},
        match=[matchers.query_param_matcher({"asset_id": 7, "order_by": "-timestamp", "limit": 5})],
    )
    assert client_for().recent_events(URI, limit=5) == [event(1)]


# -- trigger_dag_run ----------------------------------------------------------------------------


def test_trigger_v2_sends_a_null_logical_date(rsps: responses.RequestsMock) -> None:
    body = {"dag_run_id": "xdeps__1", "conf": {"a": 1}, "logical_date": None}
    rsps.post(
        f"{BASE}/api/v2/dags/etl/dagRuns",
        json={"dag_run_id": "xdeps__1", "state": "queued"},
        match=json_body(body),
    )
    result = client_for().trigger_dag_run("etl", "xdeps__1", conf={"a": 1})
    assert result == TriggerResult(
        created=True, dag_id="etl", dag_run_id="xdeps__1", body={"dag_run_id": "xdeps__1", "state": "queued"}
    )


def test_trigger_v1_omits_the_logical_date(rsps: responses.RequestsMock) -> None:
    body = {"dag_run_id": "xdeps__1", "conf": {}, "note": "from upstream"}
    rsps.post(f"{BASE}/api/v1/dags/etl/dagRuns", json={"dag_run_id": "xdeps__1"}, match=json_body(body))
    assert client_for(api_version="v1").trigger_dag_run("etl", "xdeps__1", note="from upstream").created


def test_trigger_with_an_existing_run_id_is_not_created(rsps: responses.RequestsMock) -> None:
    rsps.post(f"{BASE}/api/v2/dags/etl/dagRuns", status=409, json={"detail": "exists"})
    result = client_for().trigger_dag_run("etl", "xdeps__1")
    assert result == TriggerResult(created=False, dag_id="etl", dag_run_id="xdeps__1")
    assert len(rsps.calls) == 1


def test_trigger_v1_409_with_the_run_there_is_not_created(rsps: responses.RequestsMock) -> None:
    """Airflow 2 answers 409 for a duplicate run id: the run exists, the trigger is done."""
    rsps.post(f"{BASE}/api/v1/dags/etl/dagRuns", status=409, json={"detail": "exists"})
    rsps.get(f"{BASE}/api/v1/dags/etl/dagRuns/xdeps__1", json={"dag_run_id": "xdeps__1"})
    result = client_for(api_version="v1").trigger_dag_run("etl", "xdeps__1")
    assert result == TriggerResult(created=False, dag_id="etl", dag_run_id="xdeps__1")


def test_trigger_v1_409_for_a_taken_logical_date_is_retryable(rsps: responses.RequestsMock) -> None:
    """Airflow 2 also answers 409 when another run holds the same logical date: not done, retry."""
    rsps.post(
        f"{BASE}/api/v1/dags/etl/dagRuns",
        status=409,
        json={"detail": "DAGRun with DAG ID: 'etl' and DAGRun logical date: '...' already exists"},
    )
    rsps.get(f"{BASE}/api/v1/dags/etl/dagRuns/xdeps__1", status=404)
    with pytest.raises(TransientError, match="same logical date") as info:
        client_for(api_version="v1").trigger_dag_run("etl", "xdeps__1")
    assert info.value.ambiguous is False


def test_trigger_is_retried_after_a_500(ordered: responses.RequestsMock) -> None:
    ordered.post(f"{BASE}/api/v2/dags/etl/dagRuns", status=500)
    ordered.post(f"{BASE}/api/v2/dags/etl/dagRuns", json={"dag_run_id": "xdeps__1"})
    assert client_for().trigger_dag_run("etl", "xdeps__1").created is True


def test_trigger_retried_after_a_500_that_took_effect_reports_not_created(
    ordered: responses.RequestsMock,
) -> None:
    ordered.post(f"{BASE}/api/v2/dags/etl/dagRuns", body=requests.ReadTimeout())
    ordered.post(f"{BASE}/api/v2/dags/etl/dagRuns", status=409)
    assert client_for().trigger_dag_run("etl", "xdeps__1").created is False


def test_trigger_of_an_unknown_dag_is_not_found(rsps: responses.RequestsMock) -> None:
    rsps.post(f"{BASE}/api/v2/dags/nope/dagRuns", status=404)
    with pytest.raises(NotFoundError):
        client_for().trigger_dag_run("nope", "xdeps__1")
    assert len(rsps.calls) == 1


# -- get_dag, get_dag_run -----------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_get_dag(rsps: responses.RequestsMock, version: str) -> None:
    rsps.get(f"{BASE}/api/{version}/dags/etl", json={"dag_id": "etl", "is_paused": False})
    assert client_for(api_version=version).get_dag("etl") == {"dag_id": "etl", "is_paused": False}


def test_get_unknown_dag_is_not_found(rsps: responses.RequestsMock) -> None:
    rsps.get(f"{BASE}/api/v2/dags/nope", status=404, json={"detail": "DAG not found"})
    with pytest.raises(NotFoundError, match="DAG not found"):
        client_for().get_dag("nope")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_get_dag_run_encodes_the_run_id(rsps: responses.RequestsMock, version: str) -> None:
    url = f"{BASE}/api/{version}/dags/etl/dagRuns/manual__2024-06-01T00%3A00%3A00%2B00%3A00"
    rsps.get(url, json={"state": "success"})
    run = client_for(api_version=version).get_dag_run("etl", "manual__2024-06-01T00:00:00+00:00")
    assert run == {"state": "success"}
    assert rsps.calls[0].request.url == url


def test_get_unknown_dag_run_is_not_found(rsps: responses.RequestsMock) -> None:
    rsps.get(f"{BASE}/api/v2/dags/etl/dagRuns/r1", status=404)
    with pytest.raises(NotFoundError):
        client_for().get_dag_run("etl", "r1")

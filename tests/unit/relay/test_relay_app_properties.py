"""Properties of the relay's HTTP door, for requests nobody thought of.

1. Any request (random source, headers, signature, timestamp, body): a correctly configured relay
   never answers 5xx, and writes nothing unless the request was signed with its secret.
2. Any validly signed generic event: 202 or 422, and a 202 wrote exactly ``new_actions`` items.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
import warnings
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from starlette.exceptions import StarletteDeprecationWarning

from astro_xdeps.outbox import Outbox
from astro_xdeps.relay.app import RelayRuntime, create_app
from astro_xdeps.relay.config import parse_config
from astro_xdeps.relay.engine import RelayEngine
from astro_xdeps.relay.rules import RelayConfig
from astro_xdeps.relay.signing import generate_secret, webhook_headers
from astro_xdeps.state_events import EVENT_TYPES

with warnings.catch_warnings():
    # Starlette asks for httpx2 instead of httpx: about the test tool, not this package.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

SECRET = generate_secret()
OTHER_SECRET = generate_secret()
BEARER = "bearer-secret-for-properties-0123"
WEBHOOK_ENV = "XDEPS_TEST_PROP_WEBHOOK_SECRET"
BEARER_ENV = "XDEPS_TEST_PROP_BEARER_SECRET"
MAX_BODY = 2048

CONFIG: RelayConfig = parse_config(
    {
        "sources": [
            {"name": "alerts", "secrets_env": [WEBHOOK_ENV], "deployment": "prod-up"},
            {"name": "ci", "auth": "bearer", "secrets_env": [BEARER_ENV]},
        ],
        "rules": [
            {
                "name": "any-failure",
                "when": {"type": ["dag_run.failed", "task_instance.*"]},
                "then": [
                    {
                        "trigger_dag": {
                            "target": "downstream",
                            "dag_id": "recover",
                            "conf": {"failed": "{dag_id}", "task": "{task_id}", "said": "{message}"},
                            "note": "{type} of {dag_id} in {deployment} at {occurred_at} ({id}, {run_id})",
                        }
                    },
                    {
                        "asset_event": {
                            "target": "downstream",
                            "uri": "s3://failures",
                            "extra": {"rule": "{rule}"},
                        }
                    },
                ],
            },
            {
                "name": "pairs",
                "when_all": [
                    {"type": "dag_run.*", "dag_id": "[a-m]*"},
                    {"type": "dag_run.*", "dag_id": "[h-z]*"},
                ],
                "within": "1h",
                "then": [{"trigger_dag": {"target": "downstream", "dag_id": "pair"}}],
            },
        ],
        "max_body_bytes": MAX_BODY,
    }
)

common = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


class Door:
    """One relay app on one outbox for a whole property; counts the items it wrote."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.client = TestClient(create_app(lambda: RelayRuntime(RelayEngine(CONFIG, outbox))))

    def count(self) -> int:
        return sum(row.count for row in self.outbox.status())


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(WEBHOOK_ENV, SECRET)
        mp.setenv(BEARER_ENV, BEARER)
        with Outbox.sqlite(tmp_path_factory.mktemp("relay-props") / "outbox.db") as outbox:
            yield Door(outbox)


# --- strategies ----------------------------------------------------------------------------------

header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=60)
now_ish = st.integers(min_value=-600, max_value=600).map(lambda d: str(int(time.time()) + d))
timestamps = st.one_of(now_ish, st.integers(min_value=0, max_value=10**20).map(str), header_text)
fake_signatures = st.one_of(
    header_text,
    st.binary(min_size=32, max_size=32).map(lambda b: "v1," + base64.b64encode(b).decode()),
    st.lists(st.binary(min_size=0, max_size=40), max_size=4).map(
        lambda bs: " ".join(f"v1,{base64.b64encode(b).decode()}" for b in bs)
    ),
    st.binary(max_size=64).map(lambda b: "v1a," + base64.b64encode(b).decode()),
)
json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
        st.sampled_from(EVENT_TYPES),
        st.sampled_from(["load_orders", "extract_a", "a b", "", "2026-01-31T12:00:00Z"]),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(
                st.sampled_from(["type", "dag_id", "task_id", "id", "alertType", "dagName"]),
                st.text(max_size=8),
            ),
            children,
            max_size=6,
        ),
    ),
    max_leaves=12,
)
bodies = st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()))
content_types = st.one_of(
    st.just("application/json"),
    st.sampled_from(["text/plain", "application/json; charset=utf-8", ""]),
    header_text,
)


def _latin1(headers: dict[str, str]) -> dict[str, bytes]:
    return {k: v.encode("latin-1") for k, v in headers.items()}


@st.composite
def unsigned_requests(draw: st.DrawFn) -> tuple[str, bytes, dict[str, bytes]]:
    """(source, body, headers) of a request not signed with the relay's secret."""
    source = draw(st.sampled_from(["alerts", "alerts", "alerts", "ci", "ci", "random"]))
    if source == "random":
        source = draw(st.from_regex(r"[A-Za-z0-9_.-]{1,20}", fullmatch=True))
    body = draw(st.one_of(bodies, st.binary(min_size=MAX_BODY - 5, max_size=MAX_BODY + 5)))
    headers: dict[str, str] = {}
    how = draw(st.sampled_from(["random", "other-secret", "signed-then-tampered", "bearer-guess"]))
    if how == "random":
        for name, values in (
            ("webhook-id", header_text),
            ("webhook-timestamp", timestamps),
            ("webhook-signature", fake_signatures),
        ):
            if draw(st.booleans()):
                headers[name] = draw(values)
    elif how == "other-secret":
        msg_id = draw(st.from_regex(r"[!-~]{1,40}", fullmatch=True))
        headers.update(webhook_headers(body, [OTHER_SECRET], msg_id=msg_id))
    elif how == "signed-then-tampered":
        msg_id = draw(st.from_regex(r"[!-~]{1,40}", fullmatch=True))
        headers.update(webhook_headers(body, [SECRET], msg_id=msg_id))
        field = draw(st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature", "body"]))
        if field == "body":
            body = body + draw(st.binary(min_size=1, max_size=5))
        else:
            replacement = draw(header_text)
            if replacement == headers[field]:
                replacement += "x"
            headers[field] = replacement
    else:
        token = draw(header_text)
        headers["authorization"] = draw(st.sampled_from(["Bearer ", "bearer ", "", "Basic "])) + token
    content_type = draw(st.one_of(st.none(), content_types))
    if content_type is not None:
        headers["content-type"] = content_type
    return source, body, _latin1(headers)


@common
@given(request=unsigned_requests())
def test_unsigned_requests_never_5xx_and_never_write(door: Door, request: tuple) -> None:
    source, body, headers = request
    before = door.count()
    response = door.client.post(f"/events/{source}", content=body, headers=headers)
    event(f"status {response.status_code}")
    assert response.status_code < 500, response.text
    assert response.status_code != 202, response.text
    assert response.status_code in {400, 401, 404, 413, 415, 422}
    assert door.count() == before
    for secret in (SECRET, BEARER):
        assert secret not in response.text


# --- 2. validly signed generic events ------------------------------------------------------------


def sometimes_wrong(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.integers(min_value=0, max_value=9).flatmap(lambda n: json_values if n == 0 else good)


airflow_ids = st.from_regex(r"[A-Za-z0-9_.-]{1,30}", fullmatch=True)
occurred = st.one_of(
    st.integers(min_value=-7200, max_value=7200).map(
        lambda s: (datetime.now(timezone.utc) + timedelta(seconds=s)).isoformat()
    ),
    # Any date whose UTC form exists: year 1 at +02:00 is before datetime.min in UTC, a 422 by design.
    st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=st.timezones()).map(
        lambda d: d.isoformat()
    ),
)
generic_events = st.fixed_dictionaries(
    {"type": sometimes_wrong(st.sampled_from(EVENT_TYPES)), "dag_id": sometimes_wrong(airflow_ids)},
    optional={
        "task_id": sometimes_wrong(airflow_ids),
        "run_id": sometimes_wrong(st.text(min_size=1, max_size=40)),
        "deployment": sometimes_wrong(st.text(min_size=1, max_size=20)),
        "occurred_at": sometimes_wrong(occurred),
        "id": sometimes_wrong(st.text(min_size=1, max_size=40)),
        "message": sometimes_wrong(st.text(max_size=80)),
        "attributes": sometimes_wrong(
            st.dictionaries(
                st.text(min_size=1, max_size=10),
                st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.text(max_size=9)),
                max_size=4,
            )
        ),
        "extra_field": json_values,
    },
)
webhook_ids = st.one_of(
    st.builds(lambda: f"msg_{uuid.uuid4().hex}"),
    st.from_regex(r"[!-~]{1,60}", fullmatch=True),
    st.sampled_from(["msg_repeat_1", "msg_repeat_2"]),
)


@common
@given(payload=generic_events, msg_id=webhook_ids, signer=st.sampled_from(["webhook", "bearer"]))
def test_signed_generic_events_are_202_or_422(
    door: Door, payload: dict[str, Any], msg_id: str, signer: str
) -> None:
    body = json.dumps(payload).encode()
    if len(body) > MAX_BODY:
        return
    if signer == "webhook":
        source, headers = "alerts", webhook_headers(body, [SECRET], msg_id=msg_id)
    else:
        source, headers = "ci", {"authorization": f"Bearer {BEARER}", "webhook-id": msg_id}
    before = door.count()
    response = door.client.post(
        f"/events/{source}", content=body, headers={**headers, "content-type": "application/json"}
    )
    assert response.status_code in (202, 422), response.text
    if response.status_code == 202:
        answer = response.json()
        event(f"202 with {min(answer['new_actions'], 1)}+ new actions, waiting: {bool(answer['waiting'])}")
        assert answer["type"] == payload["type"]
        assert door.count() - before == answer["new_actions"]
        assert len(answer["actions"]) >= answer["new_actions"]
    else:
        event("422")
        assert door.count() == before
        assert isinstance(response.json()["detail"], str) and response.json()["detail"]


@common
@given(data=st.data())
def test_a_signed_event_sent_again_never_writes_twice(door: Door, data: st.DataObject) -> None:
    payload = {
        "type": data.draw(st.sampled_from(["dag_run.failed", "dag_run.success", "task_instance.failed"])),
        "dag_id": data.draw(airflow_ids),
        "task_id": data.draw(airflow_ids),
        "occurred_at": data.draw(occurred),
    }
    body = json.dumps(payload).encode()
    msg_id = f"msg_{uuid.uuid4().hex}"
    answers = []
    for _ in range(data.draw(st.integers(min_value=2, max_value=4))):
        headers = {**webhook_headers(body, [SECRET], msg_id=msg_id), "content-type": "application/json"}
        response = door.client.post("/events/alerts", content=body, headers=headers)
        assert response.status_code == 202, response.text
        answers.append(response.json())
    assert all(a["new_actions"] == 0 for a in answers[1:])
    assert {tuple(a["actions"]) for a in answers[1:]} <= {tuple(answers[0]["actions"])} | {()}

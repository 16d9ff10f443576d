"""Soak — relay fuzz: many fuzzed requests against the real relay app and a real outbox.

Run: ``.venv/bin/python -m bench.soak_relay --count 100000 [--seed 1] [--clients 4]``; the
figures print as JSON. ``run(count, seed)`` is the entry point for ``bench.soak`` and the CI
test (``tests/soak/test_relay_fuzz_small.py``, 5,000 requests).

What runs: ``create_app`` (as mounted: monitoring needs its token) under a real uvicorn server
in this process, on 127.0.0.1 (a socket the kernel gives a free port), over a ``RelayEngine``
whose outbox is a fresh SQLite file. No delivery worker: what the relay enqueues stays in the
outbox, to be checked. ``--clients`` threads post requests through keep-alive ``httpx`` clients.

What is fuzzed, from ``random.Random(seed + client)`` (so a seed gives the same requests):

- auth: valid Standard Webhooks signatures (either of a rotated pair of secrets, several
  entries among bogus ones), wrong or another source's secret, a body changed after signing,
  timestamps stale, in the future or malformed, missing headers, malformed and too many
  signature entries, ``webhook-id``/``webhook-timestamp``/``authorization`` sent twice with the
  same or a different value, bearer tokens right, wrong, unprefixed or empty, the auth of one
  source sent to another;
- paths: configured sources, unknown, percent-encoded, long; other methods; ``/health`` and
  ``/metrics`` with and without the monitoring token;
- bodies: generic events and Astro alerts (wrapped or not) with every field valid, missing,
  of the wrong type, too long, with control characters, lone surrogates, naive or out-of-range
  timestamps, attributes nested or too many; non-objects, duplicate keys, NaN, huge numbers,
  deep nesting, invalid UTF-8, UTF-16, a BOM, gzip, empty; content types; chunked bodies;
  bodies over the limit; event ids shared between sources (one source trying to pre-empt
  another's event);
- templates: the rules' ``conf``/``note``/``extra`` use templates drawn from the seed; each
  candidate goes through ``parse_config`` (what ``relay check`` runs) first, and every one it
  accepts is rendered for every event that matches.

The client decides, by the wire contract alone, whether each request carries valid auth for
its source. Figures: requests, answers by status, **5xx** (must be 0), **accepted without
valid auth** (202 to a request that had none: must be 0), **actions without a valid
signature** (outbox items whose provenance names an event no validly authenticated 202 had:
must be 0), valid requests refused with 401 (a model mismatch: must be 0), and the outbox rows
against the sum of ``new_actions`` the 202s reported (must be equal).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import json
import random
import re
import socket
import sqlite3
import string
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import LOCALHOST, env_vars, machine_notes, temp_dir

SMOKE_COUNT = 300  # --smoke: requests (seconds)
TOLERANCE = 300
MAX_BODY = 16384
METRICS_TOKEN = "soak-metrics-token-0123456789"
METRICS_ENV = "AIRFLOW__ASTRO_XDEPS__RELAY_METRICS_TOKEN"
_SECRET_BYTES = [f"soak-relay-fuzz-secret-{name}-32b".encode()[:32].ljust(32, b"x") for name in "ABCD"]
SECRETS = {
    name: "whsec_" + base64.b64encode(raw).decode() for name, raw in zip("ABCD", _SECRET_BYTES, strict=True)
}
BEARER = "soak-bearer-token-Zx9y8w7v6u5t4s3r"
ENV = {
    "XDEPS_SOAK_HOOKS_NEW": SECRETS["A"],
    "XDEPS_SOAK_HOOKS_OLD": SECRETS["B"],
    "XDEPS_SOAK_ASTRO": SECRETS["C"],
    "XDEPS_SOAK_CI": BEARER,
    METRICS_ENV: METRICS_TOKEN,
}
# source -> (auth, secrets that sign validly for it)
SOURCES = {
    "hooks": ("standard-webhooks", [SECRETS["A"], SECRETS["B"]]),
    "astro": ("standard-webhooks", [SECRETS["C"]]),
    "ci": ("bearer", [BEARER]),
}
EVENT_TYPES = (
    "dag_run.success",
    "dag_run.failed",
    "dag_run.running",
    "dag_run.late",
    "dag_run.too_long",
    "task_instance.success",
    "task_instance.failed",
    "task_instance.too_long",
)
ALERT_TYPES = (
    "DAG_SUCCESS",
    "DAG_FAILURE",
    "PIPELINE_FAILURE",
    "DAG_DURATION",
    "DAG_TIMELINESS",
    "TASK_FAILURE",
    "TASK_DURATION",
)
DAG_IDS = (
    "load_orders",
    "load_eu",
    "extract_a",
    "extract_a2",
    "extract_b",
    "extract_b7",
    "report",
    "x.y-z_1",
)
TEMPLATE_CANDIDATES = 80
_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
MAX_TEMPLATES = 12


# -- the relay under test -------------------------------------------------------------------------


def _templates(rng: random.Random) -> tuple[list[str], int]:
    """Template strings drawn from the seed that ``parse_config`` accepts, and how many it refused."""
    from astro_xdeps.exceptions import ConfigError
    from astro_xdeps.relay.config import parse_config
    from astro_xdeps.relay.rules import TEMPLATE_FIELDS

    pieces = [
        *(f"{{{f}}}" for f in TEMPLATE_FIELDS),
        "{message}" * 6,
        "{message:{run_id}}",
        "{run_id!r}",
        "{dag_id:>10}",
        "{nope}",
        "{0}",
        "{}",
        "{dag_id.__class__}",
        "{dag_id[0]}",
        "{",
        "}",
        "{{",
        "}}",
        "plain text ",
        "ünï©ødé ",
        "\\n",
        " / ",
    ]
    accepted: list[str] = []
    refused = 0
    for _ in range(TEMPLATE_CANDIDATES):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 5)))
        rule = {
            "name": "t",
            "when": {},
            "then": [{"trigger_dag": {"target": "t", "dag_id": "d", "note": text}}],
        }
        try:
            parse_config({"rules": [rule]})
        except ConfigError:
            refused += 1
            continue
        if len(accepted) < MAX_TEMPLATES:
            accepted.append(text)
    return accepted, refused


def _config(templates: list[str]) -> dict[str, Any]:
    conf = {f"t{i}": t for i, t in enumerate(templates)}
    conf["fixed"] = {"n": 1, "list": [1.5, True, None, "{dag_id}"]}
    return {
        "sources": [
            {
                "name": "hooks",
                "secrets_env": ["XDEPS_SOAK_HOOKS_NEW", "XDEPS_SOAK_HOOKS_OLD"],
                "deployment": "up",
            },
            {"name": "astro", "secrets_env": ["XDEPS_SOAK_ASTRO"], "tolerance_seconds": TOLERANCE},
            {"name": "ci", "auth": "bearer", "secrets_env": ["XDEPS_SOAK_CI"]},
        ],
        "rules": [
            {
                "name": "every-event",
                "when": {"type": "*"},
                "then": [
                    {
                        "trigger_dag": {
                            "target": "down",
                            "dag_id": "react",
                            "conf": conf,
                            "note": templates[0] if templates else "{dag_id}",
                        }
                    }
                ],
            },
            {
                "name": "failures",
                "when": {"type": ["dag_run.failed", "task_instance.failed"], "dag_id": "load_*"},
                "then": [
                    {
                        "asset_event": {
                            "target": "down",
                            "uri": "s3://soak/" + "u" * 600,
                            "extra": {"why": "{message}"},
                        }
                    },
                    {"trigger_dag": {"target": "other", "dag_id": "recover", "note": "{message}{message}"}},
                ],
            },
            {
                "name": "both-extracts",
                "when_all": [
                    {"type": "dag_run.success", "dag_id": "extract_a*"},
                    {"type": "dag_run.success", "dag_id": "extract_b*"},
                ],
                "within": "1h",
                "then": [{"trigger_dag": {"target": "down", "dag_id": "report", "conf": {"by": "{id}"}}}],
            },
        ],
        "max_body_bytes": MAX_BODY,
    }


@contextlib.contextmanager
def _relay_server(outbox_path: Path, config_data: dict[str, Any]) -> Iterator[str]:
    """The relay app under uvicorn in a thread of this process; yields its base URL."""
    import uvicorn

    from astro_xdeps.outbox import Outbox
    from astro_xdeps.relay.app import RelayRuntime, create_app
    from astro_xdeps.relay.config import parse_config
    from astro_xdeps.relay.engine import RelayEngine

    config = parse_config(config_data)
    outbox = Outbox.sqlite(outbox_path)
    app = create_app(lambda: RelayRuntime(RelayEngine(config, outbox)))  # as mounted
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOCALHOST, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="off", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="soak-relay", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the relay server did not start within 30 s")
            time.sleep(0.02)
        yield f"http://{LOCALHOST}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        outbox.close()


# -- requests -------------------------------------------------------------------------------------


@dataclass
class Case:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    chunked: bool = False
    source: str | None = None  # the configured source the path names, if any
    valid_auth: bool = False  # by the wire contract: would a correct relay let this in?
    kind: str = "event"


def _text(rng: random.Random, n: int) -> str:
    alphabet = string.ascii_letters + string.digits + " _-.:/{}\"'\\ü€😀\t\n\x00\x1f\x7f"
    return "".join(rng.choice(alphabet) for _ in range(n))


def _key(rng: random.Random) -> str:
    return (
        rng.choice(DAG_IDS)
        if rng.random() < 0.85
        else "".join(rng.choice(string.ascii_letters + "_.-") for _ in range(rng.randint(1, 20)))
    )


def _bad_value(rng: random.Random) -> Any:
    return rng.choice(
        [
            None,
            0,
            -1,
            1.5,
            True,
            [],
            {},
            ["a"],
            {"a": 1},
            "",
            " ",
            "a b",
            "x" * 251,
            "ctrl\x00",
            "\ud800",
            "é" * 10,
            2**70,
        ]
    )


def _timestamp(rng: random.Random) -> Any:
    r = rng.random()
    if r < 0.6:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - rng.randint(0, 86400)))
    return rng.choice(
        [
            "2026-01-31T12:00:00+02:00",
            "2026-01-31T12:00:00",  # naive
            "9999-12-31T23:59:59-14:00",  # out of range in UTC
            "0001-01-01T00:00:00+14:00",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "",
            12345,
            "2026-01-31T12:00:00.123456789Z",
            "x" * 80,
        ]
    )


def _generic(rng: random.Random, ids: list[str]) -> dict[str, Any]:
    etype = rng.choice(EVENT_TYPES)
    event: dict[str, Any] = {"type": etype, "dag_id": _key(rng)}
    if rng.random() < 0.7:
        event["run_id"] = f"scheduled__{rng.randint(0, 50)}"
    if etype.startswith("task_instance.") and rng.random() < 0.93:
        event["task_id"] = _key(rng)
    if rng.random() < 0.3:
        event["deployment"] = rng.choice(["prod", "dev", "ü", "x" * 40])
    if rng.random() < 0.6:
        event["occurred_at"] = _timestamp(rng)
    if rng.random() < 0.6:
        event["id"] = rng.choice(ids)  # shared by every source: one source may try another's id
    if rng.random() < 0.5:
        event["message"] = _text(rng, rng.choice([0, 10, 200, 2000, 2100]))
    if rng.random() < 0.3:
        event["attributes"] = {
            _text(rng, rng.randint(0, 70)): rng.choice(
                [1, 2.5, True, None, "v", "x" * 501, [1], {"a": 1}, 2**64]
            )
            for _ in range(rng.choice([1, 3, 33]))
        }
    if rng.random() < 0.2:
        event[_text(rng, 8)] = _text(rng, 8)  # unknown fields are ignored
    if rng.random() < 0.25:  # one field of the wrong type, empty, too long, ...
        event[
            rng.choice(
                [
                    "type",
                    "dag_id",
                    "run_id",
                    "task_id",
                    "deployment",
                    "id",
                    "message",
                    "attributes",
                    "occurred_at",
                ]
            )
        ] = _bad_value(rng)
    return event


def _alert(rng: random.Random) -> dict[str, Any]:
    alert: dict[str, Any] = {
        "alertType": rng.choice(ALERT_TYPES) if rng.random() < 0.9 else _text(rng, 10),
        "dagName": _key(rng),
    }
    if rng.random() < 0.7:
        alert["alertId"] = f"alert-{rng.randint(0, 99)}"
    if rng.random() < 0.8:
        when = rng.choice(
            ["2026-01-31 12:00:00", "2026-13-45 99:99:99", time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())]
        )
        alert["message"] = (
            f"[Astro Alerts] failure {_text(rng, rng.randint(0, 50))}\nAlert notification time: {when} UTC."
            + "m" * rng.choice([0, 0, 3000])
        )
    for key in ("taskId", "dagRunId", "deploymentName", "severity"):
        if rng.random() < 0.2:
            alert[key] = _key(rng) if rng.random() < 0.8 else _bad_value(rng)
    return {"conf": alert} if rng.random() < 0.3 else alert


def _body(rng: random.Random, ids: list[str]) -> tuple[bytes, list[tuple[str, str]]]:
    """A request body and the extra headers (content-type, content-encoding) that go with it."""
    ctype = rng.choices(
        [
            "application/json",
            "application/json; charset=utf-8",
            "APPLICATION/JSON",
            None,
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/json-seq",
        ],
        weights=[70, 8, 4, 6, 4, 4, 4],
    )[0]
    headers = [("content-type", ctype)] if ctype else []
    r = rng.random()
    if r < 0.62:
        obj: Any = _generic(rng, ids)
    elif r < 0.80:
        obj = _alert(rng)
    elif r < 0.86:
        obj = rng.choice([[_generic(rng, ids)], "event", 42, None, True, {}, {"conf": "x"}])
    else:
        raw = rng.choice(
            [
                b"",
                b"   ",
                b'{"type": "dag_run.failed",',
                b"{'a': 1}",
                b'{"type": NaN, "dag_id": "d"}',
                b'{"type": "dag_run.failed", "type": "dag_run.success", "dag_id": "d"}',
                b'{"type": "dag_run.failed", "dag_id": "d", "attributes": {"n": ' + b"9" * 5000 + b"}}",
                b"[" * 5000 + b"]" * 5000,
                b'{"type": "dag_run.failed", "dag_id": "\xff\xfe"}',
                "\ufeff".encode() + b'{"type": "dag_run.failed", "dag_id": "d"}',
                json.dumps({"type": "dag_run.failed", "dag_id": "d"}).encode("utf-16"),
                gzip.compress(b'{"type": "dag_run.failed", "dag_id": "d", "id": "gz"}'),
                bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300))),
            ]
        )
        if raw.startswith(b"\x1f\x8b"):
            headers.append(("content-encoding", "gzip"))
        return raw, headers
    ensure_ascii = rng.random() < 0.5
    text = json.dumps(obj, ensure_ascii=ensure_ascii, separators=rng.choice([(",", ":"), (", ", ": ")]))
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: send it escaped instead
        raw = json.dumps(obj, ensure_ascii=True).encode()
    if rng.random() < 0.02:
        raw = (
            raw[:-1] + b', "pad": "' + b"p" * (MAX_BODY + 100) + b'"}'
            if raw.endswith(b"}")
            else raw + b" " * (MAX_BODY + 1)
        )
    elif rng.random() < 0.02:
        raw = text.encode("latin-1", "replace")
    return raw, headers


def _sign(secret: str, msg_id: str, ts: str, body: bytes) -> str:
    import hashlib
    import hmac

    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _webhook_auth(
    rng: random.Random, source: str, body: bytes, ids: list[str]
) -> tuple[list[tuple[str, str]], set[str], bytes]:
    """Standard Webhooks headers for ``source``: (headers, sources they are valid for, body sent)."""
    _, good = SOURCES[source]
    others = [
        s for name, (auth, secs) in SOURCES.items() if name != source and auth != "bearer" for s in secs
    ]
    msg_id = rng.choice(ids) if rng.random() < 0.5 else f"msg_{rng.getrandbits(48):x}"
    now = int(time.time())
    ts = str(now - rng.randint(-200, 200))
    secret = rng.choice(good)
    valid = True
    mode = rng.choices(
        [
            "valid",
            "rotation-pair",
            "wrong-secret",
            "body-changed",
            "stale",
            "future",
            "ts-garbage",
            "missing",
            "sig-garbage",
            "too-many",
            "id-bad",
            "dup-id",
            "dup-ts",
            "dup-same",
            "v1a-only",
            "bearer-instead",
        ],
        weights=[40, 5, 5, 4, 4, 3, 3, 4, 4, 2, 3, 4, 4, 4, 2, 2],
    )[0]
    sent = body
    if mode == "wrong-secret":
        secret = rng.choice([*others, SECRETS["D"]])
        # Still a correct signature: valid for whichever source has that secret (none for D).
    elif mode == "stale":
        ts = str(now - TOLERANCE - rng.randint(60, 10**6))
        valid = False
    elif mode == "future":
        ts = str(now + TOLERANCE + rng.randint(60, 10**6))
        valid = False
    elif mode == "id-bad":
        msg_id = rng.choice(["has space", "x" * 251, "tab\tid", ""])
        valid = False
    sig = (
        _sign(secret, msg_id, ts, body) if msg_id and " " not in msg_id and "\t" not in msg_id else "v1,AAAA"
    )
    if mode == "rotation-pair":
        sig = " ".join([_sign(SECRETS["D"], msg_id, ts, body), sig, "v1a,ZWQyNTUxOQ=="])
    elif mode == "body-changed":
        sent = (
            body + b" "
            if rng.random() < 0.5
            else body.replace(b"a", b"b", 1) + (b"" if b"a" in body else b"\n")
        )
        valid = False
    elif mode == "ts-garbage":
        ts = rng.choice(["", "1.5", "-1", "abc", "9" * 20, f" {now}x"])
        valid = False
    elif mode == "sig-garbage":
        sig = rng.choice(
            [
                "",
                "v1",
                "v1,",
                "v1,!!!",
                "v1," + base64.b64encode(b"short").decode(),
                "garbage",
                "v2," + sig[3:],
            ]
        )
        valid = False
    elif mode == "too-many":
        sig = " ".join(["v1,AAAA"] * 20 + [sig])
        valid = False
    elif mode == "v1a-only":
        sig = "v1a," + sig[3:]
        valid = False
    headers = [("webhook-id", msg_id), ("webhook-timestamp", ts), ("webhook-signature", sig)]
    if mode == "missing":
        headers.pop(rng.randrange(3))
        valid = False
    elif mode == "dup-id":
        headers.insert(rng.randint(0, 3), ("webhook-id", f"{msg_id}-other"))
        valid = False
    elif mode == "dup-ts":
        headers.insert(rng.randint(0, 3), ("webhook-timestamp", str(int(ts) - 1) if ts.isdigit() else "1"))
        valid = False
    elif mode == "dup-same":
        headers.append(headers[rng.randrange(3)])
    elif mode == "bearer-instead":  # valid auth, but for the bearer source only
        return [("authorization", f"Bearer {BEARER}"), ("webhook-id", msg_id)], {"ci"}, sent
    if not valid:
        return headers, set(), sent
    # Valid for every source that has the secret it was signed with (the auth may have been
    # made for one source and sent to another).
    return (
        headers,
        {name for name, (auth, secs) in SOURCES.items() if auth != "bearer" and secret in secs},
        sent,
    )


def _bearer_auth(rng: random.Random, ids: list[str]) -> tuple[list[tuple[str, str]], bool]:
    mode = rng.choices(
        [
            "valid",
            "lower",
            "wrong",
            "no-scheme",
            "basic",
            "empty",
            "missing",
            "dup-diff",
            "dup-same",
            "dup-id",
            "signed-instead",
        ],
        weights=[45, 5, 6, 4, 4, 3, 4, 4, 4, 4, 4],
    )[0]
    value = {
        "valid": f"Bearer {BEARER}",
        "lower": f"bearer {BEARER}",
        "wrong": f"Bearer {BEARER}x",
        "no-scheme": BEARER,
        "basic": "Basic " + base64.b64encode(f"u:{BEARER}".encode()).decode(),
        "empty": "Bearer",
    }.get(mode, f"Bearer {BEARER}")
    valid = mode in ("valid", "lower", "dup-same")
    headers = [("authorization", value)]
    if rng.random() < 0.7:
        headers.append(
            ("webhook-id", rng.choice(ids) if rng.random() < 0.5 else f"ci_{rng.getrandbits(40):x}")
        )
    if mode == "missing":
        headers = headers[1:]
    elif mode == "dup-diff":
        headers.append(("authorization", "Bearer another-token-0123456789"))
    elif mode == "dup-same":
        headers.append(("authorization", value))
    elif mode == "dup-id":
        headers += [("webhook-id", "ci-one"), ("webhook-id", "ci-two")]
        valid = False
    elif mode == "signed-instead":
        headers = [
            ("webhook-id", "m"),
            ("webhook-timestamp", "1"),  # stale: valid for no source whatever the body
            ("webhook-signature", _sign(SECRETS["A"], "m", "1", b"{}")),
        ]
        valid = False
    return headers, valid


def make_case(rng: random.Random, ids: list[str]) -> Case:
    r = rng.random()
    if r < 0.015:
        token = rng.choice([None, METRICS_TOKEN, "wrong-token-0123456789"])
        headers = [("authorization", f"Bearer {token}")] if token else []
        return Case("GET", rng.choice(["/metrics", "/health"]), headers, b"", kind="monitoring")
    if r < 0.02:
        return Case(rng.choice(["GET", "PUT", "DELETE", "PATCH"]), "/events/hooks", [], b"{}", kind="method")
    body, body_headers = _body(rng, ids)
    p = rng.random()
    if p < 0.92:
        source = rng.choice(list(SOURCES))
        path = f"/events/{source}"
    else:
        source = None
        path = "/events/" + rng.choice(
            ["nope", "HOOKS", "hooks%2F..", "h%C3%BCoks", "x" * 300, "hooks/extra", "%00", "ci%20"]
        )
    auth_for = source or rng.choice(list(SOURCES))
    if rng.random() < 0.05:  # auth made for another source
        auth_for = rng.choice([s for s in SOURCES if s != auth_for])
    if SOURCES[auth_for][0] == "bearer":
        auth_headers, bearer_valid = _bearer_auth(rng, ids)
        valid_for = {auth_for} if bearer_valid else set()
        sent = body
    else:
        auth_headers, valid_for, sent = _webhook_auth(rng, auth_for, body, ids)
    valid = source is not None and source in valid_for
    # Whether a duplicate header breaks the contract does not depend on order; shuffle a bit.
    headers = auth_headers + body_headers
    if rng.random() < 0.3:
        rng.shuffle(headers)
    if rng.random() < 0.1:
        headers.append(("x-" + _text(rng, 5).strip().replace(" ", "") or "x-y", "v"))
    return Case(
        "POST",
        path,
        [(k, v) for k, v in headers if _header_ok(k, v)],
        sent,
        chunked=rng.random() < 0.05,
        source=source,
        valid_auth=valid,
    )


def _header_ok(name: str, value: str) -> bool:
    """What HTTP lets a client send at all (h11 refuses the rest before it leaves)."""
    return (
        bool(_TOKEN.fullmatch(name))
        and value == value.strip(" \t")
        and all(32 <= ord(c) < 127 or c == "\t" for c in value)
    )


# -- the run --------------------------------------------------------------------------------------


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    accepted_without_valid_auth: int = 0
    valid_refused_401: int = 0
    new_actions: int = 0
    # (source, event id) -> event types of validly authenticated requests the relay accepted
    accepted: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _client_loop(base: str, seed: int, n: int, ids: list[str], tally: Tally) -> None:
    import httpx

    rng = random.Random(seed)
    with httpx.Client(base_url=base, timeout=60.0) as client:
        for _ in range(n):
            case = make_case(rng, ids)
            content: Any = case.body
            if case.chunked and case.body:
                content = iter([case.body[i : i + 512] for i in range(0, len(case.body), 512)])
            try:
                response = client.request(case.method, case.path, headers=case.headers, content=content)
            except httpx.HTTPError as exc:
                with tally.lock:
                    tally.errors[type(exc).__name__] += 1
                    if len(tally.examples) < 10:
                        tally.examples.append(
                            f"{type(exc).__name__}: {exc} {case.method} {case.path[:80]} {case.headers}"
                        )
                continue
            status = response.status_code
            with tally.lock:
                tally.statuses[status] += 1
                if status >= 500 and len(tally.examples) < 10:
                    tally.examples.append(f"{status} {case.method} {case.path} {response.text[:200]}")
                if case.kind != "event":
                    continue
                if status == 202:
                    if not case.valid_auth:
                        tally.accepted_without_valid_auth += 1
                        if len(tally.examples) < 10:
                            tally.examples.append(f"202 without valid auth: {case.path} {case.headers}")
                        continue
                    answer = response.json()
                    tally.new_actions += answer["new_actions"]
                    tally.accepted.setdefault((case.source or "", answer["event_id"]), set()).add(
                        answer["type"]
                    )
                elif status == 401 and case.valid_auth:
                    tally.valid_refused_401 += 1
                    if len(tally.examples) < 10:
                        tally.examples.append(
                            f"401 to valid auth: {case.path} {case.headers} {response.text[:200]}"
                        )


def _audit_outbox(path: Path, tally: Tally) -> dict[str, int]:
    """Every event in every item's provenance must be one a validly authenticated 202 carried."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT kind, payload FROM xdeps_outbox").fetchall()
    finally:
        conn.close()
    unsigned = 0
    for kind, payload_text in rows:
        payload = json.loads(payload_text)
        xdeps = payload["conf"]["xdeps"] if kind == "dag_run" else payload["extra"]["xdeps"]
        events = xdeps["events"]
        if not events or any(
            e.get("type") not in tally.accepted.get((e.get("source") or "", e.get("id")), ()) for e in events
        ):
            unsigned += 1
    return {"outbox_items": len(rows), "actions_without_valid_signature": unsigned}


def run(count: int, seed: int, *, clients: int = 4) -> dict:
    """Post ``count`` fuzzed requests to a real relay; return the figures (see the module doc)."""
    ids = [f"evt-{i}" for i in range(40)] + [f"msg_shared_{i}" for i in range(40)]
    templates, refused = _templates(random.Random(seed))
    tally = Tally()
    started = time.monotonic()
    with temp_dir("xdeps-soak-relay-") as tmp, env_vars(ENV):
        outbox_path = tmp / "outbox.db"
        with _relay_server(outbox_path, _config(templates)) as base:
            per_client = [count // clients + (1 if i < count % clients else 0) for i in range(clients)]
            threads = [
                threading.Thread(
                    target=_client_loop, args=(base, seed * 1000 + i, n, ids, tally), name=f"soak-client-{i}"
                )
                for i, n in enumerate(per_client)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            monitoring = _monitoring_checks(base)
        elapsed = time.monotonic() - started
        audit = _audit_outbox(outbox_path, tally)
    requests = sum(tally.statuses.values()) + sum(tally.errors.values())
    return {
        "requests": requests,
        "seed": seed,
        "clients": clients,
        "seconds": round(elapsed, 1),
        "requests_per_second": round(requests / elapsed, 1) if elapsed else 0.0,
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "5xx": sum(v for k, v in tally.statuses.items() if k >= 500),
        "transport_errors": sum(tally.errors.values()),
        "transport_error_kinds": dict(tally.errors),
        "accepted_without_valid_auth": tally.accepted_without_valid_auth,
        "actions_without_valid_signature": audit["actions_without_valid_signature"],
        "valid_auth_refused_401": tally.valid_refused_401,
        "validly_accepted_events": len(tally.accepted),
        "new_actions_reported": tally.new_actions,
        "outbox_items": audit["outbox_items"],
        "templates_used": len(templates),
        "templates_refused_at_load": refused,
        "monitoring": monitoring,
        "examples": tally.examples,
    }


def _monitoring_checks(base: str) -> dict[str, int]:
    import httpx

    # 30 s: /metrics counts the outbox, which takes longer than httpx's default 5 s on a loaded machine.
    return {
        "metrics_anonymous": httpx.get(base + "/metrics", timeout=30).status_code,
        "metrics_with_token": httpx.get(
            base + "/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"}, timeout=30
        ).status_code,
        "health_anonymous_keys": len(httpx.get(base + "/health", timeout=30).json()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak_relay", description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=100_000, help="requests to post (default 100000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--clients", type=int, default=4, help="client threads posting at once")
    parser.add_argument(
        "--smoke", action="store_true", help=f"{SMOKE_COUNT} requests: that it runs (seconds)"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.count = SMOKE_COUNT
    notes = machine_notes()
    figures = run(args.count, args.seed, clients=args.clients)
    print(json.dumps({"machine": notes, "figures": figures}, indent=2))
    ok = (
        figures["5xx"] == 0
        and figures["transport_errors"] == 0
        and figures["accepted_without_valid_auth"] == 0
        and figures["actions_without_valid_signature"] == 0
        and figures["valid_auth_refused_401"] == 0
        and figures["outbox_items"] == figures["new_actions_reported"]
    )
    print(
        f"relay fuzz: {figures['requests']} requests, {figures['5xx']} 5xx, "
        f"{figures['actions_without_valid_signature']} actions without a valid signature, "
        f"{figures['accepted_without_valid_auth']} accepted without valid auth -> {'OK' if ok else 'FAILED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

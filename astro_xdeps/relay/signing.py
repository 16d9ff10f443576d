"""Who sent this request? Standard Webhooks 1.0 signatures, and plain bearer secrets.

Wire contract (Standard Webhooks 1.0.0, ``spec/standard-webhooks.md`` in
github.com/standard-webhooks/standard-webhooks)::

    webhook-id:        msg_2KWPBgLlAfxdpx2AI54pPJ85f4W     idempotency key, the same on every retry
    webhook-timestamp: 1674087231                         integer unix seconds of this attempt
    webhook-signature: v1,K5oZfzN9...= v1a,hnO3f9T8...=   space-separated, one entry per signing key

    v1 signature = base64(HMAC-SHA256(key, b"{webhook-id}.{webhook-timestamp}." + raw body))

A request is authentic when ANY ``v1`` signature matches ANY configured secret, so a secret is
rotated by configuring the old and the new one side by side (or by a sender that signs with
both). Other versions (``v1a`` is ed25519) are skipped. A timestamp more than ``tolerance``
seconds from now, in either direction, is refused: that bounds replays. The timestamp is signed
exactly as sent.

Secrets are ``whsec_`` + base64 of at least 24 random bytes (``generate_secret()``). As in the
reference libraries (``libraries/python/standardwebhooks/webhooks.py``), the prefix is optional and
the rest is always base64-decoded: the HMAC key is the decoded bytes, never the text itself.
Unlike the Python reference, which drops characters outside the base64 alphabet, a secret that is
not clean base64 is refused, so a typo cannot silently become a different key.

The simpler option, ``Authorization: Bearer <secret>``, only shows that the sender knows the
secret: no replay window and no body integrity beyond TLS.

Errors::

    SignatureError   the request is not authentic (answer 401). The message says which header is
                     wrong and how; it never holds a secret, an expected signature or a token.
    ConfigError      a configured secret is unusable: a server-side fault (answer 503, log the
                     reason, fix the configuration). Checked before the request is looked at.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import secrets as _secrets
import time
from collections.abc import Iterable, Mapping, Sequence

from astro_xdeps.exceptions import ConfigError, SignatureError

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"
HEADER_AUTHORIZATION = "authorization"

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE = 300.0
MIN_SECRET_BYTES = 24  # the spec: "Random. At least 24 bytes"
MIN_BEARER_CHARS = 16
MAX_ID_CHARS = 250  # the idempotency key ends up in event ids; Airflow ids are at most 250 chars
MAX_SIGNATURES = 20

_DIGEST_BYTES = hashlib.sha256().digest_size
_TIMESTAMP = re.compile(r"[0-9]{1,15}")
_PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]+")


def generate_secret(num_bytes: int = 32) -> str:
    """A new random secret in the ``whsec_<base64>`` form senders and this relay share."""
    if num_bytes < MIN_SECRET_BYTES:
        raise ValueError(f"a webhook secret needs at least {MIN_SECRET_BYTES} random bytes, not {num_bytes}")
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(num_bytes)).decode("ascii")


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_...`` secret (prefix optional). Raises ConfigError if unusable."""
    return _decode_secret(secret, "webhook secret")


def sign(msg_id: str, timestamp: float, body: bytes, secret: str) -> str:
    """The ``webhook-signature`` entry (``v1,<base64>``) for one secret.

    ``timestamp`` is unix seconds; fractions are dropped, as the header carries whole seconds.
    """
    key = decode_secret(secret)
    problem = _msg_id_problem(msg_id)
    if problem:
        raise ValueError(problem)
    return _signature(key, msg_id, _timestamp_text(timestamp), _raw(body))


def webhook_headers(
    body: bytes, secrets: Sequence[str], *, msg_id: str, timestamp: float | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for a request, signed with every secret given.

    ``msg_id`` must stay the same when the same event is sent again: it is the idempotency key.
    ``timestamp`` defaults to now; a retry should be signed again with a fresh one.
    """
    keys = _decode_secrets(secrets)
    problem = _msg_id_problem(msg_id)
    if problem:
        raise ValueError(problem)
    ts = _timestamp_text(time.time() if timestamp is None else timestamp)
    raw = _raw(body)
    return {
        HEADER_ID: msg_id,
        HEADER_TIMESTAMP: ts,
        HEADER_SIGNATURE: " ".join(_signature(key, msg_id, ts, raw) for key in keys),
    }


def verify_standard_webhook(
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[str],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> str:
    """Check a Standard Webhooks request and return its ``webhook-id``.

    ``body`` is the raw request body exactly as received (parse JSON only after this).
    ``secrets`` are every secret currently accepted (old and new during a rotation).
    ``now`` is unix seconds, for tests. Header names are matched case-insensitively.
    """
    keys = _decode_secrets(secrets)
    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise ConfigError(f"the webhook timestamp tolerance must be finite seconds >= 0, not {tolerance!r}")
    raw = _raw(body)
    found = _find_headers(headers, (HEADER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE))
    missing = [name for name in (HEADER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE) if not found.get(name)]
    if missing:
        raise SignatureError(
            f"missing header{'s' if len(missing) > 1 else ''} {', '.join(missing)}: a signed request carries "
            f"{HEADER_ID}, {HEADER_TIMESTAMP} and {HEADER_SIGNATURE} (Standard Webhooks)"
        )
    msg_id = found[HEADER_ID]
    problem = _msg_id_problem(msg_id)
    if problem:
        raise SignatureError(problem)

    timestamp = found[HEADER_TIMESTAMP]
    if not _TIMESTAMP.fullmatch(timestamp):
        raise SignatureError(
            f"{HEADER_TIMESTAMP} must be whole unix seconds such as 1674087231, got {_excerpt(timestamp)}"
        )
    age = (time.time() if now is None else now) - int(timestamp)
    if age > tolerance:
        raise SignatureError(
            f"{HEADER_TIMESTAMP} is too old: signed {age:.0f} s ago, {age - tolerance:.0f} s beyond the "
            f"{tolerance:g} s tolerance (a replayed request, or the sender's clock is behind)"
        )
    if -age > tolerance:
        raise SignatureError(
            f"{HEADER_TIMESTAMP} is {-age:.0f} s in the future, {-age - tolerance:.0f} s beyond the "
            f"{tolerance:g} s tolerance (the sender's clock is ahead)"
        )

    candidates = _v1_signatures(found[HEADER_SIGNATURE])
    signed = b"%s.%s.%s" % (msg_id.encode("ascii"), timestamp.encode("ascii"), raw)
    for key in keys:
        expected = hmac.new(key, signed, hashlib.sha256).digest()
        for candidate in candidates:
            if hmac.compare_digest(expected, candidate):
                return msg_id
    raise SignatureError(
        f"no v1 signature matched any of the {len(keys)} configured secret(s): the body, {HEADER_ID} or "
        f"{HEADER_TIMESTAMP} changed after signing (a proxy re-encoding the body?), or the sender signs "
        "with a secret this relay does not have"
    )


def verify_bearer(headers: Mapping[str, str], secrets: Sequence[str]) -> None:
    """Check ``Authorization: Bearer <secret>`` against every configured secret, in constant time."""
    tokens = _bearer_tokens(secrets)
    value = _find_headers(headers, (HEADER_AUTHORIZATION,)).get(HEADER_AUTHORIZATION)
    if not value:
        raise SignatureError(f"missing header {HEADER_AUTHORIZATION}: send 'Authorization: Bearer <secret>'")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        # The scheme is not echoed: a client that forgot "Bearer " would see its secret in the reply.
        raise SignatureError(f"the {HEADER_AUTHORIZATION} header must be 'Bearer <secret>'")
    sent = token.strip().encode("utf-8", "surrogatepass")
    if not sent:
        raise SignatureError(f"the {HEADER_AUTHORIZATION} header has an empty bearer token")
    matched = False
    for expected in tokens:  # no early exit: every secret is compared
        matched |= hmac.compare_digest(expected, sent)
    if not matched:
        raise SignatureError("the bearer token does not match any configured secret")


# --- helpers -------------------------------------------------------------------------------------


def _decode_secrets(secrets: Sequence[str]) -> list[bytes]:
    names = _secret_list(secrets, "webhook secret")
    return [_decode_secret(secret, name) for name, secret in names]


def _secret_list(secrets: Sequence[str], what: str) -> list[tuple[str, str]]:
    if isinstance(secrets, (str, bytes)):
        raise ConfigError(f"pass the {what}s as a list, not as one string")
    items = list(secrets)
    if not items:
        raise ConfigError(f"no {what} is configured: set at least one")
    if len(items) == 1:
        return [(what, items[0])]
    return [(f"{what} #{number}", item) for number, item in enumerate(items, start=1)]


def _decode_secret(secret: str, name: str) -> bytes:
    if not isinstance(secret, str):
        raise ConfigError(f"{name} must be a string, not {type(secret).__name__}")
    text = secret.strip()
    encoded = text[len(SECRET_PREFIX) :] if text.startswith(SECRET_PREFIX) else text
    if not encoded:
        raise ConfigError(f"{name} is empty: generate one with astro_xdeps.relay.signing.generate_secret()")
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except ValueError as exc:  # binascii.Error, or non-ASCII text
        raise ConfigError(
            f"{name} is not valid base64 after the optional {SECRET_PREFIX} prefix "
            f"({len(encoded)} characters): copy it again from the sender"
        ) from exc
    if len(key) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"{name} decodes to {len(key)} bytes; Standard Webhooks secrets have at least "
            f"{MIN_SECRET_BYTES} random bytes: generate one with astro_xdeps.relay.signing.generate_secret()"
        )
    return key


def _bearer_tokens(secrets: Sequence[str]) -> list[bytes]:
    tokens = []
    for name, secret in _secret_list(secrets, "bearer secret"):
        if not isinstance(secret, str):
            raise ConfigError(f"{name} must be a string, not {type(secret).__name__}")
        if len(secret) < MIN_BEARER_CHARS or any(ch.isspace() for ch in secret):
            raise ConfigError(
                f"{name} must be at least {MIN_BEARER_CHARS} characters without spaces "
                f"(it has {len(secret)}): use a long random value such as generate_secret()"
            )
        tokens.append(secret.encode("utf-8", "surrogatepass"))
    return tokens


def single_header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header ``name`` (None if absent); refused if sent twice with different values.

    Pass the server's multi-valued headers (Starlette's ``request.headers``), not ``dict()`` of
    them: a dict keeps one value of a repeated header and hides the repetition.
    """
    return _find_headers(headers, (name.lower(),)).get(name.lower()) or None


def _find_headers(headers: Mapping[str, str], names: Iterable[str]) -> dict[str, str]:
    """The wanted headers by lower-case name; a header repeated with different values is refused.

    ``headers.items()`` must yield every value of a repeated header, as Starlette's ``Headers``
    and a list of pairs do.
    """
    wanted = set(names)
    found: dict[str, str] = {}
    for key, value in headers.items():
        name = key.lower()
        if name not in wanted:
            continue
        value = value.strip()
        if name in found and found[name] != value:
            raise SignatureError(f"header {name} was sent more than once with different values; send it once")
        found[name] = value
    return found


def _v1_signatures(header: str) -> list[bytes]:
    entries = header.split()
    if len(entries) > MAX_SIGNATURES:
        raise SignatureError(
            f"{HEADER_SIGNATURE} carries {len(entries)} signatures; at most {MAX_SIGNATURES} are accepted"
        )
    signatures: list[bytes] = []
    other_versions: list[str] = []
    problems: list[str] = []
    for number, entry in enumerate(entries, start=1):
        version, comma, value = entry.partition(",")
        if not comma:
            problems.append(f"entry {number} is not 'version,signature'")
        elif version != SIGNATURE_VERSION:
            other_versions.append(_excerpt(version, 12))
        else:
            try:
                digest = base64.b64decode(value, validate=True)
            except ValueError:
                problems.append(f"v1 entry {number} is not valid base64")
                continue
            if len(digest) != _DIGEST_BYTES:
                problems.append(
                    f"v1 entry {number} decodes to {len(digest)} bytes, an HMAC-SHA256 has {_DIGEST_BYTES}"
                )
                continue
            signatures.append(digest)
    if signatures:
        return signatures
    if problems:
        raise SignatureError(f"{HEADER_SIGNATURE} has no usable v1 signature: {'; '.join(problems)}")
    seen = ", ".join(dict.fromkeys(other_versions))
    raise SignatureError(
        f"{HEADER_SIGNATURE} has no v1 signature (found: {seen}); this relay checks HMAC-SHA256 "
        "signatures written 'v1,<base64>'"
    )


def _signature(key: bytes, msg_id: str, timestamp: str, body: bytes) -> str:
    signed = b"%s.%s.%s" % (msg_id.encode("ascii"), timestamp.encode("ascii"), body)
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def _msg_id_problem(msg_id: object) -> str | None:
    if not isinstance(msg_id, str) or not msg_id:
        return f"{HEADER_ID} must be a non-empty string"
    if len(msg_id) > MAX_ID_CHARS:
        return f"{HEADER_ID} is {len(msg_id)} characters; at most {MAX_ID_CHARS} are accepted"
    if not _PRINTABLE_ASCII.fullmatch(msg_id):
        return f"{HEADER_ID} must be printable ASCII without spaces, got {_excerpt(msg_id)}"
    return None


def _timestamp_text(timestamp: float) -> str:
    if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)) or not math.isfinite(timestamp):
        raise ValueError(f"timestamp must be unix seconds, not {timestamp!r}")
    if timestamp < 0:
        raise ValueError(f"timestamp must not be negative, got {timestamp!r}")
    return str(math.floor(timestamp))


def _raw(body: bytes) -> bytes:
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    raise TypeError(f"body must be the raw request bytes as received, not {type(body).__name__}")


def _excerpt(value: str, limit: int = 40) -> str:
    """A quoted, shortened copy of a sender-supplied value, safe to put in a message."""
    return repr(value[:limit]) + ("..." if len(value) > limit else "")

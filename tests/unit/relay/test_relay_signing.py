"""Standard Webhooks verification and bearer secrets, against the spec's reference vectors."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterator, Mapping

import pytest

from astro_xdeps.exceptions import ConfigError, SignatureError, XdepsError
from astro_xdeps.relay.signing import (
    DEFAULT_TOLERANCE,
    MAX_SIGNATURES,
    decode_secret,
    generate_secret,
    sign,
    verify_bearer,
    verify_standard_webhook,
    webhook_headers,
)

# The fixed example of the reference libraries' tests (standard-webhooks/standard-webhooks,
# libraries/python/tests/test_webhooks.py and libraries/javascript/src/webhook.test.ts).
REF_SECRET = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
REF_MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
REF_PAYLOAD = b'{"test": 2432232314}'
REF_TIMESTAMP = 1614265330
REF_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
REF_BAD_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="  # last byte changed
REF_OTHER = "Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="  # a well-formed signature of nothing here

# The example header of the spec (spec/standard-webhooks.md, "Webhook headers"): one v1 and one v1a
# (ed25519) signature. Its secret is not published, so it only shows how the header is read.
SPEC_MSG_ID = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
SPEC_TIMESTAMP = 1674087231
SPEC_SIGNATURE = (
    "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4= "
    "v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzCInXqYXFymVJaA7AZdpXwVLPo3mNl8EM+m7TBAg=="
)

OLD_SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()
NEW_SECRET = "whsec_" + base64.b64encode(b"n" * 32).decode()
BEARER = "s3cr3t-bearer-token-0123456789"


def ref_headers(signature: str = REF_SIGNATURE) -> dict[str, str]:
    return {
        "webhook-id": REF_MSG_ID,
        "webhook-timestamp": str(REF_TIMESTAMP),
        "webhook-signature": signature,
    }


def verify_ref(headers: Mapping[str, str], secrets: list[str] | None = None, **kw: float) -> str:
    kw.setdefault("now", REF_TIMESTAMP)
    return verify_standard_webhook(headers, REF_PAYLOAD, [REF_SECRET] if secrets is None else secrets, **kw)


def reject(headers: Mapping[str, str], *, body: bytes = REF_PAYLOAD, secrets: list[str] | None = None, **kw):
    kw.setdefault("now", REF_TIMESTAMP)
    with pytest.raises(SignatureError) as info:
        verify_standard_webhook(headers, body, [REF_SECRET] if secrets is None else secrets, **kw)
    return info.value


class MultiHeaders(Mapping[str, str]):
    """Headers as a server may hand them over: the same name more than once."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs

    def __getitem__(self, key: str) -> str:
        return next(v for k, v in self.pairs if k.lower() == key.lower())

    def __iter__(self) -> Iterator[str]:
        return iter([k for k, _ in self.pairs])

    def __len__(self) -> int:
        return len(self.pairs)

    def items(self):  # type: ignore[override]
        return list(self.pairs)


# --- the reference vectors -----------------------------------------------------------------------


@pytest.mark.parametrize("secret", [REF_SECRET, "whsec_" + REF_SECRET])
def test_sign_reproduces_the_reference_vector(secret: str) -> None:
    assert sign(REF_MSG_ID, REF_TIMESTAMP, REF_PAYLOAD, secret) == REF_SIGNATURE


@pytest.mark.parametrize("secret", [REF_SECRET, "whsec_" + REF_SECRET])
def test_reference_vector_verifies_with_and_without_the_prefix(secret: str) -> None:
    assert verify_ref(ref_headers(), [secret]) == REF_MSG_ID


def test_reference_vector_is_the_documented_hmac() -> None:
    signed = f"{REF_MSG_ID}.{REF_TIMESTAMP}.".encode() + REF_PAYLOAD
    digest = hmac.new(base64.b64decode(REF_SECRET), signed, hashlib.sha256).digest()
    assert "v1," + base64.b64encode(digest).decode() == REF_SIGNATURE


def test_reference_invalid_signature_is_rejected() -> None:
    error = reject(ref_headers(REF_BAD_SIGNATURE))
    assert "no v1 signature matched any of the 1 configured secret(s)" in str(error)


def test_reference_multi_signature_header_is_valid() -> None:
    header = " ".join([f"v1,{REF_OTHER}", f"v2,{REF_OTHER}", REF_SIGNATURE, f"v1,{REF_OTHER}"])
    assert verify_ref(ref_headers(header)) == REF_MSG_ID


def test_spec_example_header_is_read_v1a_is_skipped() -> None:
    headers = {
        "webhook-id": SPEC_MSG_ID,
        "webhook-timestamp": str(SPEC_TIMESTAMP),
        "webhook-signature": SPEC_SIGNATURE,
    }
    # The v1 entry is well formed and compared; it just was not made with our secret.
    error = reject(headers, secrets=[REF_SECRET], now=SPEC_TIMESTAMP)
    assert "no v1 signature matched" in str(error)


def test_header_names_are_case_insensitive() -> None:
    headers = {
        "Webhook-Id": REF_MSG_ID,
        "WEBHOOK-TIMESTAMP": str(REF_TIMESTAMP),
        "webhook-Signature": REF_SIGNATURE,
    }
    assert verify_ref(headers) == REF_MSG_ID


def test_body_may_be_bytearray_or_memoryview_but_not_text() -> None:
    for body in (bytearray(REF_PAYLOAD), memoryview(REF_PAYLOAD)):
        assert verify_standard_webhook(ref_headers(), body, [REF_SECRET], now=REF_TIMESTAMP) == REF_MSG_ID
    with pytest.raises(TypeError, match="raw request bytes"):
        verify_standard_webhook(ref_headers(), REF_PAYLOAD.decode(), [REF_SECRET], now=REF_TIMESTAMP)  # type: ignore[arg-type]


def test_a_changed_body_does_not_verify() -> None:
    error = reject(ref_headers(), body=REF_PAYLOAD.replace(b"2432232314", b"2432232315"))
    assert "changed after signing" in str(error)


def test_a_reserialised_body_does_not_verify() -> None:
    reject(ref_headers(), body=b'{"test":2432232314}')


# --- the timestamp window ------------------------------------------------------------------------


def test_timestamp_exactly_at_the_tolerance_passes_both_ways() -> None:
    assert verify_ref(ref_headers(), now=REF_TIMESTAMP + DEFAULT_TOLERANCE) == REF_MSG_ID
    assert verify_ref(ref_headers(), now=REF_TIMESTAMP - DEFAULT_TOLERANCE) == REF_MSG_ID


def test_expired_timestamp_is_rejected_with_its_age() -> None:
    error = reject(ref_headers(), now=REF_TIMESTAMP + 301)
    assert str(error).startswith("webhook-timestamp is too old: signed 301 s ago, 1 s beyond the 300 s")


def test_future_timestamp_is_rejected_with_its_distance() -> None:
    error = reject(ref_headers(), now=REF_TIMESTAMP - 400)
    assert str(error).startswith("webhook-timestamp is 400 s in the future, 100 s beyond the 300 s tolerance")


def test_tolerance_is_a_parameter() -> None:
    assert verify_ref(ref_headers(), now=REF_TIMESTAMP + 3000, tolerance=3600) == REF_MSG_ID
    error = reject(ref_headers(), now=REF_TIMESTAMP + 11, tolerance=10)
    assert "10 s tolerance" in str(error)


def test_the_clock_is_used_when_now_is_not_given() -> None:
    # The reference example was signed in 2021: today it is a replay.
    with pytest.raises(SignatureError, match="too old"):
        verify_standard_webhook(ref_headers(), REF_PAYLOAD, [REF_SECRET])


@pytest.mark.parametrize("tolerance", [-1, float("nan"), float("inf")])
def test_an_unusable_tolerance_is_a_config_error(tolerance: float) -> None:
    with pytest.raises(ConfigError, match="tolerance"):
        verify_ref(ref_headers(), tolerance=tolerance)


# --- secrets and rotation ------------------------------------------------------------------------


def test_wrong_secret_is_rejected_without_revealing_secrets_or_signatures() -> None:
    error = reject(ref_headers(), secrets=[NEW_SECRET])
    text = str(error)
    assert "no v1 signature matched any of the 1 configured secret(s)" in text
    expected = sign(REF_MSG_ID, REF_TIMESTAMP, REF_PAYLOAD, NEW_SECRET).split(",", 1)[1]
    for secret_part in (NEW_SECRET, NEW_SECRET.removeprefix("whsec_"), expected, REF_SIGNATURE[3:]):
        assert secret_part not in text
    assert error.reason == text
    assert isinstance(error, XdepsError)


@pytest.mark.parametrize("signed_with", [OLD_SECRET, NEW_SECRET])
def test_rotation_both_configured_secrets_are_accepted(signed_with: str) -> None:
    headers = webhook_headers(REF_PAYLOAD, [signed_with], msg_id="msg_1", timestamp=REF_TIMESTAMP)
    assert verify_ref(headers, [OLD_SECRET, NEW_SECRET]) == "msg_1"


def test_rotation_sender_signing_with_old_and_new_passes_a_receiver_with_either() -> None:
    headers = webhook_headers(REF_PAYLOAD, [OLD_SECRET, NEW_SECRET], msg_id="msg_2", timestamp=REF_TIMESTAMP)
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert verify_ref(headers, [NEW_SECRET]) == "msg_2"
    assert verify_ref(headers, [OLD_SECRET]) == "msg_2"
    error = reject(headers, secrets=[REF_SECRET])
    assert "any of the 1 configured" in str(error)


def test_rotation_message_counts_the_configured_secrets() -> None:
    error = reject(ref_headers(), secrets=[OLD_SECRET, NEW_SECRET])
    assert "any of the 2 configured secret(s)" in str(error)


@pytest.mark.parametrize(
    ("secrets", "expected"),
    [
        ([], "no webhook secret is configured"),
        (REF_SECRET, "as a list, not as one string"),
        (["whsec_"], "webhook secret is empty"),
        (["   "], "webhook secret is empty"),
        (["whsec_not*base64!"], "not valid base64"),
        (["whsec_ünïcødé"], "not valid base64"),
        (["whsec_" + base64.b64encode(b"x" * 23).decode()], "decodes to 23 bytes"),
        ([REF_SECRET, "whsec_%%%"], "webhook secret #2 is not valid base64"),
        ([b"bytes-secret"], "must be a string"),
    ],
)
def test_unusable_secrets_are_config_errors_that_do_not_echo_them(secrets, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as info:
        verify_ref(ref_headers(), secrets)
    for secret in secrets if isinstance(secrets, list) else [secrets]:
        if isinstance(secret, str) and secret.strip().removeprefix("whsec_"):
            assert secret.strip().removeprefix("whsec_") not in str(info.value)


def test_config_is_checked_before_the_request() -> None:
    with pytest.raises(ConfigError):
        verify_standard_webhook({}, b"", [], now=0)


def test_unpadded_secrets_are_accepted_like_the_reference_does() -> None:
    raw = b"k" * 25  # base64 of 25 bytes ends in "=="
    padded = base64.b64encode(raw).decode()
    assert decode_secret("whsec_" + padded.rstrip("=")) == raw
    assert decode_secret(padded) == raw


def test_generate_secret_makes_usable_distinct_secrets() -> None:
    first, second = generate_secret(), generate_secret()
    assert first.startswith("whsec_") and first != second
    assert len(decode_secret(first)) == 32
    headers = webhook_headers(b"{}", [first], msg_id="msg_gen", timestamp=REF_TIMESTAMP)
    assert verify_standard_webhook(headers, b"{}", [first], now=REF_TIMESTAMP) == "msg_gen"
    with pytest.raises(ValueError, match="at least 24"):
        generate_secret(16)


def test_sign_drops_fractions_of_a_second() -> None:
    assert sign(REF_MSG_ID, REF_TIMESTAMP + 0.99, REF_PAYLOAD, REF_SECRET) == REF_SIGNATURE


@pytest.mark.parametrize("msg_id", ["", "has space", "x" * 251, "naïve"])
def test_sign_refuses_ids_a_receiver_would_refuse(msg_id: str) -> None:
    with pytest.raises(ValueError, match="webhook-id"):
        sign(msg_id, REF_TIMESTAMP, REF_PAYLOAD, REF_SECRET)


@pytest.mark.parametrize("timestamp", [-1, float("nan"), True, "1614265330"])
def test_sign_refuses_bad_timestamps(timestamp) -> None:
    with pytest.raises(ValueError, match="timestamp"):
        sign(REF_MSG_ID, timestamp, REF_PAYLOAD, REF_SECRET)


# --- malformed headers ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_each_missing_header_is_named(name: str) -> None:
    headers = ref_headers()
    del headers[name]
    error = reject(headers)
    assert str(error).startswith(f"missing header {name}:")


def test_all_missing_headers_are_listed() -> None:
    error = reject({"content-type": "application/json"})
    assert str(error).startswith("missing headers webhook-id, webhook-timestamp, webhook-signature:")


def test_an_empty_header_counts_as_missing() -> None:
    error = reject({**ref_headers(), "webhook-id": "  "})
    assert str(error).startswith("missing header webhook-id:")


@pytest.mark.parametrize(
    "timestamp", ["hello", "1614265330.5", "-1614265330", "1e9", "\uff11\uff12\uff13", "0x10", "9" * 16]
)
def test_non_integer_timestamps_are_rejected(timestamp: str) -> None:
    error = reject({**ref_headers(), "webhook-timestamp": timestamp})
    assert str(error).startswith("webhook-timestamp must be whole unix seconds such as 1674087231, got ")


def test_a_long_bad_timestamp_is_shortened_in_the_message() -> None:
    error = reject({**ref_headers(), "webhook-timestamp": "x" * 500})
    assert len(str(error)) < 200


@pytest.mark.parametrize(
    ("signature", "expected"),
    [
        ("v1,!!!notbase64!!!", "no usable v1 signature: v1 entry 1 is not valid base64"),
        ("v1,dawfeoifkpqwoekfpqoekf", "v1 entry 1 is not valid base64"),  # the JS reference's example
        ("v1,", "v1 entry 1 decodes to 0 bytes, an HMAC-SHA256 has 32"),
        (REF_SIGNATURE[:8], "v1 entry 1 is not valid base64"),  # the JS reference's partial signature
        ("v1," + base64.b64encode(b"short").decode(), "decodes to 5 bytes"),
        ("g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", "entry 1 is not 'version,signature'"),
        ("v1a,abc v2,def", "has no v1 signature (found: 'v1a', 'v2')"),
        ("V1," + REF_SIGNATURE[3:], "has no v1 signature (found: 'V1')"),
    ],
)
def test_malformed_signature_headers_say_what_is_wrong(signature: str, expected: str) -> None:
    error = reject(ref_headers(signature))
    assert expected in str(error)


def test_one_malformed_entry_does_not_hide_a_valid_one() -> None:
    assert verify_ref(ref_headers("garbage v1,%%% " + REF_SIGNATURE)) == REF_MSG_ID


def test_extra_spaces_between_signatures_are_tolerated() -> None:
    assert verify_ref(ref_headers(f"  v1,{REF_OTHER}    {REF_SIGNATURE}  ")) == REF_MSG_ID


def test_too_many_signatures_are_refused_before_any_work() -> None:
    error = reject(ref_headers(" ".join([REF_SIGNATURE] * (MAX_SIGNATURES + 1))))
    assert f"carries {MAX_SIGNATURES + 1} signatures; at most {MAX_SIGNATURES}" in str(error)


@pytest.mark.parametrize("msg_id", ["has space", "tab\there", "x" * 251, "msg_ünïcode"])
def test_unusable_webhook_ids_are_rejected(msg_id: str) -> None:
    error = reject({**ref_headers(), "webhook-id": msg_id})
    assert str(error).startswith("webhook-id ")


def test_a_header_repeated_with_different_values_is_refused() -> None:
    headers = MultiHeaders([*ref_headers().items(), ("Webhook-Signature", f"v1,{REF_OTHER}")])
    error = reject(headers)
    assert "header webhook-signature was sent more than once" in str(error)


def test_a_header_repeated_with_the_same_value_is_fine() -> None:
    repeated = [("WEBHOOK-ID", REF_MSG_ID), ("accept", "a"), ("accept", "b")]
    headers = MultiHeaders([*ref_headers().items(), *repeated])
    assert verify_ref(headers) == REF_MSG_ID


# --- bearer secrets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {BEARER}"},
        {"authorization": f"bearer {BEARER}"},
        {"AUTHORIZATION": f"BEARER   {BEARER}  "},
    ],
)
def test_bearer_secret_is_accepted(headers: dict[str, str]) -> None:
    assert verify_bearer(headers, [BEARER]) is None


def test_bearer_accepts_any_of_several_secrets() -> None:
    other = "another-long-bearer-secret-xyz"
    verify_bearer({"authorization": f"Bearer {other}"}, [BEARER, other])
    verify_bearer({"authorization": f"Bearer {BEARER}"}, [BEARER, other])


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, "missing header authorization"),
        ({"authorization": ""}, "missing header authorization"),
        ({"authorization": f"Basic {BEARER}"}, "must be 'Bearer <secret>'"),
        ({"authorization": "Bearer "}, "empty bearer token"),
        ({"authorization": "Bearer wrong-token-of-some-length"}, "does not match any configured secret"),
        ({"authorization": f"Bearer {BEARER}x"}, "does not match any configured secret"),
        ({"authorization": f"Bearer {BEARER[:-1]}"}, "does not match any configured secret"),
    ],
)
def test_bearer_failures_say_why(headers: dict[str, str], expected: str) -> None:
    with pytest.raises(SignatureError, match=expected) as info:
        verify_bearer(headers, [BEARER])
    assert BEARER not in str(info.value)


def test_a_secret_sent_without_the_scheme_is_not_echoed() -> None:
    with pytest.raises(SignatureError) as info:
        verify_bearer({"authorization": "my-secret-sent-without-scheme"}, [BEARER])
    assert "my-secret" not in str(info.value)


@pytest.mark.parametrize(
    ("secrets", "expected"),
    [
        ([], "no bearer secret is configured"),
        (BEARER, "as a list"),
        (["short"], "at least 16 characters"),
        (["", BEARER], "bearer secret #1 must be at least 16"),
        (["with a space inside the secret"], "without spaces"),
    ],
)
def test_unusable_bearer_secrets_are_config_errors(secrets, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        verify_bearer({"authorization": f"Bearer {BEARER}"}, secrets)

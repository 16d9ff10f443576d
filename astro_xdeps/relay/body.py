"""The raw body of a relay request, decoded as strict JSON before any field is looked at."""

from __future__ import annotations

import json
import math
from typing import Any

from astro_xdeps.exceptions import PayloadError
from astro_xdeps.state_events import describe


def parse_json_body(body: bytes, *, max_bytes: int) -> Any:
    """Decode a request body as strict JSON: at most ``max_bytes``, UTF-8, finite numbers, unique keys."""
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise TypeError(f"body must be the raw request bytes, not {type(body).__name__}")
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
        raise ValueError(f"max_bytes must be a positive integer, not {max_bytes!r}")
    data = bytes(body)
    if len(data) > max_bytes:
        raise PayloadError(f"the body is {len(data)} bytes; at most {max_bytes} are accepted")
    if not data.strip():
        raise PayloadError("the body is empty; expected a JSON object")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"the body is not valid UTF-8 (at byte {exc.start}); send UTF-8 JSON") from exc
    if text.startswith("\ufeff"):
        raise PayloadError("the body starts with a byte order mark; send UTF-8 JSON without one")
    try:
        return json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except json.JSONDecodeError as exc:
        raise PayloadError(
            f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except RecursionError as exc:
        raise PayloadError("the body is not accepted: JSON nested too deeply") from exc
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise PayloadError("the body is not accepted: a number in it is too large") from exc


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise PayloadError(f"the body is not accepted: key {describe(key)} appears twice in one object")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise PayloadError(f"the body is not valid JSON: {name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise PayloadError(f"the body is not accepted: the number {describe(text)} is out of range")
    return number

"""Delivery errors in plain words, for the page: what happened, what to check. Pure.

The worker keeps the full error (``DeploymentError`` text: message, call, HTTP status, body
excerpt, hint); an operator scanning a table needs one short sentence first.
"""

from __future__ import annotations

import re

_STATUS = re.compile(r"\bHTTP (\d{3})\b")
_GAVE_UP = re.compile(r"^gave up after ([\d.]+) h of retries: ")
_NO_ASSET = re.compile(r"^No asset with uri ('.*?') in the deployment")
_NO_CONNECTION = re.compile(r"^(?:No connection ('[^']*')|Connection ('[^']*') does not exist)")

_BY_STATUS = {
    400: "downstream answered 400: it refused the request as invalid; resending cannot help",
    401: "downstream answered 401: the token is wrong or expired",
    403: "downstream answered 403: the token works but may not create asset events or DAG runs",
    404: "downstream answered 404: the asset or DAG does not exist there (yet); is it deployed and parsed?",
    409: "downstream answered 409: it already has this DAG run",
    413: "downstream answered 413: the event is too large for it",
    422: "downstream answered 422: it refused the request's fields (an Airflow version mismatch?)",
    429: "downstream answered 429: it is rate-limiting us; retried after its Retry-After",
}


def plain_error(error: str | None) -> str | None:
    """One sentence an operator understands at a glance, or None when there is no error."""
    if not error:
        return None
    text = " ".join(str(error).split())
    prefix = ""
    gave_up = _GAVE_UP.match(text)
    if gave_up:
        prefix = f"gave up after {gave_up.group(1)} h of retries; last: "
        text = text[gave_up.end() :]
    if text.startswith("rejected by the target, not retried: "):
        prefix += "not retried: "
    no_asset = _NO_ASSET.match(text)
    if no_asset:
        return prefix + f"downstream has no asset {no_asset.group(1)} yet: deploy a DAG there that uses it"
    no_conn = _NO_CONNECTION.match(text)
    if no_conn:
        return (
            prefix
            + f"the connection {no_conn.group(1) or no_conn.group(2)} to downstream does not exist here"
        )
    m = _STATUS.search(text)
    if m:
        status = int(m.group(1))
        if status in _BY_STATUS:
            return prefix + _BY_STATUS[status]
        if status >= 500:
            return prefix + f"downstream answered {status}: its api-server is failing or overloaded; retried"
        return prefix + f"downstream answered {status}: {_first_part(text)}"
    lowered = text.lower()
    if "could not be reached" in lowered or "connectionerror" in lowered:
        return prefix + "downstream could not be reached: is it up, and is its URL in the connection right?"
    if "timed out" in lowered:
        return prefix + "downstream did not answer in time: it may be overloaded or hanging"
    if "not sent: the target was unreachable" in lowered:
        return prefix + "not sent: downstream was unreachable a moment before"
    if "connection" in lowered and ("not" in lowered or "missing" in lowered):
        return prefix + "the connection to downstream is missing or incomplete: " + _first_part(text)
    return prefix + _first_part(text)


def _first_part(text: str, limit: int = 200) -> str:
    head = text.split(" — ")[0]
    return head if len(head) <= limit else head[: limit - 1] + "…"

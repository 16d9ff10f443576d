"""Every refusal of the relay's event door in one shape: RFC 9457 ``application/problem+json``.

``post_event`` raises ``Problem``; one exception handler (``problem_response``) turns it into
the response: ``{"type", "title", "status", "detail"}`` plus its headers (``Retry-After`` on
503). ``type`` names the kind of refusal and never changes; ``detail`` says what to fix and is
built only from what the caller sent (never a secret, a source list, an env var or a path).
The types are listed in docs/relay.md ("Errors").
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi.responses import JSONResponse

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:astro-xdeps:relay:problem:"
UNAVAILABLE = "the relay cannot take events right now; retry later"


@dataclass(frozen=True)
class ProblemType:
    """A kind of refusal: its stable name, HTTP status and short human title."""

    name: str
    status: int
    title: str

    @property
    def uri(self) -> str:
        return TYPE_PREFIX + self.name


MALFORMED_BODY = ProblemType("malformed-body", 400, "The body is not a JSON document")
NOT_AUTHENTICATED = ProblemType("not-authenticated", 401, "The request is not authentic")
UNKNOWN_SOURCE = ProblemType("unknown-source", 404, "Unknown source")
BODY_TOO_LARGE = ProblemType("body-too-large", 413, "The body is too large")
NOT_JSON = ProblemType("unsupported-media-type", 415, "The body must be application/json")
INVALID_EVENT = ProblemType("invalid-event", 422, "The payload is not an event this relay accepts")
UNAVAILABLE_NOW = ProblemType("unavailable", 503, "The relay cannot take events now")


class Problem(Exception):
    """A refused event request. ``source`` labels the request in ``/metrics`` (``-``: none yet)."""

    def __init__(
        self, kind: ProblemType, detail: str, *, source: str = "-", headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.source = source
        self.headers = headers or {}

    @classmethod
    def unavailable(cls, retry_after: str, *, source: str = "-") -> Problem:
        """A 503 that says only "retry later": the reason belongs in the server log."""
        return cls(UNAVAILABLE_NOW, UNAVAILABLE, source=source, headers={"Retry-After": retry_after})


def problem_response(problem: Problem) -> JSONResponse:
    kind = problem.kind
    return JSONResponse(
        {"type": kind.uri, "title": kind.title, "status": kind.status, "detail": problem.detail},
        status_code=kind.status,
        headers=problem.headers or None,
        media_type=MEDIA_TYPE,
    )

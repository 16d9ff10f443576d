"""Delivery errors in plain words: the sentences the page shows first."""

from __future__ import annotations

import pytest

from astro_xdeps.exceptions import AuthError, NotFoundError, TransientError
from astro_xdeps.ui.words import plain_error


@pytest.mark.parametrize(
    ("error", "plain"),
    [
        (
            str(AuthError("The deployment did not accept our credentials", deployment="d", status=401)),
            "downstream answered 401: the token is wrong or expired",
        ),
        (
            str(NotFoundError("Not found in the deployment", status=404, body="No asset with uri 'x'")),
            "downstream answered 404: the asset or DAG does not exist there (yet); is it deployed and parsed?",
        ),
        (
            str(TransientError("The deployment is overloaded or failing", ambiguous=True, status=503)),
            "downstream answered 503: its api-server is failing or overloaded; retried",
        ),
        (
            str(TransientError("The deployment could not be reached (ConnectionError)", ambiguous=False)),
            "downstream could not be reached: is it up, and is its URL in the connection right?",
        ),
        (
            "gave up after 72 h of retries: The deployment timed out (ReadTimeout)",
            "gave up after 72 h of retries; last: downstream did not answer in time: it may be overloaded or hanging",
        ),
        (
            "rejected by the target, not retried: The deployment rejected the request — HTTP 422",
            "not retried: downstream answered 422: it refused the request's fields (an Airflow version mismatch?)",
        ),
        (
            str(
                NotFoundError(
                    "No asset with uri 's3://a' in the deployment", deployment="d", call="resolve asset"
                )
            ),
            "downstream has no asset 's3://a' yet: deploy a DAG there that uses it",
        ),
        (
            "Connection 'xdeps_x' does not exist. Create it (type 'xdeps_deployment') in the UI",
            "the connection 'xdeps_x' to downstream does not exist here",
        ),
        ("KeyError: 'uri'", "KeyError: 'uri'"),
    ],
)
def test_plain_error(error: str, plain: str) -> None:
    assert plain_error(error) == plain


def test_no_error_is_none() -> None:
    assert plain_error(None) is None
    assert plain_error("") is None

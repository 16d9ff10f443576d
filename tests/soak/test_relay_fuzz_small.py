"""The CI size of the relay fuzz soak: 5,000 fuzzed requests against a real relay server.

The full run (100,000, ``python -m bench.soak_relay``) and its figures are in BENCHMARKS.md,
"Soak — relay fuzz". Seeded: a failure here replays with the same seed.
"""

from __future__ import annotations

from bench.soak_relay import run


def test_5000_fuzzed_requests_give_no_5xx_and_no_action_without_a_valid_signature() -> None:
    figures = run(5000, seed=20261130)
    assert figures["requests"] == 5000
    assert figures["5xx"] == 0, figures["examples"]
    assert figures["transport_errors"] == 0, figures["examples"]
    assert figures["accepted_without_valid_auth"] == 0, figures["examples"]
    assert figures["actions_without_valid_signature"] == 0
    assert figures["valid_auth_refused_401"] == 0, figures["examples"]
    assert figures["outbox_items"] == figures["new_actions_reported"]
    # The run did exercise what it claims: accepted events, refusals, actions, templates.
    assert figures["validly_accepted_events"] > 200
    assert figures["statuses"]["202"] > 200 and figures["statuses"]["401"] > 500
    assert figures["outbox_items"] > 200
    assert figures["templates_used"] > 0 and figures["templates_refused_at_load"] > 0
    assert figures["monitoring"] == {
        "metrics_anonymous": 401,
        "metrics_with_token": 200,
        "health_anonymous_keys": 1,
    }

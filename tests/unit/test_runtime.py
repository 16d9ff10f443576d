"""runtime: the relay's runtime and the delivery worker are built in one place, from the options."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from astro_xdeps import runtime
from astro_xdeps.exceptions import ConfigError

RULES = """\
rules:
  - name: recover
    when: {type: dag_run.failed, dag_id: load}
    then: [{trigger_dag: {target: down, dag_id: recover}}]
"""


def test_the_relay_runtime_serves_the_configured_engine(
    xdeps_options: Callable[..., None], tmp_path: Path
) -> None:
    rules = tmp_path / "relay.yaml"
    rules.write_text(RULES)
    xdeps_options(relay_config=rules)
    rt = runtime.relay_runtime()
    assert rt.engine is runtime.relay_engine()
    assert rt.engine.outbox is runtime.get_outbox()
    assert [r.name for r in rt.config.rules] == ["recover"]  # the engine's own config


def test_an_explicit_rules_file_wins_over_the_option(
    xdeps_options: Callable[..., None], tmp_path: Path
) -> None:
    (tmp_path / "other.yaml").write_text(RULES.replace("recover", "other"))
    rt = runtime.relay_runtime(str(tmp_path / "other.yaml"))
    assert [r.name for r in rt.config.rules] == ["other"]
    assert runtime.relay_engine() is None  # no relay_config: the process has no relay of its own


def test_no_relay_config_says_which_option_to_set(xdeps_options: Callable[..., None]) -> None:
    with pytest.raises(ConfigError, match=r"set \[astro_xdeps\] relay_config"):
        runtime.relay_runtime()


def test_every_delivery_worker_is_tuned_by_the_options(xdeps_options: Callable[..., None]) -> None:
    xdeps_options(target_concurrency=7, retry_horizon=60, retry_max_delay=9, delivered_retention=0)
    worker = runtime.build_worker(runtime.get_outbox())
    assert (worker.concurrency, worker.retry_horizon, worker.backoff_max, worker.purge_after) == (
        7,
        60.0,
        9.0,
        0.0,
    )
    assert runtime.get_worker() is runtime.get_worker()

"""``astro-xdeps``'s entry point: the installed command freezes the loaded heap, ``main()`` alone does not."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points

import pytest

from astro_xdeps.cli import main as cli_main


@pytest.fixture
def frozen() -> Iterator[Callable[[], int]]:
    """``gc.get_freeze_count``, with whatever a test froze thawed again afterwards."""
    gc.unfreeze()
    yield gc.get_freeze_count
    gc.unfreeze()


def test_the_installed_command_is_run() -> None:
    (script,) = entry_points(group="console_scripts", name="astro-xdeps")
    assert script.value == "astro_xdeps.cli.main:run"


def test_run_freezes_the_heap_loaded_before_the_command(
    xdeps_options: Callable[..., None], frozen: Callable[[], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: full collections over Airflow's heap made `outbox status` take 110-250 ms."""
    monkeypatch.setattr("sys.argv", ["astro-xdeps", "outbox", "status"])
    assert cli_main.run() == 0
    assert frozen() > 10_000  # Airflow and SQLAlchemy alone are far more objects than that


def test_main_in_process_leaves_the_heap_alone(
    xdeps_options: Callable[..., None], frozen: Callable[[], int]
) -> None:
    assert cli_main.main(["outbox", "status"]) == 0
    assert frozen() == 0

"""settings: one accessor per option, read through Airflow's config; one yes/no parser."""

from __future__ import annotations

import os

import pytest

from astro_xdeps import runtime, settings
from astro_xdeps.exceptions import ConfigError

P = "AIRFLOW__ASTRO_XDEPS__"


@pytest.fixture(autouse=True)
def _no_options(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(P):
            monkeypatch.delenv(name)


def test_every_option_has_an_accessor_that_answers_its_default() -> None:
    for name, option in settings.OPTIONS.items():
        value = getattr(settings, name)()
        if name == "outbox_url":
            assert value.startswith("sqlite:///") and value.endswith("xdeps_outbox.db")
        elif name == "deployment_name":
            assert value  # falls back to the base URL or the host name
        elif name == "forward_assets":
            assert value is None  # auto
        elif option.type == "integer":
            assert value == int(option.default)
        elif option.type == "boolean":
            assert value is settings.parse_bool(option.default)
        else:
            assert value == option.default


def test_an_option_comes_from_airflow_config_env_var_stripped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"{P}RELAY_CONFIG", "  /etc/relay.yaml ")
    monkeypatch.setenv(f"{P}TARGET_CONCURRENCY", "9")
    assert settings.relay_config() == "/etc/relay.yaml"
    assert settings.target_concurrency() == 9


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        (" YES ", True),
        ("1", True),
        ("on", True),
        ("False", False),
        ("0", False),
        ("no", False),
        ("off", False),
        ("", None),
        ("maybe", None),
        ("/etc/ca.pem", None),
    ],
)
def test_parse_bool(text: str, expected: bool | None) -> None:
    assert settings.parse_bool(text) is expected


def test_a_boolean_option_that_is_neither_names_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"{P}DELIVERY_WORKER", "sometimes")
    with pytest.raises(
        ConfigError, match=r"^\[astro_xdeps\] delivery_worker must be true or false, got 'sometimes'\.$"
    ):
        settings.delivery_worker()


def test_a_forked_child_starts_without_the_parents_singletons(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv(f"{P}OUTBOX_URL", f"sqlite:///{tmp_path / 'outbox.db'}")
    runtime.reset()
    try:
        parent_outbox = runtime.get_outbox()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report whether it still holds the parent's outbox
            os.write(
                write,
                b"fresh"
                if runtime._outbox is None and runtime.get_outbox() is not parent_outbox
                else b"stale",
            )
            os._exit(0)
        os.close(write)
        answer = os.read(read, 16)
        os.waitpid(pid, 0)
        assert answer == b"fresh"
        assert runtime.get_outbox() is parent_outbox
    finally:
        runtime.reset()

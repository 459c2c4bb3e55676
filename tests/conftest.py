"""Shared fixtures: the simulated gateway (``fake_gateway``) comes from the package's plugin."""

from collections.abc import Iterator

import pytest
from loopback import BotApi

pytest_plugins = ["ibkr_resilience.simulator.pytest_plugin"]


@pytest.fixture(autouse=True)
def _isolated_state_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Safety net: no test may write alert de-dup state into the real home directory.

    A session whose environment has Telegram configured de-duplicates its alerts in
    ``$XDG_STATE_HOME`` (else ``~/.local/state``); point both at a fresh directory.
    """
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))


@pytest.fixture
def bot_api() -> Iterator[BotApi]:
    """A Telegram Bot API stand-in on 127.0.0.1 (see ``loopback.BotApi``)."""
    with BotApi() as api:
        yield api

"""Shared fixtures: ``fake_gateway``, ``bot_api``... come from the package's public test kit."""

import pytest

pytest_plugins = ["ibkr_resilience.testing.pytest_plugin"]


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

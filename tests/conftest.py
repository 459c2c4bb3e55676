"""Shared fixtures: the simulated gateway (``fake_gateway``) comes from the package's plugin."""

import signal
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


@pytest.fixture
def ctrl_c_reaches_children() -> Iterator[None]:
    """Children started by the test get SIGINT's default disposition (Ctrl-C works).

    A process started in the background by a shell without job control (``cmd &`` in a
    script, some CI runners) inherits SIGINT *ignored*; Python then installs no
    KeyboardInterrupt handler, and so neither do the children it starts: a test that
    sends SIGINT to one would wait for nothing. A handler in this process becomes the
    default disposition in a child at ``exec``, so install Python's own for the test.
    """
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

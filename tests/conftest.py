"""Shared fixtures: ``fake_gateway``, ``bot_api``... come from the package's public test kit."""

import asyncio
import signal
import warnings
from collections.abc import Iterator

import pytest

pytest_plugins = ["ibkr_resilience.testing.pytest_plugin", "token_audit"]


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


@pytest.fixture(autouse=True)
def _a_current_event_loop() -> Iterator[None]:
    """Every test starts with a current, open event loop, as a fresh process has.

    ``asyncio.run`` (the async-form tests) closes its loop and leaves the thread with
    none; the client library's synchronous API (``IB().connect``) needs one.
    """
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            loop = asyncio.get_event_loop()
        except RuntimeError:
            loop = None
    if loop is None or loop.is_closed():
        asyncio.set_event_loop(asyncio.new_event_loop())


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

"""How a job run ends: the stop ladder and the journaling of an order cut short."""

from __future__ import annotations

import pytest

from ibkr_resilience._app.jobs.exits import (
    ExitCode,
    how_stopped,
    journal_if_cut_short,
    stop_cause,
)
from ibkr_resilience._app.jobs.journal import JournalError
from ibkr_resilience._session.signals import SIGTERM_EXIT_CODE
from ibkr_resilience.errors import ConfigError


def test_the_ladder_maps_each_stop_to_its_exit_code_and_words() -> None:
    """Ctrl-C, SIGTERM and a lost gateway each have one exit code and one reason."""
    ctrl_c = how_stopped(KeyboardInterrupt())
    assert ctrl_c is not None
    assert (ctrl_c.code, ctrl_c.reason) == (ExitCode.INTERRUPTED, "interrupted (Ctrl-C)")
    term = how_stopped(SystemExit(SIGTERM_EXIT_CODE))
    assert term is not None
    assert (term.code, term.reason) == (ExitCode.TERMINATED, "terminated (SIGTERM)")
    lost = how_stopped(ConnectionError("Socket disconnect"))
    assert lost is not None and lost.code == ExitCode.CONNECT_FAILED
    assert lost.cause == "ConnectionError: Socket disconnect"
    assert lost.reason == (
        "lost the gateway during the run (ConnectionError: Socket disconnect); check TWS"
    )
    timeout = how_stopped(TimeoutError("reqPositions"))
    assert timeout is not None and timeout.code == ExitCode.CONNECT_FAILED


def test_other_exceptions_are_not_stops() -> None:
    """A plain exit or a bug is for the caller to judge, not a stop."""
    assert how_stopped(SystemExit(0)) is None
    assert how_stopped(ValueError("bug")) is None
    assert stop_cause(ValueError("bug")) == "ValueError: bug"
    assert stop_cause(KeyboardInterrupt()) == "interrupted (Ctrl-C)"


def test_an_order_cut_short_is_journaled_and_the_exception_goes_on() -> None:
    """The in-flight order is recorded with the cause; the exception is not swallowed."""
    causes: list[str] = []
    with pytest.raises(KeyboardInterrupt), journal_if_cut_short(causes.append):
        raise KeyboardInterrupt
    assert causes == ["interrupted (Ctrl-C)"]
    with journal_if_cut_short(causes.append):
        pass
    assert causes == ["interrupted (Ctrl-C)"]  # nothing recorded when the block ends well


def test_a_journal_failure_does_not_hide_the_original_exception() -> None:
    """A journal that cannot be written on the way out must not replace the real cause."""

    def broken(cause: str) -> None:
        raise JournalError("cannot write journal /x: No space left on device")

    with pytest.raises(ConfigError, match="original"), journal_if_cut_short(broken):
        raise ConfigError("original")

"""The package's exception types, in one place so every module raises the same ones.

Callers catch these by their standard bases, so code written before this package
existed keeps working::

    ValueError
     └── ConfigError           a setting is invalid (one line naming the variable)
    ConnectionError
     └── ConnectionFailed      every connect attempt failed; the block did not run
    RuntimeError
     ├── LiveAccountRefused    no paper account (D...) and live trading not allowed
     └── RunningEventLoopError a sync ``with ibkr_session()`` inside a running event loop
"""

from __future__ import annotations

__all__ = ["ConfigError", "ConnectionFailed", "LiveAccountRefused", "RunningEventLoopError"]


class ConfigError(ValueError):
    """A setting is invalid.

    The message is one line naming the variable (or parameter), the bad value and what
    is expected, so a cron mail alone is enough to fix the crontab. Secret values are
    never part of it.
    """


class ConnectionFailed(ConnectionError):
    """Every connect attempt failed; the ``with`` block did not run.

    Carries what an operator needs to decide what to do next: how many attempts were
    made, how long it took, how the last attempt failed and with which error.
    """

    def __init__(
        self,
        message: str,
        *,
        attempts: int,
        elapsed: float,
        last_error: BaseException | None,
        failure_class: str,
    ) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.elapsed = elapsed
        self.last_error = last_error
        self.failure_class = failure_class


class LiveAccountRefused(RuntimeError):
    """The gateway offers no paper account, and live trading was not allowed.

    A paper script pointed at the live port must stop before it places an order;
    ``accounts`` lists what the gateway offered so the log says which port was wrong.
    """

    def __init__(self, message: str, *, accounts: list[str]) -> None:
        super().__init__(message)
        self.accounts = accounts


class RunningEventLoopError(RuntimeError):
    """``with ibkr_session()`` was entered in a thread whose event loop is running.

    The sync form runs ib_insync's event loop itself, which asyncio forbids while that
    loop is already running (asyncio code, Jupyter). Raised before anything is sent or
    connected (no alert, no connect attempt); the one-line message says to use
    ``async with ibkr_session(...) as ib:`` there.
    """

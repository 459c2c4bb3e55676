"""SIGTERM as an exception, so that the session's cleanup runs when cron or systemd stops a job.

Python runs no ``finally`` block on SIGTERM unless a handler turns the signal into an
exception; without one, a stopped job would leave its client id held on the gateway
(the next run gets error 326). :class:`SignalGuard` installs that handler for the life
of a session (main thread only: Python delivers signals there), and while the session
cleans up it only remembers a signal, so a second SIGTERM cannot cut the disconnect short.

The async form (``async with``) must not raise from a signal handler: the exception
would surface wherever the loop happens to be, possibly inside another task. There the
guard goes through the loop (``loop.add_signal_handler``) and *cancels the task running
the session*; the session sees the ``CancelledError``, cleans up, and raises
``SystemExit(143)`` itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from types import FrameType
from typing import Any

SIGTERM_EXIT_CODE = 143
"""128 + SIGTERM: the conventional exit status of a job stopped by SIGTERM."""


class SignalGuard:
    """SIGTERM handling between :meth:`install` (or :meth:`install_in_loop`) and :meth:`restore`.

    Sync form: SIGTERM raises ``SystemExit(143)``. Loop form: SIGTERM cancels the session's
    task. Both: after :meth:`defer` a SIGTERM is only remembered (``deferred``).
    """

    def __init__(self) -> None:
        self.received: str | None = None
        """``"SIGTERM"`` once one arrived, else ``None``."""
        self.deferred = False
        """A SIGTERM arrived during cleanup: exit 143 when the cleanup is done."""
        self._previous: Any = None
        self._installed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous_in_loop: tuple[Any, tuple[Any, ...]] | None = None
        self._deferring = False

    def install(self) -> None:
        """Raise ``SystemExit(143)`` on SIGTERM from now on (no-op outside the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._raise)
        self._installed = True

    def install_in_loop(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
        """Cancel ``task`` on SIGTERM from now on, through ``loop``'s signal handling.

        A no-op outside the main thread, and where the loop has no signal support
        (``add_signal_handler`` raises ``NotImplementedError`` on Windows' loops).
        """
        if threading.current_thread() is not threading.main_thread():
            return
        self._previous = signal.getsignal(signal.SIGTERM)
        self._previous_in_loop = _loop_handler(loop)
        try:
            loop.add_signal_handler(signal.SIGTERM, self._cancel, task)
        except (NotImplementedError, RuntimeError, ValueError):
            return
        self._loop = loop
        self._installed = True

    def defer(self) -> None:
        """From now on a SIGTERM is only remembered (the cleanup must run to its end)."""
        self._deferring = True
        if self._installed and self._loop is None:
            signal.signal(signal.SIGTERM, self._remember)

    def restore(self) -> None:
        """Put back the handler that was there before the install."""
        if not self._installed:
            return
        self._installed = False
        loop, self._loop = self._loop, None
        if loop is not None:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signal.SIGTERM)
            if self._previous_in_loop is not None:  # the application's own loop handler
                callback, args = self._previous_in_loop
                with contextlib.suppress(Exception):
                    loop.add_signal_handler(signal.SIGTERM, callback, *args)
                return
        previous = self._previous
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)

    def _raise(self, signum: int, frame: FrameType | None) -> None:
        self.received = "SIGTERM"
        raise SystemExit(SIGTERM_EXIT_CODE)

    def _remember(self, signum: int, frame: FrameType | None) -> None:
        self.received = "SIGTERM"
        self.deferred = True

    def _cancel(self, task: asyncio.Task[Any]) -> None:
        self.received = "SIGTERM"
        if self._deferring:
            self.deferred = True
        else:
            task.cancel()


def _loop_handler(loop: asyncio.AbstractEventLoop) -> tuple[Any, tuple[Any, ...]] | None:
    """The SIGTERM callback already added to ``loop`` (asyncio keeps it privately), if any."""
    handlers = getattr(loop, "_signal_handlers", None)
    handle = handlers.get(signal.SIGTERM) if isinstance(handlers, dict) else None
    callback = getattr(handle, "_callback", None)
    if callback is None:
        return None
    return callback, tuple(getattr(handle, "_args", ()) or ())

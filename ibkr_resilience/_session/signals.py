"""SIGTERM as an exception, so that the session's cleanup runs when cron or systemd stops a job.

Python runs no ``finally`` block on SIGTERM unless a handler turns the signal into an
exception; without one, a stopped job would leave its client id held on the gateway
(the next run gets error 326). :class:`SignalGuard` installs that handler for the life
of a session (main thread only: Python delivers signals there), and while the session
cleans up it only remembers a signal, so a second SIGTERM cannot cut the disconnect short.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

SIGTERM_EXIT_CODE = 143
"""128 + SIGTERM: the conventional exit status of a job stopped by SIGTERM."""


class SignalGuard:
    """Turns SIGTERM into ``SystemExit(143)`` between :meth:`install` and :meth:`restore`."""

    def __init__(self) -> None:
        self.received: str | None = None
        """``"SIGTERM"`` once one arrived, else ``None``."""
        self.deferred = False
        """A SIGTERM arrived during cleanup: exit 143 when the cleanup is done."""
        self._previous: Any = None
        self._installed = False

    def install(self) -> None:
        """Raise ``SystemExit(143)`` on SIGTERM from now on (no-op outside the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._raise)
        self._installed = True

    def defer(self) -> None:
        """From now on a SIGTERM is only remembered (the cleanup must run to its end)."""
        if self._installed:
            signal.signal(signal.SIGTERM, self._remember)

    def restore(self) -> None:
        """Put back the handler that was there before :meth:`install`."""
        if self._installed:
            previous = self._previous
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
            self._installed = False

    def _raise(self, signum: int, frame: FrameType | None) -> None:
        self.received = "SIGTERM"
        raise SystemExit(SIGTERM_EXIT_CODE)

    def _remember(self, signum: int, frame: FrameType | None) -> None:
        self.received = "SIGTERM"
        self.deferred = True

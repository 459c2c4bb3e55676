"""SIGTERM and SIGHUP as exceptions, so that the session's cleanup runs when a job is stopped.

Python runs no ``finally`` block on SIGTERM or SIGHUP unless a handler turns the signal
into an exception; without one, a stopped job would leave its client id held on the
gateway (the next run gets error 326). cron and systemd stop jobs with SIGTERM; a job
started from a terminal that closes (an ssh session that drops) gets SIGHUP, whose
default action kills it just as abruptly. :class:`SignalGuard` installs a handler for
both for the life of a session (main thread only: Python delivers signals there), and
while the session cleans up it only remembers a signal, so a second one cannot cut the
disconnect short. The exit status is the shell's convention, 128 + the signal number:
143 for SIGTERM, 129 for SIGHUP.

The async form (``async with``) must not raise from a signal handler: the exception
would surface wherever the loop happens to be, possibly inside another task. There the
guard goes through the loop (``loop.add_signal_handler``) and *cancels the task running
the session*; the session sees the ``CancelledError``, cleans up, and raises
``SystemExit(143)`` (or 129) itself.
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
SIGHUP_EXIT_CODE = 129
"""128 + SIGHUP: the conventional exit status of a job whose terminal hung up."""

GUARDED: dict[str, int] = {"SIGTERM": SIGTERM_EXIT_CODE, "SIGHUP": SIGHUP_EXIT_CODE}
"""The signals a session turns into a clean end, and the exit status of each."""


def _signals() -> list[signal.Signals]:
    # SIGHUP does not exist on Windows; the guard then covers SIGTERM only.
    return [getattr(signal, name) for name in GUARDED if hasattr(signal, name)]


class SignalGuard:
    """SIGTERM/SIGHUP handling between :meth:`install` (or :meth:`install_in_loop`) and
    :meth:`restore`.

    Sync form: the signal raises ``SystemExit(exit_code)``. Loop form: it cancels the
    session's task. Both: after :meth:`defer` a signal is only remembered (``deferred``).
    """

    def __init__(self) -> None:
        self.received: str | None = None
        """``"SIGTERM"`` or ``"SIGHUP"`` once one arrived (the first), else ``None``."""
        self.deferred = False
        """A signal arrived during cleanup: exit with :attr:`exit_code` when it is done."""
        self._previous: dict[signal.Signals, Any] = {}
        self._installed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous_in_loop: dict[signal.Signals, tuple[Any, tuple[Any, ...]]] = {}
        self._deferring = False

    @property
    def exit_code(self) -> int:
        """128 + the signal received (143 for SIGTERM, 129 for SIGHUP)."""
        return GUARDED.get(self.received or "SIGTERM", SIGTERM_EXIT_CODE)

    def install(self) -> None:
        """Raise ``SystemExit(128 + signal)`` from now on (no-op outside the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in _signals():
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._raise)
        self._installed = True

    def install_in_loop(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
        """Cancel ``task`` on SIGTERM/SIGHUP from now on, through ``loop``'s signal handling.

        A no-op outside the main thread, and where the loop has no signal support
        (``add_signal_handler`` raises ``NotImplementedError`` on Windows' loops).
        """
        if threading.current_thread() is not threading.main_thread():
            return
        added: list[signal.Signals] = []
        for signum in _signals():
            previous, in_loop = signal.getsignal(signum), _loop_handler(loop, signum)
            try:
                loop.add_signal_handler(signum, self._cancel, task, signum)
            except (NotImplementedError, RuntimeError, ValueError):
                break
            self._previous[signum] = previous
            if in_loop is not None:
                self._previous_in_loop[signum] = in_loop
            added.append(signum)
        if not added:
            return
        self._loop = loop
        self._installed = True

    def defer(self) -> None:
        """From now on a signal is only remembered (the cleanup must run to its end)."""
        self._deferring = True
        if self._installed and self._loop is None:
            for signum in self._previous:
                signal.signal(signum, self._remember)

    def restore(self) -> None:
        """Put back the handlers that were there before the install."""
        if not self._installed:
            return
        self._installed = False
        loop, self._loop = self._loop, None
        for signum, previous in self._previous.items():
            if loop is not None:
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(signum)
                in_loop = self._previous_in_loop.get(signum)
                if in_loop is not None:  # the application's own loop handler
                    callback, args = in_loop
                    with contextlib.suppress(Exception):
                        loop.add_signal_handler(signum, callback, *args)
                    continue
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)

    def _note(self, signum: int) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name

    def _raise(self, signum: int, frame: FrameType | None) -> None:
        self._note(signum)
        raise SystemExit(self.exit_code)

    def _remember(self, signum: int, frame: FrameType | None) -> None:
        self._note(signum)
        self.deferred = True

    def _cancel(self, task: asyncio.Task[Any], signum: int) -> None:
        self._note(signum)
        if self._deferring:
            self.deferred = True
        else:
            task.cancel()


def _loop_handler(
    loop: asyncio.AbstractEventLoop, signum: signal.Signals
) -> tuple[Any, tuple[Any, ...]] | None:
    """The ``signum`` callback already added to ``loop`` (asyncio keeps it privately), if any."""
    handlers = getattr(loop, "_signal_handlers", None)
    handle = handlers.get(signum) if isinstance(handlers, dict) else None
    callback = getattr(handle, "_callback", None)
    if callback is None:
        return None
    return callback, tuple(getattr(handle, "_args", ()) or ())

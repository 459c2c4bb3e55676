"""SIGTERM and SIGHUP as exceptions, so that the session's cleanup runs when a job is stopped.

Python runs no ``finally`` block on SIGTERM or SIGHUP unless a handler turns the signal
into an exception; without one, a stopped job would leave its client id held on the
gateway (the next run gets error 326). cron and systemd stop jobs with SIGTERM; a job
started from a terminal that closes (an ssh session that drops) gets SIGHUP, whose
default action kills it just as abruptly. :class:`SignalGuard` installs a handler for
both for the life of a session (main thread only: Python delivers signals there). Only
the first signal raises: the run is ending from then on, and a second one (``kill``
twice, a supervisor that repeats itself, Ctrl-C pressed twice) is only remembered, so it
cannot cut the cleanup short (the order window's ``order.unconfirmed`` records, the
disconnect); the same holds while the session cleans up after a normal end. The exit
status is the shell's convention, 128 + the signal number: 143 for SIGTERM, 129 for
SIGHUP. A script's run-wide guard also takes SIGINT (``install(interrupts=True)``): the
first raises ``KeyboardInterrupt`` as Python's own handler does, later ones are
remembered. A signal the parent process ignores (``nohup`` ignores SIGHUP; a
non-interactive shell's ``cmd &`` ignores SIGINT) is left ignored.

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
from collections.abc import Iterator
from types import FrameType
from typing import Any

SIGTERM_EXIT_CODE = 143
"""128 + SIGTERM: the conventional exit status of a job stopped by SIGTERM."""
SIGHUP_EXIT_CODE = 129
"""128 + SIGHUP: the conventional exit status of a job whose terminal hung up."""

GUARDED: dict[str, int] = {"SIGTERM": SIGTERM_EXIT_CODE, "SIGHUP": SIGHUP_EXIT_CODE}
"""The signals a session turns into a clean end, and the exit status of each."""


class _Run:
    """What every guard of this process shares: the guards nest (a script's run-wide
    guard around its session's), and a signal one of them raised ends the run for all."""

    installed = 0
    """Guards installed now."""
    ending = False
    """A guard raised for a signal: until the last guard is restored, later signals are
    only remembered."""
    critical = 0
    """Depth of :func:`whole_step` blocks being run."""
    pending: BaseException | None = None
    """What a signal raised during a :func:`whole_step` block raises when it ends."""


@contextlib.contextmanager
def whole_step() -> Iterator[None]:
    """Run the block as one step that a guarded signal cannot cut in the middle.

    A SIGTERM, SIGHUP or (the scripts') SIGINT arriving meanwhile raises when the block
    ends instead, so a journal write and the bookkeeping that says it was written (the
    records a burst announced, the window's units in flight) are both done or both not
    started. The block must be short and never wait for the gateway. Python runs signal
    handlers in the main thread whichever thread the kernel picked, so this holds with
    the alert and ping threads running (blocking the signals with ``pthread_sigmask``
    would not: a thread that does not block them takes them).
    """
    _Run.critical += 1
    try:
        yield
    except BaseException:
        if _Run.critical == 1:
            _Run.pending = None  # the block's own exception ends the run (a journal failure)
        raise
    finally:
        _Run.critical -= 1
    pending = _Run.pending
    if _Run.critical == 0 and pending is not None:
        _Run.pending = None
        raise pending


GUARDED_SIGNALS = frozenset(getattr(signal, name) for name in GUARDED if hasattr(signal, name))


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

    def install(self, *, interrupts: bool = False) -> None:
        """Raise ``SystemExit(128 + signal)`` from now on (no-op outside the main thread);
        with ``interrupts``, SIGINT too, as ``KeyboardInterrupt`` (the first one only)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in _signals():
            previous = signal.getsignal(signum)
            if previous != signal.SIG_IGN:  # ignored by the parent (nohup): stays ignored
                self._previous[signum] = previous
                signal.signal(signum, self._raise)
        if interrupts and signal.getsignal(signal.SIGINT) != signal.SIG_IGN:
            # Ignored for a job a non-interactive shell started in the background: kept.
            self._previous[signal.SIGINT] = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._interrupt)
        self._installed = True
        _Run.installed += 1

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
            if previous == signal.SIG_IGN and in_loop is None:
                continue  # ignored by the parent (nohup): stays ignored
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
        _Run.installed += 1

    def defer(self) -> None:
        """From now on a signal is only remembered (the cleanup must run to its end)."""
        self._deferring = True
        if self._installed and self._loop is None:
            for signum in self._previous:
                handler = self._remember if signum in GUARDED_SIGNALS else self._absorb
                signal.signal(signum, handler)

    def restore(self) -> None:
        """Put back the handlers that were there before the install."""
        if not self._installed:
            return
        self._installed = False
        _Run.installed -= 1
        if _Run.installed <= 0:
            _Run.installed, _Run.ending, _Run.pending = 0, False, None
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
        if _Run.ending:
            self.deferred = True
            return
        _Run.ending = True
        if _Run.critical:
            _Run.pending = SystemExit(self.exit_code)  # raised when the whole step ends
            return
        raise SystemExit(self.exit_code)

    def _interrupt(self, signum: int, frame: FrameType | None) -> None:
        if not _Run.ending:
            _Run.ending = True
            if _Run.critical:
                _Run.pending = KeyboardInterrupt()
                return
            raise KeyboardInterrupt

    def _absorb(self, signum: int, frame: FrameType | None) -> None:
        """SIGINT once the run has its exit code: its report must still go out."""

    def _remember(self, signum: int, frame: FrameType | None) -> None:
        self._note(signum)
        self.deferred = True

    def _cancel(self, task: asyncio.Task[Any], signum: int) -> None:
        self._note(signum)
        if self._deferring or _Run.ending:
            self.deferred = True
        else:
            _Run.ending = True
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

"""What an attempt sees while it runs: the client's events, latched before they are lost.

ib_insync resets the client's state while it cleans up a failed connect, and reports
most failures as the same ``TimeoutError``; so the attempt subscribes to the events that
tell how far it got (data on the socket, API start, gateway errors, the socket closing)
and latches them in a :class:`Progress`, from which :func:`classify` names the class.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .compat import IB_LOGGER, LOGGER_PREFIX, Event
from .failures import (
    CLIENT_ID_IN_USE,
    CONNECTIVITY_LOST,
    CONNECTIVITY_RESTORED,
    FailureClass,
    is_read_only_error,
)


@dataclass
class Progress:
    """How far the attempt got, latched as it happens (ib_insync resets its state)."""

    handshake: bool = False
    api_started: bool = False
    signal: FailureClass | None = None
    signal_error: BaseException | None = None
    gateway_errors: list[str] = field(default_factory=list)
    sync_timeouts: list[str] = field(default_factory=list)
    pending: dict[str, object] = field(default_factory=dict)
    """Initial-sync requests sent and not answered yet, by ib_insync's name for them."""
    unanswered_optional: list[str] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)
    """The required requests still pending when the attempt was cut at its bound."""
    offline: bool = False
    """TWS 1100 seen and not yet cleared by 1101/1102."""
    frozen: bool = False

    def phase_class(self, *, closed: bool) -> FailureClass:
        if self.api_started:
            return FailureClass.IB_OFFLINE if self.offline else FailureClass.INCOMPLETE_SYNC
        if self.handshake:
            return FailureClass.REJECTED if closed else FailureClass.NOT_LOGGED_IN
        return FailureClass.CLOSED if closed else FailureClass.TIMEOUT

    def set_signal(self, failure_class: FailureClass, error: BaseException) -> None:
        # Frozen once the attempt's outcome is decided: our own cleanup closes the
        # socket too, and that close must not rewrite the reason.
        if self.signal is None and not self.frozen:
            self.signal = failure_class
            self.signal_error = error


def client_of(ib: Any) -> Any:
    return getattr(ib, "client", None)


def _call_bool(obj: Any, name: str) -> bool:
    method = getattr(obj, name, None)
    if not callable(method):
        return False
    try:
        return bool(method())
    except Exception:
        return False


class SyncTimeoutWatcher(logging.Handler):
    """Notice ib_insync's "<request> request timed out" lines during the initial sync.

    ib_insync only logs those and returns a half-synced session; seeing them turns the
    attempt into an ``incomplete_sync`` failure even when ib_insync's own timer wins.
    """

    def __init__(self, progress: Progress) -> None:
        super().__init__(logging.ERROR)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:
            return
        if message.endswith("request timed out"):
            self.progress.sync_timeouts.append(message)


CLIENT_LOGGERS = tuple(f"{LOGGER_PREFIX}.{name}" for name in ("client", "wrapper", "ib"))


class ExpectedDuringAttempt(logging.Filter):
    """The client library's ERROR records during a connect attempt, re-levelled to INFO.

    A refused or closed connection, or a transient 326, is routine during a gateway
    restart and the session retries it; ib_insync still logs each at ERROR ("API
    connection failed", "Peer closed connection", "Error 326"). The attempt's own lines
    say what happened and ``ibkr.connect.gave_up`` is the one ERROR when it really
    failed, so these are kept, marked ``expected``, at INFO.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.expected = "during a connect attempt: the session reports the outcome"
        return True


class Watch:
    """Subscribe to the events that tell how an attempt is going; undo on close."""

    def __init__(
        self,
        ib: Any,
        progress: Progress,
        wake: Callable[[], None],
        online: Callable[[], None] = lambda: None,
    ) -> None:
        self.ib = ib
        self.progress = progress
        self.wake = wake
        self.online = online
        self._undo: list[Callable[[], None]] = []
        client = client_of(ib)
        conn = getattr(client, "conn", None)
        self._on(getattr(ib, "errorEvent", None), self._on_error)
        self._on(getattr(client, "apiError", None), self._on_api_error)
        self._on(getattr(client, "apiStart", None), self._on_api_start)
        # Registered after the client's own handlers, so they see the client's
        # state right after it processed the data / the close.
        self._on(getattr(conn, "hasData", None), self._on_data)
        self._on(getattr(conn, "disconnected", None), self._on_closed)
        watcher = SyncTimeoutWatcher(progress)
        ib_logger = logging.getLogger(IB_LOGGER)
        ib_logger.addHandler(watcher)
        self._undo.append(lambda: ib_logger.removeHandler(watcher))
        quiet = ExpectedDuringAttempt()
        for name in CLIENT_LOGGERS:
            client_logger = logging.getLogger(name)
            client_logger.addFilter(quiet)
            self._undo.append(functools.partial(client_logger.removeFilter, quiet))

    def _on(self, event: Any, handler: Callable[..., None]) -> None:
        # Only real eventkit events: a MagicMock stand-in would accept anything.
        if isinstance(event, Event):
            event.connect(handler)
            self._undo.append(lambda: event.disconnect(handler))

    def close(self) -> None:
        for undo in reversed(self._undo):
            with contextlib.suppress(Exception):
                undo()
        self._undo.clear()

    def _on_error(self, req_id: Any, code: Any, message: Any, *rest: Any) -> None:
        self.progress.gateway_errors.append(f"{code}: {message}")
        if code == CLIENT_ID_IN_USE:
            self.progress.set_signal(
                FailureClass.REJECTED, ConnectionError(f"Error 326: {message}")
            )
            self.wake()
        elif is_read_only_error(code, message):
            # The open-orders request of the sync gets 321 and never its end marker:
            # waiting out the bound would only delay the alert; retrying cannot help.
            self.progress.set_signal(
                FailureClass.READ_ONLY, ConnectionError(f"Error 321: {message}")
            )
            self.wake()
        elif code == CONNECTIVITY_LOST:
            self.progress.offline = True
        elif code in CONNECTIVITY_RESTORED:
            self.progress.offline = False
            self.online()

    def _on_api_error(self, message: Any) -> None:
        text = str(message)
        if text.startswith("API connection failed"):
            return  # ib_insync's own report of the exception the task raises
        client = client_of(self.ib)
        # Emitted from the client's socket-closed handler before it resets its state.
        if "already in use" in text:
            failure_class = FailureClass.REJECTED
        elif _call_bool(client, "isReady"):
            failure_class = FailureClass.INCOMPLETE_SYNC
        elif _call_bool(client, "isConnected"):
            failure_class = FailureClass.REJECTED
        else:
            failure_class = FailureClass.CLOSED
        self.progress.set_signal(failure_class, ConnectionError(text))
        self.wake()

    def _on_api_start(self, *args: Any) -> None:
        self.progress.handshake = True
        self.progress.api_started = True

    def _on_data(self, *args: Any) -> None:
        if _call_bool(client_of(self.ib), "isConnected"):
            self.progress.handshake = True

    def _on_closed(self, message: Any = "") -> None:
        if self.progress.signal is None:
            failure_class = self.progress.phase_class(closed=True)
            what = {
                FailureClass.CLOSED: "before the API handshake",
                FailureClass.REJECTED: "during the API handshake",
                FailureClass.INCOMPLETE_SYNC: "during the initial sync",
            }.get(failure_class, "")
            text = f"gateway closed the connection {what}".strip()
            if message:
                text += f": {message}"
            self.progress.set_signal(failure_class, ConnectionError(text))
        self.wake()


def classify(error: BaseException, progress: Progress | None = None) -> FailureClass:
    """Map an attempt's exception (and what was seen during it) to a failure class."""
    progress = progress or Progress()
    if isinstance(error, ConnectionRefusedError):
        return FailureClass.REFUSED
    if progress.signal is not None:
        return progress.signal
    if isinstance(error, TimeoutError):
        return progress.phase_class(closed=False)
    if isinstance(error, ConnectionError):
        return progress.phase_class(closed=True)
    if isinstance(error, OSError):
        return FailureClass.REFUSED
    return FailureClass.ERROR


def snapshot(ib: Any, progress: Progress) -> None:
    progress.unanswered = [n for n in progress.pending if n not in progress.unanswered_optional]
    client = client_of(ib)
    if _call_bool(client, "isConnected"):
        progress.handshake = True
    if _call_bool(client, "isReady"):
        progress.handshake = True
        progress.api_started = True

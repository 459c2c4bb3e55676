"""One connect attempt: hard-bounded, watched, and classified.

ib_insync applies its ``timeout`` per phase (TCP, API start, each sync request, then
executions), so one ``IB.connect`` can take about four times ``timeout``; and it reports
most failures as the same ``TimeoutError``. The session needs both a real bound and
the *reason*, because the reason decides the retry schedule and what the operator is
told. So an attempt:

* runs ``ib.connectAsync(..., timeout=T)`` as a task on ib_insync's event loop and waits
  for it at most ``T`` with ``asyncio.wait``. Our timer is armed before the task's first
  step, so it fires before any of ib_insync's inner timers (all armed later with the
  same ``T``). When it fires, the client state is read *before* cancelling the task,
  because ib_insync resets that state while it cleans up;
* watches the client's events while it runs, so a gateway that closes the socket or
  answers error 326 ends the attempt at once instead of after the timeout;
* classifies the outcome into a :class:`FailureClass`:

  ``refused``         TCP refused or host unreachable (any ``OSError`` from connect,
                      including ``OSError("Multiple exceptions: ...")`` for ``localhost``);
  ``timeout``         no API handshake: the port accepts TCP and never answers;
  ``closed``          the gateway closed the connection before the API handshake
                      (API disabled, or this host not in the gateway's Trusted IPs);
  ``not_logged_in``   handshake done, but the API never started (gateway not logged in);
  ``rejected``        the peer closed during the handshake, or error 326: client id in use;
  ``incomplete_sync`` the API started but the initial sync did not finish in time (or the
                      socket dropped during it); ib_insync would return a session with
                      missing positions and orders, which we must not hand out;
  ``error``           anything else (a bug, a broken factory).

The failed ``IB`` instance is always disconnected (wrapped: ``IB.disconnect`` can raise
on a half-open client) and never reused.

The attempt is one coroutine (``_attempt``), run by both forms: :func:`bounded_connect`
drives it with ``run_until_complete`` on ib_insync's loop (cron scripts), and
:func:`bounded_connect_async` awaits it in an already running loop (asyncio bots,
Jupyter).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import structlog

from ..errors import RunningEventLoopError
from .compat import IB_LOGGER, Event, ensure_event_loop

log = structlog.get_logger("ibkr_resilience.connect")

CLIENT_ID_IN_USE = 326

RUNNING_LOOP_MESSAGE = (
    "an asyncio event loop is already running in this thread (asyncio code, Jupyter): "
    "use 'async with ibkr_session(...) as ib:' instead of 'with'"
)


class FailureClass(StrEnum):
    REFUSED = "refused"
    TIMEOUT = "timeout"
    CLOSED = "closed"
    NOT_LOGGED_IN = "not_logged_in"
    REJECTED = "rejected"
    INCOMPLETE_SYNC = "incomplete_sync"
    ERROR = "error"


class AttemptFailed(Exception):
    """One attempt failed; carries the class that drives the retry schedule."""

    def __init__(
        self, failure_class: FailureClass, error: BaseException, detail: str | None = None
    ) -> None:
        super().__init__(f"{failure_class}: {type(error).__name__}: {error}")
        self.failure_class = failure_class
        self.error = error
        self.detail = detail


@dataclass
class _Progress:
    """How far the attempt got, latched as it happens (ib_insync resets its state)."""

    handshake: bool = False
    api_started: bool = False
    signal: FailureClass | None = None
    signal_error: BaseException | None = None
    gateway_errors: list[str] = field(default_factory=list)
    sync_timeouts: list[str] = field(default_factory=list)
    frozen: bool = False

    def phase_class(self, *, closed: bool) -> FailureClass:
        if self.api_started:
            return FailureClass.INCOMPLETE_SYNC
        if self.handshake:
            return FailureClass.REJECTED if closed else FailureClass.NOT_LOGGED_IN
        return FailureClass.CLOSED if closed else FailureClass.TIMEOUT

    def set_signal(self, failure_class: FailureClass, error: BaseException) -> None:
        # Frozen once the attempt's outcome is decided: our own cleanup closes the
        # socket too, and that close must not rewrite the reason.
        if self.signal is None and not self.frozen:
            self.signal = failure_class
            self.signal_error = error


def _client(ib: Any) -> Any:
    return getattr(ib, "client", None)


def _call_bool(obj: Any, name: str) -> bool:
    method = getattr(obj, name, None)
    if not callable(method):
        return False
    try:
        return bool(method())
    except Exception:
        return False


class _SyncTimeoutWatcher(logging.Handler):
    """Notice ib_insync's "<request> request timed out" lines during the initial sync.

    ib_insync only logs those and returns a half-synced session; seeing them turns the
    attempt into an ``incomplete_sync`` failure even when ib_insync's own timer wins.
    """

    def __init__(self, progress: _Progress) -> None:
        super().__init__(logging.ERROR)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:
            return
        if message.endswith("request timed out"):
            self.progress.sync_timeouts.append(message)


class _Watch:
    """Subscribe to the events that tell how an attempt is going; undo on close."""

    def __init__(self, ib: Any, progress: _Progress, wake: Callable[[], None]) -> None:
        self.ib = ib
        self.progress = progress
        self.wake = wake
        self._undo: list[Callable[[], None]] = []
        client = _client(ib)
        conn = getattr(client, "conn", None)
        self._on(getattr(ib, "errorEvent", None), self._on_error)
        self._on(getattr(client, "apiError", None), self._on_api_error)
        self._on(getattr(client, "apiStart", None), self._on_api_start)
        # Registered after the client's own handlers, so they see the client's
        # state right after it processed the data / the close.
        self._on(getattr(conn, "hasData", None), self._on_data)
        self._on(getattr(conn, "disconnected", None), self._on_closed)
        watcher = _SyncTimeoutWatcher(progress)
        ib_logger = logging.getLogger(IB_LOGGER)
        ib_logger.addHandler(watcher)
        self._undo.append(lambda: ib_logger.removeHandler(watcher))

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

    def _on_api_error(self, message: Any) -> None:
        text = str(message)
        if text.startswith("API connection failed"):
            return  # ib_insync's own report of the exception the task raises
        client = _client(self.ib)
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
        if _call_bool(_client(self.ib), "isConnected"):
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


def classify(error: BaseException, progress: _Progress | None = None) -> FailureClass:
    """Map an attempt's exception (and what was seen during it) to a failure class."""
    progress = progress or _Progress()
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


def disconnect_quietly(ib: Any, reason: str) -> None:
    """Disconnect an IB instance; log instead of raising (it may be half-open).

    With the loop stopped (the sync form) the socket is closed before this returns:
    asyncio defers a transport's close to the loop's next step, and after a session
    nothing may run the loop again (a thread that ends, a process that goes on without
    IB), which would leave the descriptor open. In a running loop (the async form) the
    loop is not touched; the close happens at its next step, when the caller awaits.
    """
    try:
        ib.disconnect()
        _settle()
    except Exception as exc:
        log.warning(
            "ibkr.disconnect.failed",
            reason=reason,
            error_type=type(exc).__name__,
            error=str(exc),
        )
        # The socket may still be open: close it at the client level.
        client = _client(ib)
        with contextlib.suppress(Exception):
            if client is not None:
                client.disconnect()


def _settle() -> None:
    """Run one step of this thread's loop (unless it is running) to finish pending closes.

    In a running loop (the async form) nothing is run here: the loop finishes the close
    at its next step, which the awaiting caller gives it.
    """
    loop = ensure_event_loop()
    if not loop.is_running() and not loop.is_closed():
        loop.run_until_complete(asyncio.sleep(0))


def _snapshot(ib: Any, progress: _Progress) -> None:
    client = _client(ib)
    if _call_bool(client, "isConnected"):
        progress.handshake = True
    if _call_bool(client, "isReady"):
        progress.handshake = True
        progress.api_started = True


def _fail(
    ib: Any, failure_class: FailureClass, error: BaseException, progress: _Progress
) -> AttemptFailed:
    disconnect_quietly(ib, reason="failed attempt")
    details = progress.gateway_errors + progress.sync_timeouts
    return AttemptFailed(failure_class, error, "; ".join(details) or None)


async def _bounded(
    ib: Any,
    host: str,
    port: int,
    client_id: int,
    timeout: float,
    progress: _Progress,
    wake: asyncio.Future[None],
) -> asyncio.Future[Any]:
    task: asyncio.Future[Any] = asyncio.ensure_future(
        ib.connectAsync(host, port, clientId=client_id, timeout=timeout)
    )
    try:
        # Armed now, before the task's first step: fires before ib_insync's timers.
        await asyncio.wait({task, wake}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
        raise
    progress.frozen = True
    if not task.done():
        _snapshot(ib, progress)  # before ib_insync's cleanup resets the client state
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    return task


async def _attempt(ib: Any, host: str, port: int, client_id: int, timeout: float) -> None:
    """The one attempt, both forms: bounded, watched and classified, in the running loop."""
    progress = _Progress()
    wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_signal() -> None:
        if not wake.done():
            wake.set_result(None)

    watch = _Watch(ib, progress, on_signal)
    try:
        task = await _bounded(ib, host, port, client_id, timeout, progress, wake)
    except BaseException:
        # Cancelled, Ctrl-C or SIGTERM while waiting: stop watching and free the socket.
        watch.close()
        disconnect_quietly(ib, reason="interrupted attempt")
        raise
    watch.close()
    error: BaseException
    if task.cancelled():
        if progress.signal is not None and progress.signal_error is not None:
            raise _fail(ib, progress.signal, progress.signal_error, progress)
        failure_class = progress.phase_class(closed=False)
        phase = {
            FailureClass.TIMEOUT: "no API handshake",
            FailureClass.NOT_LOGGED_IN: "API did not start (gateway not logged in?)",
            FailureClass.INCOMPLETE_SYNC: "initial sync did not finish",
        }[failure_class]
        error = TimeoutError(f"{phase} within {timeout:g} s")
        raise _fail(ib, failure_class, error, progress)
    exc = task.exception()
    if exc is not None:
        raise _fail(ib, classify(exc, progress), exc, progress)
    if progress.sync_timeouts:
        error = TimeoutError("initial sync incomplete: " + "; ".join(progress.sync_timeouts))
        raise _fail(ib, FailureClass.INCOMPLETE_SYNC, error, progress)


def bounded_connect(ib: Any, host: str, port: int, client_id: int, timeout: float) -> None:
    """Connect ``ib`` within ``timeout`` seconds, all phases included, or raise AttemptFailed.

    Runs the attempt on ib_insync's loop (``run_until_complete``); raises
    :class:`~ibkr_resilience.errors.RunningEventLoopError` when that loop is already
    running (asyncio code, Jupyter: use :func:`bounded_connect_async` there).
    """
    loop = ensure_event_loop()  # the loop ib_insync uses (its util.getLoop)
    if loop.is_running():
        raise RunningEventLoopError(RUNNING_LOOP_MESSAGE)
    runner = loop.create_task(_attempt(ib, host, port, client_id, timeout))
    try:
        loop.run_until_complete(runner)
    except BaseException:
        if not runner.done():
            # Ctrl-C or SIGTERM between two steps of the loop: cancel the attempt (it
            # cleans up after itself), then close the socket with the loop stopped.
            runner.cancel()
            with contextlib.suppress(BaseException):
                loop.run_until_complete(asyncio.wait({runner}, timeout=2.0))
            disconnect_quietly(ib, reason="interrupted attempt")
        raise


async def bounded_connect_async(
    ib: Any, host: str, port: int, client_id: int, timeout: float
) -> None:
    """:func:`bounded_connect` awaited in the running event loop (``ib.connectAsync``).

    Same bound (seconds, all phases), watching and classification; raises
    :class:`AttemptFailed`. A cancellation stops the attempt, disconnects ``ib`` and
    propagates.
    """
    await _attempt(ib, host, port, client_id, timeout)


def blocking_connect(ib: Any, host: str, port: int, client_id: int, timeout: float) -> None:
    """The legacy attempt: exactly ``ib.connect(host, port, clientId=..., timeout=...)``.

    No hard bound beyond ib_insync's own (the legacy contract fixes the call), but the
    same watching and classification, so its failures are logged with the same classes.
    """
    progress = _Progress()
    watch = _Watch(ib, progress, lambda: None)
    try:
        ib.connect(host, port, clientId=client_id, timeout=timeout)
    except Exception as exc:
        watch.close()
        raise _fail(ib, classify(exc, progress), exc, progress) from exc
    except BaseException:
        watch.close()
        disconnect_quietly(ib, reason="interrupted attempt")
        raise
    watch.close()
    if progress.sync_timeouts:
        error = TimeoutError("initial sync incomplete: " + "; ".join(progress.sync_timeouts))
        raise _fail(ib, FailureClass.INCOMPLETE_SYNC, error, progress)

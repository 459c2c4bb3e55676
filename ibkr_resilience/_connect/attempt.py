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
import time
from typing import Any, NamedTuple

from .._core.log import get_logger
from ..errors import RunningEventLoopError
from .compat import ensure_event_loop
from .failures import AttemptFailed, FailureClass
from .sync import track_sync
from .watch import Progress, Watch, classify, client_of, snapshot

log = get_logger("ibkr_resilience.connect")

RUNNING_LOOP_MESSAGE = (
    "an asyncio event loop is already running in this thread (asyncio code, Jupyter): "
    "use 'async with ibkr_session(...) as ib:' instead of 'with'"
)


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
        client = client_of(ib)
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
        # stop() before run_forever(): exactly one step (the asyncio docs' contract),
        # without the task and future that run_until_complete(sleep(0)) would build.
        loop.stop()
        loop.run_forever()


def _fail(
    ib: Any,
    failure_class: FailureClass,
    error: BaseException,
    progress: Progress,
    final: bool = False,
) -> AttemptFailed:
    disconnect_quietly(ib, reason="failed attempt")
    details = progress.gateway_errors + progress.sync_timeouts
    return AttemptFailed(failure_class, error, "; ".join(details) or None, final=final)


async def _bounded(
    ib: Any,
    target: tuple[str, int, int, bool],
    timeout: float,
    progress: Progress,
    wake: asyncio.Future[None],
) -> asyncio.Future[Any]:
    host, port, client_id, readonly = target
    # ``readonly`` only when asked: an ``ib_factory`` stand-in need not know the keyword.
    extra = {"readonly": True} if readonly else {}
    task: asyncio.Future[Any] = asyncio.ensure_future(
        ib.connectAsync(host, port, clientId=client_id, timeout=timeout, **extra)
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
        snapshot(ib, progress)  # before ib_insync's cleanup resets the client state
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    return task


class AttemptSpec(NamedTuple):
    """One connect attempt: where, its bound and its mode."""

    host: str
    port: int
    client_id: int
    timeout: float
    """Seconds for the whole attempt, every phase included (TCP, handshake, sync)."""
    readonly: bool = False
    """Skip the order requests of the sync, like ``IB.connect(readonly=True)``."""
    offline_wait: float | None = None
    """Seconds to wait for 1101/1102 once connected to a gateway in 1100 (``None``:
    what is left of ``timeout``)."""


async def _attempt(ib: Any, spec: AttemptSpec) -> None:
    """The one attempt, both forms: bounded, watched and classified, in the running loop."""
    host, port, client_id, timeout = spec.host, spec.port, spec.client_id, spec.timeout
    readonly, offline_wait = spec.readonly, spec.offline_wait
    started = time.monotonic()
    progress = Progress()
    loop = asyncio.get_running_loop()
    wake: asyncio.Future[None] = loop.create_future()
    online = asyncio.Event()

    def on_signal() -> None:
        if not wake.done():
            wake.set_result(None)

    watch = Watch(ib, progress, on_signal, online.set)
    track_sync(ib, progress, timeout)
    try:
        task = await _bounded(ib, (host, port, client_id, readonly), timeout, progress, wake)
        if task.done() and not task.cancelled() and task.exception() is None and progress.offline:
            # Connected, but IB's servers are unreachable (TWS 1100): wait for 1101/1102
            # on this connection (a reconnect cannot help: the gateway is fine, IB is
            # not); no order may go out before.
            if offline_wait is None:
                offline_wait = timeout - (time.monotonic() - started)
            log.warning(
                "ibkr.connect.ib_offline",
                host=host,
                port=port,
                client_id=client_id,
                wait_s=round(max(0.0, offline_wait), 3),
                action="connected, IB's servers unreachable (TWS 1100): waiting for 1101/1102",
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(online.wait(), max(0.0, offline_wait))
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
            FailureClass.IB_OFFLINE: "IB's servers unreachable (TWS 1100) during the sync",
        }[failure_class]
        missing = _unanswered(progress)
        error = TimeoutError(f"{phase} within {timeout:g} s{missing}")
        raise _fail(ib, failure_class, error, progress)
    exc = task.exception()
    if exc is not None:
        raise _fail(ib, classify(exc, progress), exc, progress)
    if progress.sync_timeouts:
        error = TimeoutError("initial sync incomplete: " + "; ".join(progress.sync_timeouts))
        raise _fail(ib, FailureClass.INCOMPLETE_SYNC, error, progress)
    if progress.offline:
        waited = timeout if offline_wait is None else offline_wait
        error = ConnectionError(
            "connected, but the gateway reports IB's servers unreachable (TWS 1100) "
            f"and did not report them back (1101/1102) within {waited:g} s"
        )
        raise _fail(ib, FailureClass.IB_OFFLINE, error, progress, final=True)
    if progress.unanswered_optional:
        log.warning(
            "ibkr.connect.sync_partial",
            host=host,
            port=port,
            client_id=client_id,
            unanswered=list(progress.unanswered_optional),
            action="connected: these requests are optional (not used by this package)",
        )


def _unanswered(progress: Progress) -> str:
    names = progress.unanswered
    return f"; no answer to: {', '.join(names)}" if names else ""


def bounded_connect(ib: Any, spec: AttemptSpec) -> None:
    """Connect ``ib`` within ``spec.timeout`` seconds, all phases included, or raise
    AttemptFailed.

    A gateway that connects but reports IB's servers unreachable (TWS 1100) is then
    waited on, on the same connection, up to ``spec.offline_wait`` seconds (``None``: what
    is left of ``timeout``) for 1101/1102; if they do not come, the attempt fails with
    class ``ib_offline``, marked final (retrying would only reconnect to the same
    outage).

    Runs the attempt on ib_insync's loop (``run_until_complete``); raises
    :class:`~ibkr_resilience.errors.RunningEventLoopError` when that loop is already
    running (asyncio code, Jupyter: use :func:`bounded_connect_async` there).
    """
    loop = ensure_event_loop()  # the loop ib_insync uses (its util.getLoop)
    if loop.is_running():
        raise RunningEventLoopError(RUNNING_LOOP_MESSAGE)
    runner = loop.create_task(_attempt(ib, spec))
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


async def bounded_connect_async(ib: Any, spec: AttemptSpec) -> None:
    """:func:`bounded_connect` awaited in the running event loop (``ib.connectAsync``).

    Same bound (seconds, all phases), watching and classification; raises
    :class:`AttemptFailed`. A cancellation stops the attempt, disconnects ``ib`` and
    propagates.
    """
    await _attempt(ib, spec)


def blocking_connect(ib: Any, host: str, port: int, client_id: int, timeout: float) -> None:
    """The legacy attempt: exactly ``ib.connect(host, port, clientId=..., timeout=...)``.

    No hard bound beyond ib_insync's own (the legacy contract fixes the call), but the
    same watching and classification, so its failures are logged with the same classes.
    """
    progress = Progress()
    watch = Watch(ib, progress, lambda: None)
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

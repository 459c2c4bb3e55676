"""``async with ibkr_session()``: the session's steps, driven from a running event loop.

Bots written with asyncio (and notebooks, where a loop always runs) cannot use the sync
form: it runs ib_insync's loop itself. :class:`AsyncSessionForm` is the other way in to
the same lifecycle (:class:`.session.IBKRSession` inherits it and provides the steps):
the paper guard, the outcome classification, the event records and the end line are
the session's own methods, called in the same order. Only three things differ:

* **Connecting** awaits the same retry run and the same attempt coroutine in the running
  loop (``connect_with_retries_async`` / ``bounded_connect_async``): waits are
  ``asyncio.sleep``, never ``time.sleep``.
* **Side channels run off the loop.** Delivering an alert or a ping joins a daemon
  thread for up to ``IBKR_ALERT_TIMEOUT`` seconds; here each event record is handed to
  the notifier in a worker thread (``asyncio.to_thread``), one after the other in the
  order the steps produced them, followed by the ``ibkr.session.end`` line (still the
  session's last line). The session awaits them before ``__aenter__`` returns and before
  ``__aexit__`` returns (the "CONNECTION LOST" alert of a drop noticed by the
  ``disconnectedEvent`` callback included). That wait outlasts a cancellation: the
  cancellation is remembered, and raised once the records are delivered unless an
  exception is already on its way out.
* **SIGTERM (or SIGHUP) cancels the session's task** (:meth:`.signals.SignalGuard.install_in_loop`):
  the session ends with outcome ``terminated``, disconnects, alerts nothing and raises
  ``SystemExit(143)``. Any other cancellation (``task.cancel()``, ``asyncio.timeout``)
  ends with outcome ``cancelled``, a disconnect, no alert, and the ``CancelledError``
  propagates.
"""

from __future__ import annotations

import asyncio
import inspect
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Literal

from .._connect.attempt import AttemptSpec, bounded_connect_async
from .._connect.compat import IB
from .._connect.policy import connect_with_retries_async
from .._core.config import SessionConfig
from .._notify.notifier import Notifier
from .signals import SignalGuard

ExcType = type[BaseException] | None
Exc = BaseException | None
Traceback = TracebackType | None
Step = Callable[[], object]


class AsyncSessionForm(ABC):
    """``__aenter__`` / ``__aexit__`` over the steps a session provides (below, abstract)."""

    config: SessionConfig
    notifier: Notifier
    ib: Any
    ib_factory: Callable[[], Any]
    sleep: Callable[[float], object] | None
    clock: Callable[[], float]
    connect_attempts: int
    _started: float
    _signals: SignalGuard
    _in_turn: Callable[[Step], object]
    """Runs a side-channel step (a notification, the end line) after the ones before it."""

    def _offline_wait(self) -> float:
        """How long an attempt that connects into an IB outage (TWS 1100) waits for
        1101/1102: ``config.ib_offline_wait`` (the scripts: ``IBKR_OUTAGE_WAIT``), else
        the rest of the connect budget (``IBKR_CONNECT_MAX_TIME``)."""
        cfg = self.config
        if cfg.ib_offline_wait is not None:
            return cfg.ib_offline_wait
        return max(0.0, cfg.max_time - (self.clock() - self._started))

    def _attempt_spec(self, timeout: float) -> AttemptSpec:
        """One attempt of either form: the configured target, bound ``timeout`` seconds."""
        cfg = self.config
        return AttemptSpec(
            cfg.host, cfg.port, cfg.client_id, timeout, cfg.readonly, self._offline_wait()
        )

    # -- the steps (see IBKRSession) ---------------------------------------------------
    @abstractmethod
    def _begin(self) -> None:
        """Start the clock and report the start."""

    @abstractmethod
    def _schedule(self) -> dict[str, Any]:
        """The retry schedule's arguments (policy, target, clock, describe)."""

    @abstractmethod
    def _connected(self) -> None:
        """Report the connect and apply the paper guard (raises LiveAccountRefused)."""

    @abstractmethod
    def _fail_enter(self, exc: BaseException) -> None:
        """Classify and report a failed enter, disconnect, log the end."""

    @abstractmethod
    def _watch_block(self) -> None:
        """Start the block: notice a dropped connection."""

    @abstractmethod
    def _close(self, exc_type: ExcType, exc: Exc, tb: Traceback) -> None:
        """Classify how the block ended, disconnect, log the end."""

    # -- 1. enter ----------------------------------------------------------------------
    async def __aenter__(self) -> IB:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._delivery: asyncio.Task[None] | None = None
        self._in_turn = self._queue
        if self._task is not None:
            self._signals.install_in_loop(self._loop, self._task)
        self._begin()
        try:
            ib: IB = await self._connect_async()
            self.ib = ib
            self._connected()
            if await self._delivered():
                raise asyncio.CancelledError  # cancelled while the records were delivered
        except BaseException as exc:
            try:
                self._fail_enter(exc)
                await self._delivered()
            finally:
                self._signals.restore()
            if self._signals.received:
                self._exit_terminated()
            raise
        self._watch_block()
        return ib

    async def _connect_async(self) -> Any:
        async def attempt(number: int, timeout: float) -> Any:
            self.connect_attempts = number
            ib = self.ib_factory()
            await bounded_connect_async(ib, self._attempt_spec(timeout))
            return ib

        sleep = _awaiting(self.sleep) if self.sleep is not None else None
        return await connect_with_retries_async(attempt, sleep=sleep, **self._schedule())

    # -- 2. the side channels, off the loop --------------------------------------------
    def _queue(self, step: Step) -> None:
        """Run ``step`` in a worker thread after the steps before it (safe in callbacks)."""
        self._delivery = self._loop.create_task(self._run_after(self._delivery, step))

    async def _run_after(self, before: asyncio.Task[None] | None, step: Step) -> None:
        if before is not None:
            await asyncio.wait({before})
        await asyncio.to_thread(step)

    async def _delivered(self) -> bool:
        """Wait until every queued record is delivered, through cancellations; was one seen?"""
        cancelled = False
        while self._delivery is not None and not self._delivery.done():
            try:
                await asyncio.wait({self._delivery})
            except asyncio.CancelledError:
                cancelled = True
        return cancelled

    # -- 3. exit -----------------------------------------------------------------------
    async def __aexit__(self, exc_type: ExcType, exc: Exc, tb: Traceback) -> Literal[False]:
        self._signals.defer()
        try:
            self._close(exc_type, exc, tb)
            cancelled = await self._delivered()  # also lets the loop close the socket
        finally:
            self._signals.restore()
        if self._signals.received and (exc is None or isinstance(exc, asyncio.CancelledError)):
            self._exit_terminated()
        if cancelled and exc is None:
            raise asyncio.CancelledError  # a cancellation that came during the cleanup
        return False  # never swallow: the block's exception propagates unchanged

    def _exit_terminated(self) -> None:
        """End as the sync form does on SIGTERM/SIGHUP; the cancellation was ours, take it back."""
        if self._task is not None and self._task.cancelling():
            self._task.uncancel()
        raise SystemExit(self._signals.exit_code) from None


def _awaiting(sleep: Callable[[float], object]) -> Callable[[float], Awaitable[None]]:
    """An async sleep from the session's ``sleep``: awaited if it is async, else just called."""

    async def wait(seconds: float) -> None:
        result = sleep(seconds)
        if inspect.isawaitable(result):
            await result

    return wait

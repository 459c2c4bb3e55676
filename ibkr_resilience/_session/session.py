"""``ibkr_session``: a connected, fully synced ``IB`` for the length of a ``with`` block.

A cron job must either get a complete session or fail loudly and quickly, and it must
never leave a client id held on the gateway (the next run would be rejected with error
326). So the context manager owns the whole lifecycle, and only that:

1. enter: bounded, classified, logged connect attempts (:mod:`.._connect.policy`), then
   the paper-account guard;
2. inside the block: notice a dropped connection (``disconnectedEvent``), never
   reconnect (orders may be in flight);
3. exit, on every way out of the block (SIGTERM and SIGHUP included, :mod:`.signals`):
   classify how it ended, disconnect, log the end.

Everything else (alert wording, de-duplication across runs, healthcheck pings) belongs
to :class:`.._notify.notifier.Notifier`, which the session tells what happened through
small event records (:mod:`.._notify.events`).

The same steps serve ``async with`` (:mod:`.aio`): only how the attempts are awaited,
how SIGTERM arrives and how the event records reach the notifier (off the loop) differ.
A sync ``with`` inside a running event loop is refused before anything happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Literal

from .._connect.accounts import describe_ib, has_paper_account, managed_accounts
from .._connect.attempt import RUNNING_LOOP_MESSAGE, bounded_connect, disconnect_quietly
from .._connect.compat import IB
from .._connect.policy import RetryPolicy, Target, connect_with_retries
from .._core.config import DEFAULT_CLIENT_ID, SessionConfig
from .._core.log import get_logger
from .._notify.delivery import Alert
from .._notify.events import (
    BlockFailed,
    Connected,
    ConnectGaveUp,
    ConnectionLost,
    Gateway,
    LiveAccountFound,
    SessionEnded,
    SessionEvent,
    SessionStarted,
)
from .._notify.notifier import Notifier
from ..errors import ConnectionFailed, LiveAccountRefused, RunningEventLoopError
from .aio import AsyncSessionForm
from .connectivity import Connectivity
from .signals import SIGTERM_EXIT_CODE, SignalGuard

log = get_logger("ibkr_resilience.session")

__all__ = ["SIGTERM_EXIT_CODE", "IBKRSession", "ibkr_session"]


class IBKRSession(AsyncSessionForm):
    """The context manager returned by :func:`ibkr_session`; read top to bottom as the lifecycle.

    ``with`` here; ``async with`` in :class:`.aio.AsyncSessionForm`, driving the same steps.
    """

    def __init__(
        self,
        config: SessionConfig,
        *,
        alert: Alert | None,
        ib_factory: Callable[[], Any] | None,
        sleep: Callable[[float], object] | None,
        clock: Callable[[], float] | None,
        dedup: bool | None = None,
        healthcheck: bool | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.notifier = Notifier(config, alert=alert, dedup=dedup, healthcheck=healthcheck, env=env)
        self.ib_factory: Callable[[], Any] = ib_factory if ib_factory is not None else IB
        self.sleep = sleep
        self.clock: Callable[[], float] = clock if clock is not None else time.monotonic
        self.gateway = Gateway(config.host, config.port, config.client_id)
        self.target = Target(config.host, config.port, config.client_id, config.timeout)
        self.log = log.bind(host=config.host, port=config.port, client_id=config.client_id)
        self.ib: Any = None
        self.connectivity: Connectivity | None = None
        self._signals = SignalGuard()
        self._in_turn: Callable[[Callable[[], object]], object] = _now
        self._started = 0.0
        self._connected_at: float | None = None
        self._closing = False
        self._lost = False
        self.connect_attempts = 0
        """Connect attempts made so far (the run's metrics report it)."""

    @property
    def ib_connected(self) -> bool | None:
        """Whether the gateway reaches IB's servers (False between TWS 1100 and 1101/1102);
        ``None`` before the session connected."""
        return None if self.connectivity is None else self.connectivity.ib_connected

    # -- 1. enter ---------------------------------------------------------------------
    def __enter__(self) -> IB:
        _refuse_running_loop()
        self._signals.install()
        self._begin()
        try:
            ib: IB = self._connect()
            self.ib = ib
            self._connected()
        except BaseException as exc:
            try:
                self._fail_enter(exc)
            finally:
                self._signals.restore()
            raise
        self._watch_block()
        return ib

    def _begin(self) -> None:
        self._started = self.clock()
        self._notify(SessionStarted(self.gateway))

    def _connect(self) -> Any:
        def attempt(number: int, timeout: float) -> Any:
            self.connect_attempts = number
            ib = self.ib_factory()
            bounded_connect(ib, self._attempt_spec(timeout))
            return ib

        return connect_with_retries(attempt, sleep=self.sleep, **self._schedule())

    def _schedule(self) -> dict[str, Any]:
        """The retry schedule's arguments, the same for both forms (all but the sleep)."""
        cfg = self.config
        policy = RetryPolicy(
            max_attempts=cfg.max_attempts,
            max_time=cfg.max_time,
            retry_delay=cfg.retry_delay,
            max_retry_delay=cfg.max_retry_delay,
            refused_interval=cfg.refused_retry_interval,
            client_id_grace=cfg.client_id_grace,
        )
        return {
            "policy": policy,
            "target": self.target,
            "clock": self.clock,
            "describe": describe_ib,
        }

    def _connected(self) -> None:
        self._notify(Connected(self.gateway))
        self._guard_paper_account()

    def _guard_paper_account(self) -> None:
        accounts = managed_accounts(self.ib)
        if has_paper_account(accounts) or self.config.live_allowed:
            return
        self.log.error("ibkr.session.live_account_refused", accounts=accounts)
        self._disconnect("live account refused")
        raise LiveAccountRefused(
            f"no paper account (id starting with 'D') among {accounts} on "
            f"{self.config.host}:{self.config.port}; refusing to trade live. "
            "Set IBKR_ALLOW_LIVE=1 (in code: ibkr_session(paper_only=False)) to allow it.",
            accounts=accounts,
        )

    def _fail_enter(self, exc: BaseException) -> None:
        if isinstance(exc, ConnectionFailed):
            outcome = "connect_failed"
            self._notify(ConnectGaveUp(self.gateway, exc, self.config.max_attempts))
        elif isinstance(exc, LiveAccountRefused):
            outcome = "live_account_refused"
            self._notify(LiveAccountFound(self.gateway, tuple(exc.accounts)))
        else:
            outcome = self._outcome(type(exc), exc, exc.__traceback__, phase="connect")
            if self.ib is not None:
                self._disconnect("connect interrupted")
        self._end(outcome)

    # -- 2. inside the block ----------------------------------------------------------
    def _watch_block(self) -> None:
        self._connected_at = self.clock()
        self.connectivity = Connectivity(self.ib, self.log)
        event = getattr(self.ib, "disconnectedEvent", None)
        if event is not None:
            event.connect(self._on_disconnected)

    def _on_disconnected(self, *args: Any) -> None:
        if self._closing or self._lost:
            return
        self._lost = True
        connected_s = self._connected_s()
        self.log.error(
            "ibkr.session.lost",
            connected_s=None if connected_s is None else round(connected_s, 3),
            action="not reconnecting inside the block: orders may be in flight",
        )
        self._notify(ConnectionLost(self.gateway, connected_s))

    # -- 3. exit ----------------------------------------------------------------------
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        self._signals.defer()
        try:
            self._close(exc_type, exc, tb)
        finally:
            self._signals.restore()
        if self._signals.deferred and exc is None:
            raise SystemExit(self._signals.exit_code)
        return False  # never swallow: the block's exception propagates unchanged

    def _close(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        outcome = self._outcome(exc_type, exc, tb, phase="block")
        self._disconnect("session end")
        self._end(outcome)

    def _outcome(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        *,
        phase: str,
    ) -> str:
        """How the session ended (``ibkr.session.end``'s ``outcome``); logs and alerts errors."""
        if exc is None or exc_type is None:
            return "lost" if self._lost else "ok"
        if isinstance(exc, KeyboardInterrupt):
            self.log.warning("ibkr.session.interrupted", phase=phase)
            return "interrupted"
        if isinstance(exc, SystemExit | asyncio.CancelledError) and self._signals.received:
            # SIGTERM/SIGHUP: SystemExit in the sync form, the session's task cancelled in
            # the async one
            self.log.warning("ibkr.session.terminated", phase=phase, signal=self._signals.received)
            return "terminated"
        if isinstance(exc, asyncio.CancelledError):
            self.log.warning("ibkr.session.cancelled", phase=phase)
            return "cancelled"
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            return "lost" if self._lost else "ok"
        if self._lost and isinstance(exc, ConnectionError):
            # The drop was logged and alerted when it happened (_on_disconnected); a
            # request it failed ("Socket disconnect", "Not connected") is its echo.
            self.log.warning(
                "ibkr.session.lost_error",
                phase=phase,
                error_type=exc_type.__name__,
                error=str(exc),
                action="not alerted again: the loss was reported when it happened",
            )
            return "lost"
        self.log.error(
            "ibkr.session.error",
            phase=phase,
            error_type=exc_type.__name__,
            error=str(exc),
            exc_info=(exc_type, exc, tb),
        )
        self._notify(
            BlockFailed(self.gateway, phase, exc_type.__name__, str(exc), self._connected_s())
        )
        return "error"

    def _disconnect(self, reason: str) -> None:
        self._closing = True
        with contextlib.suppress(Exception):
            self.ib.disconnectedEvent.disconnect(self._on_disconnected)
        if self.connectivity is not None:
            self.connectivity.close()
        disconnect_quietly(self.ib, reason=reason)

    def _end(self, outcome: str) -> None:
        duration_s = self.clock() - self._started
        self._notify(
            SessionEnded(self.gateway, outcome, duration_s, self._signals.received is not None)
        )
        connected_s = self._connected_s()
        end_line = functools.partial(
            self.log.info,
            "ibkr.session.end",
            outcome=outcome,
            duration_s=round(duration_s, 3),
            connected_s=None if connected_s is None else round(connected_s, 3),
            connection_lost=self._lost,
        )
        self._in_turn(end_line)  # the session's last line, after its alerts and pings

    # -- the side channels ------------------------------------------------------------
    def _notify(self, event: SessionEvent) -> None:
        """Hand ``event`` to the notifier, in turn (async form: off the loop, awaited later)."""
        self._in_turn(functools.partial(self.notifier.notify, event))

    def _connected_s(self) -> float | None:
        return None if self._connected_at is None else self.clock() - self._connected_at


def _now(step: Callable[[], object]) -> object:
    """The sync form's ``_in_turn``: side-channel steps run at once, in the caller's thread."""
    return step()


def _refuse_running_loop() -> None:
    """The sync form runs the event loop itself: impossible while this thread's loop runs."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RunningEventLoopError(RUNNING_LOOP_MESSAGE)


def ibkr_session(
    client_id: int | None = DEFAULT_CLIENT_ID,
    host: str | None = None,
    port: int | None = None,
    *,
    timeout: float | None = None,
    max_attempts: int | None = None,
    max_time: float | None = None,
    alert: Alert | None = None,
    ib_factory: Callable[[], Any] | None = None,
    paper_only: bool = True,
    readonly: bool = False,
    sleep: Callable[[float], object] | None = None,
    clock: Callable[[], float] | None = None,
    config: SessionConfig | None = None,
    env: Mapping[str, str] | None = None,
    dedup: bool | None = None,
    healthcheck: bool | None = None,
) -> IBKRSession:
    """Connect (with retries), yield a connected and synced ``IB``, always disconnect.

    Use it as ``with ibkr_session(...) as ib:`` in plain code, and as
    ``async with ibkr_session(...) as ib:`` inside a running event loop (asyncio code,
    Jupyter): the same attempts, bounds, logs, alerts and disconnect, without blocking
    the loop. A sync ``with`` inside a running loop raises :class:`RunningEventLoopError`
    before connecting or alerting. In the async form, SIGTERM ends the session with
    outcome ``terminated`` and ``SystemExit(143)`` as in the sync form, and a cancelled
    task (``task.cancel()``, ``asyncio.timeout``) disconnects, sends no alert and
    re-raises the ``CancelledError``.

    ``None`` means "from the environment (``IBKR_*``), else the default"; with
    ``config`` the environment is not read. ``alert`` is any callable taking one
    ``str`` (default: Telegram from the environment). ``ib_factory``, ``sleep`` and
    ``clock`` exist for tests and special setups: a fresh ``ib_factory()`` instance is
    used for every attempt; ``clock()`` returns monotonic seconds; ``sleep(seconds)``
    replaces the wait between attempts (for ``async with`` it may be an async function,
    whose result is awaited). Raises :class:`ConnectionFailed` when every attempt failed
    (the block does not run) and :class:`LiveAccountRefused` when the gateway offers no
    paper account and ``paper_only`` is true and ``IBKR_ALLOW_LIVE`` is not set.

    ``readonly=True`` connects like ``IB.connect(readonly=True)``: the order requests of
    the initial sync (open and completed orders) are not sent, so a job that only reads
    works against a gateway with "Read-Only API" ticked (TWS error 321 on order requests).

    ``dedup`` de-duplicates connection-failure alerts across runs (``docs/alerts.md``):
    ``None`` turns it on when ``IBKR_ALERT_STATE_FILE`` is set or the default alert is
    Telegram, ``True``/``False`` force it. ``healthcheck`` pings ``IBKR_HEALTHCHECK_URL``
    when set: ``None`` from the outermost session of the process only, ``True`` from this
    one even when nested, ``False`` never.
    """
    overrides: dict[str, Any] = {
        "client_id": client_id,
        "host": host,
        "port": port,
        "timeout": timeout,
        "max_attempts": max_attempts,
        "max_time": max_time,
        "readonly": readonly or None,
    }
    if config is not None:
        # Turning the guard off takes an explicit False, from either place.
        cfg = config.replace(**overrides, paper_only=paper_only and config.paper_only)
    else:
        cfg = SessionConfig.from_env(env, **overrides, paper_only=paper_only)
    return IBKRSession(
        cfg,
        alert=alert,
        ib_factory=ib_factory,
        sleep=sleep,
        clock=clock,
        dedup=dedup,
        healthcheck=healthcheck,
        env=env,
    )

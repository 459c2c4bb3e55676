"""``ibkr_session``: a connected, fully synced ``IB`` for the length of a ``with`` block.

A cron job must either get a complete session or fail loudly and quickly, and it must
never leave a client id held on the gateway (the next run would be rejected with error
326). So the context manager owns the whole lifecycle: bounded, classified, logged
connect attempts; a paper-account guard; an alert when the job fails; and a disconnect
on every way out of the block, SIGTERM included (Python runs no ``finally`` on SIGTERM
unless a handler turns it into an exception).

Around that, two things that make it fit unattended cron runs (``docs/alerts.md``):

* connection-failure alerts are de-duplicated across runs through a state file
  (:mod:`._alert_state`), with one "recovered" message on the next successful connect.
  Only those: an exception escaping the block, a mid-session drop and a live-account
  refusal are job failures, rare and each actionable, so they are always sent;
* an optional healthchecks.io-style check (:mod:`._healthcheck`) is pinged at the start
  and with the outcome. Only the outermost session of a process pings, so a helper
  session opened inside a job (``close_positions`` cancelling as another client id)
  cannot report the job as finished or failed.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from types import FrameType, TracebackType
from typing import Any, Literal

import structlog

from ._alert_state import (
    AlertDeduplicator,
    FailureKey,
    Occurrence,
    Recovery,
    default_state_path,
    format_duration,
    iso_utc,
)
from ._alerts import (
    Alert,
    AlertOutcome,
    DisabledAlert,
    TelegramAlert,
    alert_text,
    client_id_hint,
    deliver_alert,
)
from ._attempt import FailureClass, bounded_connect, disconnect_quietly
from ._config import DEFAULT_CLIENT_ID, SessionConfig
from ._errors import ConnectionFailed, LiveAccountRefused
from ._healthcheck import Healthcheck, PingKind
from ._ibcompat import IB
from ._policy import RetryPolicy, Target, connect_with_retries

log = structlog.get_logger("ibkr_resilience.session")

SIGTERM_EXIT_CODE = 143

LOCK_GRACE_S = 2.0
"""A run waits for the de-dup lock this much longer than another run may hold it."""

_depth_lock = threading.Lock()
_active_sessions = 0
"""Sessions entered and not yet left in this process: only the outermost pings."""


def is_paper_account(account: str) -> bool:
    """Paper account ids start with ``D`` (``DU1234567``)."""
    return account.startswith("D")


def describe_ib(ib: Any) -> dict[str, Any]:
    """What a success line reports: the server version and the managed accounts."""
    info: dict[str, Any] = {}
    try:
        info["server_version"] = ib.client.serverVersion()
    except Exception:
        info["server_version"] = None
    info["accounts"] = managed_accounts(ib)
    return info


def managed_accounts(ib: Any) -> list[str]:
    try:
        return [str(a) for a in ib.managedAccounts()]
    except Exception:
        return []


def alert_from_config(config: SessionConfig) -> Alert:
    """The default alert: Telegram when token and chat id are set, else a logged no-op."""
    if config.telegram_token and config.telegram_chat_id:
        return TelegramAlert(
            config.telegram_token,
            config.telegram_chat_id,
            api_url=config.telegram_api_url,
            timeout=config.alert_timeout,
        )
    missing = [
        name
        for name, value in (
            ("IFDS_TELEGRAM_BOT_TOKEN", config.telegram_token),
            ("IFDS_TELEGRAM_CHAT_ID", config.telegram_chat_id),
        )
        if not value
    ]
    return DisabledAlert(f"{' and '.join(missing)} not set")


def connect_failed_text(
    exc: ConnectionFailed,
    target: Target,
    max_attempts: int,
    *,
    title: str = "IBKR CONNECTION FAILED",
    extra_facts: list[tuple[str, object]] | None = None,
    extra_notes: list[str] | None = None,
) -> str:
    """The give-up alert (shared with the legacy ``connect``); de-dup adds facts and notes."""
    last = exc.last_error
    notes = [client_id_hint(target.client_id)] if exc.failure_class == FailureClass.REJECTED else []
    return alert_text(
        title,
        [
            ("Gateway", f"{target.host}:{target.port}"),
            ("clientId", target.client_id),
            *(extra_facts or []),
            ("Attempts", f"{exc.attempts}/{max_attempts}"),
            ("Elapsed", f"{exc.elapsed:.1f} s"),
            ("Failure", exc.failure_class),
            ("Last error", f"{type(last).__name__}: {last}" if last is not None else "none"),
        ],
        notes + (extra_notes or []),
    )


def _utc_hm(epoch: float) -> str:
    return iso_utc(epoch)[:16].replace("T", " ") + " UTC"


def occurrence_text(
    exc: ConnectionFailed, target: Target, max_attempts: int, occurrence: Occurrence
) -> str:
    """The give-up alert as the de-dup layer words it: first alert, or a reminder."""
    interval = format_duration(occurrence.repeat_interval)
    if occurrence.kind == "reminder":
        return connect_failed_text(
            exc,
            target,
            max_attempts,
            title="IBKR CONNECTION STILL FAILING",
            extra_facts=[
                (
                    "Down for",
                    f"{format_duration(occurrence.down_s)} "
                    f"(since {_utc_hm(occurrence.first_failure_at)})",
                ),
                ("Failed runs", occurrence.failures),
            ],
            extra_notes=[f"Reminder: next one in {interval} if it keeps failing."],
        )
    if occurrence.kind == "first":
        return connect_failed_text(
            exc,
            target,
            max_attempts,
            extra_notes=[
                f"Repeats are not alerted for {interval}; a message follows when it connects again."
            ],
        )
    return connect_failed_text(exc, target, max_attempts)


def recovered_text(recovery: Recovery) -> str:
    """The one message after an alerted outage: how long it was down, how often it failed."""
    return alert_text(
        "IBKR CONNECTION RECOVERED",
        [
            ("Gateway", f"{recovery.host}:{recovery.port}"),
            ("clientId", recovery.client_id),
            (
                "Down for",
                f"{format_duration(recovery.down_s)} (since {_utc_hm(recovery.since)})",
            ),
            ("Failed runs", recovery.failures),
            ("Failure", ", ".join(recovery.failure_classes)),
        ],
    )


def dedup_from_config(
    config: SessionConfig, *, alert_injected: bool, dedup: bool | None
) -> AlertDeduplicator | None:
    """Whether (and where) connection-failure alerts are de-duplicated.

    ``dedup=False``: never. ``True``: always, at ``alert_state_file`` or the default
    path. ``None`` (the default): when ``IBKR_ALERT_STATE_FILE`` is set, or when the
    default alert is Telegram. An injected ``alert`` without a state file sees every
    event: tests and custom hooks must not share state in the user's home directory.
    """
    if dedup is False:
        return None
    telegram = bool(config.telegram_token and config.telegram_chat_id)
    if dedup is None and config.alert_state_file is None and (alert_injected or not telegram):
        return None
    path = config.alert_state_file or default_state_path()
    return AlertDeduplicator(
        path,
        config.alert_repeat_interval,
        lock_timeout=config.alert_timeout + LOCK_GRACE_S,
    )


class IBKRSession:
    """The context manager returned by :func:`ibkr_session`."""

    def __init__(
        self,
        config: SessionConfig,
        *,
        alert: Alert | None,
        ib_factory: Callable[[], Any] | None,
        sleep: Callable[[float], None] | None,
        clock: Callable[[], float] | None,
        dedup: bool | None = None,
        healthcheck: bool | None = None,
    ) -> None:
        self.config = config
        self.alert: Alert = alert if alert is not None else alert_from_config(config)
        self.dedup = dedup_from_config(config, alert_injected=alert is not None, dedup=dedup)
        self.healthcheck = (
            Healthcheck(config.healthcheck_url, config.alert_timeout)
            if config.healthcheck_url and healthcheck is not False
            else None
        )
        self._healthcheck_forced = healthcheck is True
        self._pinging = False
        self._ping_rid = str(uuid.uuid4())
        self._entered = False
        self.ib_factory: Callable[[], Any] = ib_factory if ib_factory is not None else IB
        self.sleep = sleep
        self.clock: Callable[[], float] = clock if clock is not None else time.monotonic
        self.target = Target(config.host, config.port, config.client_id, config.timeout)
        self.log = log.bind(host=config.host, port=config.port, client_id=config.client_id)
        self.ib: Any = None
        self._started = 0.0
        self._connected_at: float | None = None
        self._closing = False
        self._lost = False
        self._terminated = False
        self._late_sigterm = False
        self._previous_handler: Any = None
        self._handler_installed = False

    # -- enter ------------------------------------------------------------------------
    def __enter__(self) -> Any:
        self._started = self.clock()
        self._install_sigterm()
        self._enter_process()
        try:
            self._ping("start")
            self.ib = self._connect()
            self._recovered()
            self._guard_paper_account()
        except BaseException as exc:
            self._fail_enter(exc)
            raise
        self._connected_at = self.clock()
        event = getattr(self.ib, "disconnectedEvent", None)
        if event is not None:
            event.connect(self._on_disconnected)
        return self.ib

    def _connect(self) -> Any:
        cfg = self.config
        policy = RetryPolicy(
            max_attempts=cfg.max_attempts,
            max_time=cfg.max_time,
            retry_delay=cfg.retry_delay,
            max_retry_delay=cfg.max_retry_delay,
            refused_interval=cfg.refused_retry_interval,
        )

        def attempt(number: int, timeout: float) -> Any:
            ib = self.ib_factory()
            bounded_connect(ib, cfg.host, cfg.port, cfg.client_id, timeout)
            return ib

        return connect_with_retries(
            attempt,
            policy=policy,
            target=self.target,
            clock=self.clock,
            sleep=self.sleep,
            describe=describe_ib,
        )

    def _guard_paper_account(self) -> None:
        accounts = managed_accounts(self.ib)
        if any(is_paper_account(a) for a in accounts) or self.config.live_allowed:
            return
        self.log.error("ibkr.session.live_account_refused", accounts=accounts)
        self._closing = True
        disconnect_quietly(self.ib, reason="live account refused")
        raise LiveAccountRefused(
            f"no paper account (id starting with 'D') among {accounts} on "
            f"{self.config.host}:{self.config.port}; refusing to trade live. "
            "Pass paper_only=False or set IBKR_ALLOW_LIVE=1 to allow it.",
            accounts=accounts,
        )

    def _recovered(self) -> None:
        """A connect succeeded: if earlier runs alerted a failure, say it recovered."""
        if self.dedup is None:
            return
        cfg = self.config
        try:
            self.dedup.success(cfg.host, cfg.port, cfg.client_id, recovered_text, self._send)
        except Exception as exc:  # the de-dup layer must never break a session
            self._dedup_failed(exc)

    def _connect_failed_alert(self, exc: ConnectionFailed) -> None:
        cfg = self.config
        plain = connect_failed_text(exc, self.target, cfg.max_attempts)
        if self.dedup is None:
            self._alert(plain)
            return
        key = FailureKey(cfg.host, cfg.port, cfg.client_id, str(exc.failure_class))
        attempted = False

        def send(text: str) -> AlertOutcome:
            nonlocal attempted
            attempted = True
            return self._send(text)

        try:
            self.dedup.failure(
                key,
                lambda occurrence: occurrence_text(exc, self.target, cfg.max_attempts, occurrence),
                send,
            )
        except Exception as error:
            self._dedup_failed(error)
            if not attempted:  # fail open: never lose the alert to the de-dup layer
                self._alert(plain)

    def _dedup_failed(self, exc: Exception) -> None:
        self.log.error(
            "ibkr.alert.dedup_failed",
            error_type=type(exc).__name__,
            error=str(exc),
            exc_info=exc,
        )

    def _fail_enter(self, exc: BaseException) -> None:
        try:
            if isinstance(exc, ConnectionFailed):
                outcome = "connect_failed"
                self._connect_failed_alert(exc)
            elif isinstance(exc, LiveAccountRefused):
                outcome = "live_account_refused"
                self._alert(
                    alert_text(
                        "IBKR LIVE ACCOUNT REFUSED",
                        [
                            ("Gateway", f"{self.config.host}:{self.config.port}"),
                            ("clientId", self.config.client_id),
                            ("Accounts", ", ".join(exc.accounts) or "none"),
                        ],
                        ["No paper account (id starting with D): wrong port? Nothing was traded."],
                    )
                )
            else:
                outcome = self._log_block_exit(type(exc), exc, exc.__traceback__, phase="connect")
                if self.ib is not None:
                    self._closing = True
                    disconnect_quietly(self.ib, reason="connect interrupted")
            self._ping_outcome(outcome)
            self._log_end(outcome)
        finally:
            self._leave_process()
            self._restore_sigterm()

    # -- exit -------------------------------------------------------------------------
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        self._defer_sigterm()
        try:
            outcome = self._log_block_exit(exc_type, exc, tb, phase="block")
            self._closing = True
            with contextlib.suppress(Exception):
                self.ib.disconnectedEvent.disconnect(self._on_disconnected)
            disconnect_quietly(self.ib, reason="session end")
            self._ping_outcome(outcome)
            self._log_end(outcome)
        finally:
            self._leave_process()
            self._restore_sigterm()
        if self._late_sigterm and exc is None:
            raise SystemExit(SIGTERM_EXIT_CODE)
        return False  # never swallow: the block's exception propagates unchanged

    def _log_block_exit(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        *,
        phase: str,
    ) -> str:
        if exc is None or exc_type is None:
            return "lost" if self._lost else "ok"
        if isinstance(exc, KeyboardInterrupt):
            self.log.warning("ibkr.session.interrupted", phase=phase)
            return "interrupted"
        if isinstance(exc, SystemExit) and self._terminated:
            self.log.warning("ibkr.session.terminated", phase=phase, signal="SIGTERM")
            return "terminated"
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
        self._alert(
            alert_text(
                "IBKR SESSION FAILED",
                [
                    ("Gateway", f"{self.config.host}:{self.config.port}"),
                    ("clientId", self.config.client_id),
                    ("Phase", phase),
                    ("Error", f"{exc_type.__name__}: {exc}"),
                    ("Connected for", self._connected_for()),
                ],
            )
        )
        return "error"

    def _log_end(self, outcome: str) -> None:
        self.log.info(
            "ibkr.session.end",
            outcome=outcome,
            duration_s=round(self.clock() - self._started, 3),
            connected_s=None
            if self._connected_at is None
            else round(self.clock() - self._connected_at, 3),
            connection_lost=self._lost,
        )

    # -- mid-session loss -------------------------------------------------------------
    def _connected_for(self) -> str:
        if self._connected_at is None:
            return "never connected"
        return f"{self.clock() - self._connected_at:.1f} s"

    def _on_disconnected(self, *args: Any) -> None:
        if self._closing or self._lost:
            return
        self._lost = True
        connected_s = None if self._connected_at is None else self.clock() - self._connected_at
        self.log.error(
            "ibkr.session.lost",
            connected_s=None if connected_s is None else round(connected_s, 3),
            action="not reconnecting inside the block: orders may be in flight",
        )
        self._alert(
            alert_text(
                "IBKR CONNECTION LOST",
                [
                    ("Gateway", f"{self.config.host}:{self.config.port}"),
                    ("clientId", self.config.client_id),
                    ("Connected for", self._connected_for()),
                ],
                ["The job was not reconnected: check its orders and positions."],
            )
        )

    def _alert(self, text: str) -> None:
        deliver_alert(self.alert, text, self.config.alert_timeout)

    def _send(self, text: str) -> AlertOutcome:
        return deliver_alert(self.alert, text, self.config.alert_timeout)

    # -- healthcheck pings ------------------------------------------------------------
    def _enter_process(self) -> None:
        global _active_sessions
        with _depth_lock:
            outermost = _active_sessions == 0
            _active_sessions += 1
        self._entered = True
        self._pinging = self.healthcheck is not None and (outermost or self._healthcheck_forced)

    def _leave_process(self) -> None:
        global _active_sessions
        if self._entered:
            self._entered = False
            with _depth_lock:
                _active_sessions -= 1

    def _ping(self, kind: PingKind, body: str = "") -> None:
        if self._pinging and self.healthcheck is not None:
            self.healthcheck.ping(kind, body, self._ping_rid)

    def _ping_outcome(self, outcome: str) -> None:
        """``<url>`` for ``ok``; ``<url>/fail`` for everything else, signals included."""
        success = outcome == "ok" and not self._terminated
        cfg = self.config
        body = (
            f"outcome={outcome} gateway={cfg.host}:{cfg.port} client_id={cfg.client_id} "
            f"duration_s={self.clock() - self._started:.1f}"
        )
        self._ping("success" if success else "fail", body)

    # -- SIGTERM ----------------------------------------------------------------------
    def _install_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self._previous_handler = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self._handler_installed = True

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self._terminated = True
        raise SystemExit(SIGTERM_EXIT_CODE)

    def _defer_sigterm(self) -> None:
        """While cleaning up, a SIGTERM is remembered instead of cutting the cleanup short."""
        if self._handler_installed:

            def later(signum: int, frame: FrameType | None) -> None:
                self._terminated = True
                self._late_sigterm = True

            signal.signal(signal.SIGTERM, later)

    def _restore_sigterm(self) -> None:
        if self._handler_installed:
            previous = self._previous_handler
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
            self._handler_installed = False


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
    sleep: Callable[[float], None] | None = None,
    clock: Callable[[], float] | None = None,
    config: SessionConfig | None = None,
    env: Mapping[str, str] | None = None,
    dedup: bool | None = None,
    healthcheck: bool | None = None,
) -> IBKRSession:
    """Connect (with retries), yield a connected and synced ``IB``, always disconnect.

    ``None`` means "from the environment (``IBKR_*``), else the default"; with
    ``config`` the environment is not read. ``alert`` is any callable taking one
    ``str`` (default: Telegram from the environment). ``ib_factory``, ``sleep`` and
    ``clock`` exist for tests and special setups: a fresh ``ib_factory()`` instance is
    used for every attempt. Raises :class:`ConnectionFailed` when every attempt failed
    (the block does not run) and :class:`LiveAccountRefused` when the gateway offers no
    paper account and ``paper_only`` is true and ``IBKR_ALLOW_LIVE`` is not set.

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
    )

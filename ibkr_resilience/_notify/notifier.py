"""The one object a session talks to about everything that is not the connection.

:class:`Notifier` takes the session's event records (:mod:`.events`) and turns them into
alerts (worded by :mod:`.texts`, de-duplicated across runs by :mod:`.dedup`, delivered
bounded by :mod:`.delivery`) and healthcheck pings (:mod:`.healthcheck`). It never
raises: a side channel must never fail the job it reports on.

Routing, in one table (:meth:`Notifier.notify`):

* a failed connect goes through the de-dup layer (first alert, reminders, suppressed);
  the next successful connect sends one "recovered" message;
* a lost connection, an exception escaping the block and a live-account refusal are job
  failures, rare and each actionable: always sent;
* start and end of the session ping the healthcheck, from the outermost session of the
  process only, so a helper session opened inside a job (``close_positions`` cancelling
  as another client id) cannot report the job as finished or failed. The trading scripts
  open theirs with ``healthcheck=False`` and ping per run (``_app/jobs/run_alerts.py``);
  ``failure_reported`` tells them whether this session already alerted the run's failure.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .._core.config import SessionConfig
from .._core.log import get_logger
from .delivery import Alert, AlertOutcome, deliver_alert
from .events import (
    BlockFailed,
    Connected,
    ConnectGaveUp,
    ConnectionLost,
    LiveAccountFound,
    SessionEnded,
    SessionEvent,
    SessionStarted,
)
from .http import HttpPost, requests_post
from .telegram import DisabledAlert, TelegramAlert

if TYPE_CHECKING:
    from .dedup import AlertDeduplicator
    from .healthcheck import Healthcheck, PingKind

# The de-dup state, the healthcheck and the alert texts are imported where they are
# used: a run with neither configured, that connects and ends well, never needs them
# (docs/performance.md, section 5).

log = get_logger("ibkr_resilience.session")

LOCK_GRACE_S = 2.0
"""A run waits for the de-dup lock this much longer than another run may hold it."""

_depth_lock = threading.Lock()
_active_sessions = 0
"""Sessions started and not yet ended in this process: only the outermost pings."""


def alert_from_config(config: SessionConfig, post: HttpPost = requests_post) -> Alert:
    """The default alert: Telegram when token and chat id are set, else a logged no-op."""
    if config.telegram_token and config.telegram_chat_id:
        return TelegramAlert(
            config.telegram_token,
            config.telegram_chat_id,
            api_url=config.telegram_api_url,
            timeout=config.alert_timeout,
            post=post,
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


def dedup_from_config(
    config: SessionConfig,
    *,
    alert_injected: bool,
    dedup: bool | None,
    env: Mapping[str, str] | None = None,
) -> AlertDeduplicator | None:
    """Whether (and where) connection-failure alerts are de-duplicated.

    ``dedup=False``: never. ``True``: always, at ``alert_state_file`` or the default
    path. ``None`` (the default): when ``IBKR_ALERT_STATE_FILE`` is set, or when the
    default alert is Telegram. An injected ``alert`` without a state file sees every
    event: tests and custom hooks must not share state in the user's home directory.
    ``env``: where the default path's ``XDG_STATE_HOME``/``HOME`` come from (``None``:
    ``os.environ``), the same mapping the settings came from.
    """
    if dedup is False:
        return None
    telegram = bool(config.telegram_token and config.telegram_chat_id)
    if dedup is None and config.alert_state_file is None and (alert_injected or not telegram):
        return None
    from .alert_state import default_state_path
    from .dedup import AlertDeduplicator

    path = config.alert_state_file or default_state_path(env)
    return AlertDeduplicator(
        path,
        config.alert_repeat_interval,
        lock_timeout=config.alert_timeout + LOCK_GRACE_S,
    )


class Notifier:
    """Routes a session's events to the alert hook, the de-dup state and the healthcheck.

    ``alert``: any :class:`.delivery.Alert` (default: Telegram from ``config``). ``dedup``
    and ``healthcheck``: ``None`` decides from the configuration, ``True``/``False`` force
    (see :func:`ibkr_resilience.ibkr_session`). ``post`` is the HTTP seam for the default
    channels.
    """

    def __init__(
        self,
        config: SessionConfig,
        *,
        alert: Alert | None = None,
        dedup: bool | None = None,
        healthcheck: bool | None = None,
        post: HttpPost = requests_post,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.timeout = config.alert_timeout
        self.alert: Alert = alert if alert is not None else alert_from_config(config, post)
        self.dedup = dedup_from_config(
            config, alert_injected=alert is not None, dedup=dedup, env=env
        )
        self.healthcheck: Healthcheck | None = None
        if config.healthcheck_url and healthcheck is not False:
            from .healthcheck import Healthcheck

            self.healthcheck = Healthcheck(config.healthcheck_url, config.alert_timeout, post=post)
        self._healthcheck_forced = healthcheck is True
        self._pinging = False
        self._started = False
        self._ping_rid = str(uuid.uuid4())
        self.failure_reported = False
        """Whether a failure of this session went to the alert path (sent, failed to send,
        or suppressed by the de-dup layer): a script's run-level alert then stays quiet."""
        self.log = log.bind(host=config.host, port=config.port, client_id=config.client_id)
        self._routes: dict[type[Any], Callable[[Any], object]] = {
            SessionStarted: self._session_started,
            Connected: self._connected,
            ConnectGaveUp: self._gave_up,
            LiveAccountFound: self._live_account,
            ConnectionLost: self._lost,
            BlockFailed: self._block_failed,
            SessionEnded: self._session_ended,
        }

    def notify(self, event: SessionEvent) -> None:
        """Alert and/or ping for ``event`` (each message bounded); never raises."""
        try:
            self._routes[type(event)](event)
        except Exception as exc:  # pragma: no cover  (every route already swallows)
            self.log.error("ibkr.notify.failed", error_type=type(exc).__name__, error=str(exc))

    # -- alerts ------------------------------------------------------------------------
    def _send(self, text: str) -> AlertOutcome:
        return deliver_alert(self.alert, text, self.timeout)

    def _send_failure(self, text: str) -> AlertOutcome:
        self.failure_reported = True
        return self._send(text)

    def _live_account(self, event: LiveAccountFound) -> None:
        from .texts import live_account_text

        self._send_failure(live_account_text(event))

    def _lost(self, event: ConnectionLost) -> None:
        from .texts import lost_text

        self._send_failure(lost_text(event))

    def _block_failed(self, event: BlockFailed) -> None:
        from .texts import block_failed_text

        self._send_failure(block_failed_text(event))

    def _connected(self, event: Connected) -> None:
        """If earlier runs alerted a failure of this session, say it recovered."""
        if self.dedup is None:
            return
        from .texts import recovered_text

        gw = event.gateway
        try:
            self.dedup.success(gw.host, gw.port, gw.client_id, recovered_text, self._send)
        except Exception as exc:  # the de-dup layer must never break a session
            self._dedup_failed(exc)

    def _gave_up(self, event: ConnectGaveUp) -> None:
        from .alert_state import FailureKey
        from .texts import gave_up_text, occurrence_text

        self.failure_reported = True
        if self.dedup is None:
            self._send(gave_up_text(event))
            return
        gw = event.gateway
        key = FailureKey(gw.host, gw.port, gw.client_id, str(event.error.failure_class))
        attempted = False

        def send(text: str) -> AlertOutcome:
            nonlocal attempted
            attempted = True
            return self._send(text)

        try:
            self.dedup.failure(key, lambda occurrence: occurrence_text(event, occurrence), send)
        except Exception as error:
            self._dedup_failed(error)
            if not attempted:  # fail open: never lose the alert to the de-dup layer
                self._send(gave_up_text(event))

    def _dedup_failed(self, exc: Exception) -> None:
        self.log.error(
            "ibkr.alert.dedup_failed",
            error_type=type(exc).__name__,
            error=str(exc),
            exc_info=exc,
        )

    # -- healthcheck pings -------------------------------------------------------------
    def _session_started(self, event: SessionStarted) -> None:
        global _active_sessions
        with _depth_lock:
            outermost = _active_sessions == 0
            _active_sessions += 1
        self._started = True
        self._pinging = self.healthcheck is not None and (outermost or self._healthcheck_forced)
        if self._pinging and self.healthcheck is not None:
            self.healthcheck.start_in_background(self._ping_rid)

    def _session_ended(self, event: SessionEnded) -> None:
        """``<url>`` for ``ok``; ``<url>/fail`` for everything else, signals included."""
        global _active_sessions
        gw = event.gateway
        success = event.outcome == "ok" and not event.signalled
        body = (
            f"outcome={event.outcome} gateway={gw.address} client_id={gw.client_id} "
            f"duration_s={event.duration_s:.1f}"
        )
        self._ping("success" if success else "fail", body)
        if self._started:
            self._started = False
            with _depth_lock:
                _active_sessions -= 1

    def _ping(self, kind: PingKind, body: str = "") -> None:
        if self._pinging and self.healthcheck is not None:
            self.healthcheck.ping(kind, body, self._ping_rid)

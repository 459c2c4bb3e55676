"""A script run's own alert and healthcheck pings: every failing run is loud.

The session alerts what it sees: a connect that gives up, a live account, a lost
gateway, an exception out of the block. A cron run can fail without any of that: every
order rejected (exit 3), the day's plan missing (exit 2), a bad setting, a signal. Such a
run must not end with one line in a log nobody reads, so the script owns the run's side
channels (:class:`RunAlerts`):

* **healthcheck**: ``<url>/start`` as soon as the command line is parsed (before the
  settings and the plan are read: a missing plan is a start and a failure ping), and the
  outcome at the end: ``<url>`` for exit 0, ``<url>/<exit code>`` for a failure,
  ``<url>/fail`` for a signal (129, 130, 143), with the run summary as the body. The
  session inside is opened with ``healthcheck=False``, so it sends none of its own;
* **alert**: one per failing run, unless the session already reported a failure of this
  run (sent, failed to send or de-duplicated: ``Notifier.failure_reported``), through the
  de-dup layer under a run key (script and exit code, :func:`.._notify.dedup.run_key`):
  a job failing every five minutes alerts once, then reminds; the next run that exits 0
  clears the key and, if it was alerted, says so once.

The channel settings are read one by one, each in its own ``try``: the run may be failing
*because* of a bad setting, and a bad ``IBKR_PORT`` must not silence the alert about it.
A bad channel setting (the bot token, the chat id, the API URL, the healthcheck URL)
disables only that channel; a bad ``IBKR_ALERT_TIMEOUT`` falls back to the default bound
and a bad ``IBKR_ALERT_REPEAT_INTERVAL`` sends without de-duplication. Every step is
bounded (``IBKR_ALERT_TIMEOUT`` per message) and never raises.
"""

from __future__ import annotations

import contextlib
import functools
import re
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..._core.config import SessionConfig, env_value
from ..._core.log import get_logger
from ..._notify.delivery import Alert, AlertOutcome, deliver_alert
from ..._notify.notifier import alert_from_config, dedup_from_config
from ...errors import ConfigError
from .exits import EXIT_CODES_HELP, ExitCode

if TYPE_CHECKING:
    from ..._notify.dedup import AlertDeduplicator
    from ..._notify.healthcheck import Healthcheck

# The de-dup layer, the healthcheck and the alert texts are imported where a run uses
# them: a quiet run with neither configured never does (docs/performance.md, section 5).

log = get_logger("ibkr_resilience.script")

__all__ = ["EXIT_MEANINGS", "SIGNAL_CODES", "RunAlerts", "exit_meaning"]

EXIT_MEANINGS: dict[int, str] = {
    ExitCode.CONNECT_FAILED: "could not connect, or lost the gateway",
    ExitCode.BAD_INPUT: "bad input or configuration, nothing sent",
    ExitCode.ORDERS_FAILED: "orders rejected, unconfirmed or not placed",
    ExitCode.LIVE_ACCOUNT: "live account refused, nothing sent",
    ExitCode.READ_ONLY_API: "the gateway's API is read-only",
    ExitCode.HANGUP: "hung up (SIGHUP)",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
    ExitCode.TERMINATED: "terminated (SIGTERM)",
}
"""A few words per exit code for the alert (the full table is ``EXIT_CODES_HELP``)."""


def exit_meaning(code: int) -> str:
    """:data:`EXIT_MEANINGS`, else the code's first line in ``EXIT_CODES_HELP`` (a code
    added there is worded in the alert without a change here), else ``failed``."""
    if code in EXIT_MEANINGS:
        return EXIT_MEANINGS[code]
    found = re.search(rf"^  {code}\s+(.+)$", EXIT_CODES_HELP, re.M)
    return found.group(1).strip().rstrip(";,") if found else "failed"


SIGNAL_CODES = frozenset({ExitCode.HANGUP, ExitCode.INTERRUPTED, ExitCode.TERMINATED})
"""Exit codes of a run stopped by a signal: pinged as ``/fail``, not ``/<code>``."""

_TELEGRAM = ("IFDS_TELEGRAM_BOT_TOKEN", "IFDS_TELEGRAM_CHAT_ID", "IFDS_TELEGRAM_API_URL")
_FALLBACK = {
    "IBKR_ALERT_TIMEOUT": "the default bound is used for this run",
    "IBKR_ALERT_REPEAT_INTERVAL": "alerts are sent without de-duplication for this run",
}
"""What a run does instead when a setting that is not a channel cannot be used."""
_FIELDS = {
    "IFDS_TELEGRAM_BOT_TOKEN": "telegram_token",
    "IFDS_TELEGRAM_CHAT_ID": "telegram_chat_id",
    "IFDS_TELEGRAM_API_URL": "telegram_api_url",
    "IBKR_ALERT_TIMEOUT": "alert_timeout",
    "IBKR_ALERT_STATE_FILE": "alert_state_file",
    "IBKR_ALERT_REPEAT_INTERVAL": "alert_repeat_interval",
    "IBKR_HEALTHCHECK_URL": "healthcheck_url",
}


class RunAlerts:
    """The run-level alert and pings of one script run (see the module docstring).

    ``script``: the script's name (``submit_orders.py``); ``env``: its environment.
    Building it reads only the channel settings and never raises.
    """

    def __init__(self, script: str, env: Mapping[str, str]) -> None:
        self.script = script
        self.problems: dict[str, str] = {}
        """Channel settings that could not be used: variable -> the error (no secret)."""
        values: dict[str, Any] = {}
        for var, name in _FIELDS.items():
            try:
                value = env_value(var, env)
            except ConfigError as exc:
                self.problems[var] = str(exc)
                continue
            if value is not None:
                values[name] = value
        if any(var in self.problems for var in _TELEGRAM):
            for var in _TELEGRAM:  # never a token sent to a default URL, or half a config
                values.pop(_FIELDS[var], None)
        config = SessionConfig(**values)
        self.timeout = config.alert_timeout
        self.alert: Alert = alert_from_config(config)
        self._config = config
        self._env = env
        self.healthcheck: Healthcheck | None = None
        if config.healthcheck_url:
            from ..._notify.healthcheck import Healthcheck

            self.healthcheck = Healthcheck(config.healthcheck_url, config.alert_timeout)
        self._rid = str(uuid.uuid4())
        self._started = False

    @functools.cached_property
    def dedup(self) -> AlertDeduplicator | None:
        """The alert de-dup state, found when the run ends: finding its default path can
        log a warning (a relative ``XDG_STATE_HOME``), which must come once the run's
        logging is set up, as a JSON line in its log file like every other line."""
        repeat_ok = "IBKR_ALERT_REPEAT_INTERVAL" not in self.problems
        return dedup_from_config(
            self._config, alert_injected=False, dedup=None if repeat_ok else False, env=self._env
        )

    def start(self) -> None:
        """``<url>/start`` in the background (the run never waits for monitoring)."""
        if self.healthcheck is not None and not self._started:
            self._started = True
            self.healthcheck.start_in_background(self._rid)

    def finish(
        self,
        code: int,
        reason: str,
        summary: str,
        *,
        gateway: tuple[str, int, int] | None,
        alerted: bool,
        logging_ready: bool,
    ) -> None:
        """Alert (unless ``alerted``: the session already did) and ping for the run's end.

        ``gateway``: ``(host, port, client_id)`` when the settings named one (part of the
        de-dup key). ``logging_ready``: without configured logging, library lines would
        land on stderr as plain text, so the disabled-channel notes are left out (the
        run's one stderr line already names a bad setting).
        """
        with contextlib.suppress(Exception):  # a side channel never fails the run
            if logging_ready:
                for var, error in self.problems.items():
                    log.warning(
                        "script.alert_setting_unusable",
                        variable=var,
                        error=error,
                        action=_FALLBACK.get(var, "that channel is not used for this run"),
                    )
            if code == 0:
                self._recovered(gateway)
            elif not alerted and (logging_ready or getattr(self.alert, "enabled", True)):
                self._alert(code, reason, summary, gateway)
        with contextlib.suppress(Exception):
            self._ping(code, summary or reason)

    def _alert(
        self, code: int, reason: str, summary: str, gateway: tuple[str, int, int] | None
    ) -> None:
        from ..._notify.dedup import run_key
        from ..._notify.texts import run_failed_text

        meaning = exit_meaning(code)
        if self.dedup is None:
            self._send(run_failed_text(self.script, code, meaning, reason, None, summary))
            return
        attempted = False

        def send(text: str) -> AlertOutcome:
            nonlocal attempted
            attempted = True
            return self._send(text)

        key = run_key(self.script, code, gateway)
        try:
            self.dedup.failure(
                key,
                lambda occurrence: run_failed_text(
                    self.script, code, meaning, reason, occurrence, summary
                ),
                send,
            )
        except Exception as exc:  # fail open: never lose the alert to the de-dup layer
            log.error("ibkr.alert.dedup_failed", error_type=type(exc).__name__, error=str(exc))
            if not attempted:
                self._send(run_failed_text(self.script, code, meaning, reason, None, summary))

    def _recovered(self, gateway: tuple[str, int, int] | None) -> None:
        if self.dedup is None:
            return
        from ..._notify.texts import run_recovered_text

        self.dedup.run_succeeded(
            self.script,
            gateway,
            lambda recovery: run_recovered_text(self.script, recovery),
            self._send,
        )

    def _send(self, text: str) -> AlertOutcome:
        return deliver_alert(self.alert, text, self.timeout)

    def _ping(self, code: int, body: str) -> None:
        if self.healthcheck is None:
            return
        self.start()  # a run that failed before its start ping still pings /start first
        if code == 0:
            self.healthcheck.ping("success", body, self._rid)
        elif code in SIGNAL_CODES:
            self.healthcheck.ping("fail", body, self._rid)
        else:
            self.healthcheck.ping(int(code), body, self._rid)

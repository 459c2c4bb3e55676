"""Alerts that can never break or hang the job that sends them.

An alert fires exactly when things are already going wrong, often when the network is
too; so delivery is best-effort and hard-bounded. :func:`deliver_alert` runs any alert
callable in a daemon thread and stops waiting at the deadline, because ``requests``
timeouts do not cover DNS resolution; a daemon thread (not a ``ThreadPoolExecutor``,
whose workers are joined at interpreter exit) cannot keep the process alive either.
:class:`TelegramAlert` escapes the text for Telegram's HTML mode (a stray ``<`` or ``&``
makes the Bot API reject the message and the alert is lost) and never logs the token.
"""

from __future__ import annotations

import contextlib
import html
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import requests
import structlog

from ._config import DEFAULT_TELEGRAM_API_URL, check_setting, env_value
from ._redact import register_secret, scrub

log = structlog.get_logger("ibkr_resilience.alerts")

Alert = Callable[[str], object]
AlertOutcome = Literal["sent", "failed", "timed_out", "disabled"]

TELEGRAM_MAX_CHARS = 4096
DEFAULT_ALERT_TIMEOUT = 5.0
_TRUNCATION_MARK = "\n[truncated]"


def telegram_html(text: str, limit: int = TELEGRAM_MAX_CHARS) -> str:
    """Escape ``text`` for ``parse_mode=HTML`` and keep the result within ``limit``.

    The raw text is cut *before* escaping, at the longest prefix whose escaped form
    (plus a truncation mark) fits, so no entity such as ``&amp;`` is ever cut in half.
    """
    escaped = html.escape(text, quote=False)
    if len(escaped) <= limit:
        return escaped
    budget = limit - len(_TRUNCATION_MARK)
    used = 0
    cut = 0
    for char in text:
        size = len(html.escape(char, quote=False))
        if used + size > budget:
            break
        used += size
        cut += 1
    return html.escape(text[:cut], quote=False) + _TRUNCATION_MARK


def machine_name() -> str:
    """The host name, so an alert says which box's cron job failed."""
    try:
        return socket.gethostname() or "unknown"
    except OSError:
        return "unknown"


def script_name() -> str:
    """The running script's file name, so an alert says which job failed."""
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"


def client_id_hint(client_id: int) -> str:
    """The operator's next step when the gateway rejects the client id."""
    return (
        f"Another process probably holds client id {client_id} (error 326): a previous "
        "run that did not disconnect, or a second job using the same id."
    )


def alert_text(title: str, facts: list[tuple[str, object]], notes: list[str] | None = None) -> str:
    """Build a plain-text alert: a title line, ``key: value`` facts, then notes.

    The machine and script are always appended; the text stays raw (unescaped), the
    transport does the escaping it needs.
    """
    lines = [title]
    lines.extend(f"{key}: {value}" for key, value in facts)
    lines.append(f"Machine: {machine_name()}")
    lines.append(f"Script: {script_name()}")
    lines.extend(notes or [])
    return "\n".join(lines)


class TelegramAlert:
    """Post an alert with the Telegram Bot API ``sendMessage`` call; never raises.

    ``timeout`` is the deadline for the whole call, one 429 retry included (only when
    the ``retry_after`` it asks for fits in what is left). ``api_url`` lets self-hosted
    Bot API servers and tests stand in for the public one.
    """

    enabled = True

    def __init__(
        self,
        token: str,
        chat_id: str | int,
        api_url: str = DEFAULT_TELEGRAM_API_URL,
        timeout: float = DEFAULT_ALERT_TIMEOUT,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        register_secret(token)
        self._token = token
        self.chat_id = str(chat_id)
        self.api_url = check_setting("telegram_api_url", api_url)
        self.timeout = float(check_setting("alert_timeout", timeout))
        self._sleep = sleep
        self._clock = clock

    def __repr__(self) -> str:
        return f"TelegramAlert(chat_id={self.chat_id!r}, api_url={self.api_url!r}, token=<hidden>)"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Alert:
        """The default alert: Telegram when configured, else a no-op that says so once."""
        token = env_value("IFDS_TELEGRAM_BOT_TOKEN", env)
        chat_id = env_value("IFDS_TELEGRAM_CHAT_ID", env)
        api_url = env_value("IFDS_TELEGRAM_API_URL", env) or DEFAULT_TELEGRAM_API_URL
        timeout = env_value("IBKR_ALERT_TIMEOUT", env) or DEFAULT_ALERT_TIMEOUT
        if not token or not chat_id:
            missing = [
                name
                for name, value in (
                    ("IFDS_TELEGRAM_BOT_TOKEN", token),
                    ("IFDS_TELEGRAM_CHAT_ID", chat_id),
                )
                if not value
            ]
            return DisabledAlert(f"{' and '.join(missing)} not set")
        return cls(token, chat_id, api_url=api_url, timeout=timeout)

    def __call__(self, text: str) -> bool:
        try:
            return self._send(text)
        except Exception as exc:  # never raise: an alert must not break the job
            log.error(
                "ibkr.alert.telegram.failed",
                error_type=type(exc).__name__,
                error=scrub(str(exc)),
            )
            return False

    def _send(self, text: str) -> bool:
        deadline = self._clock() + self.timeout
        url = f"{self.api_url}/bot{self._token}/sendMessage"
        payload = {
            "chat_id": self.chat_id,
            "text": telegram_html(text),
            "parse_mode": "HTML",
            "disable_web_page_preview": True,
        }
        for attempt in (1, 2):
            remaining = deadline - self._clock()
            if remaining <= 0:
                log.error("ibkr.alert.telegram.failed", error="deadline passed", attempt=attempt)
                return False
            try:
                response = requests.post(url, json=payload, timeout=(remaining, remaining))
            except requests.RequestException as exc:
                # str(exc) holds the URL, hence the token: scrub before logging.
                log.error(
                    "ibkr.alert.telegram.failed",
                    attempt=attempt,
                    error_type=type(exc).__name__,
                    error=scrub(str(exc)),
                )
                return False
            if response.status_code == 200:
                log.debug("ibkr.alert.telegram.sent", attempt=attempt)
                return True
            body = _json_or_empty(response)
            description = scrub(str(body.get("description", response.reason or "")))
            retry_after = _retry_after(body)
            if (
                response.status_code == 429
                and attempt == 1
                and retry_after is not None
                and retry_after <= deadline - self._clock()
            ):
                log.warning("ibkr.alert.telegram.rate_limited", retry_after_s=retry_after)
                self._sleep(retry_after)
                continue
            log.error(
                "ibkr.alert.telegram.failed",
                attempt=attempt,
                status=response.status_code,
                description=description,
                retry_after_s=retry_after,
            )
            return False
        return False  # pragma: no cover  (the loop always returns)


class DisabledAlert:
    """Stands in when Telegram is not configured: logs that once, sends nothing."""

    enabled = False

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self._logged = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DisabledAlert({self.reason!r})"

    def __call__(self, text: str) -> bool:
        with self._lock:
            first, self._logged = not self._logged, True
        if first:
            log.warning("ibkr.alert.disabled", reason=self.reason)
        return False


def _json_or_empty(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _retry_after(body: Mapping[str, Any]) -> float | None:
    parameters = body.get("parameters")
    if not isinstance(parameters, dict):
        return None
    value = parameters.get("retry_after")
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return float(value)


@dataclass(frozen=True)
class Bounded:
    """What :func:`run_bounded` saw: still running at the deadline, raised, or returned."""

    timed_out: bool
    value: object = None
    error: BaseException | None = None
    elapsed_ms: float = 0.0


def run_bounded(call: Callable[[], object], timeout: float, name: str) -> Bounded:
    """Run ``call()`` in a daemon thread and wait at most ``timeout`` seconds for it.

    The one hard bound shared by alerts and healthcheck pings: ``requests`` timeouts do
    not cover DNS resolution, and a daemon thread (unlike a ``ThreadPoolExecutor``
    worker) is not joined at interpreter exit, so a hung call can delay neither the job
    nor its exit. Nothing ``call`` raises propagates.

    Timed out means the call had not ended ``timeout`` seconds after the start, judged
    by when it ended, not by when this thread got the CPU back: a call cut by its own
    timer just after the deadline (``requests``' read timeout on a silent server) is a
    time-out whether or not a loaded machine woke this thread before that.
    """
    box: dict[str, object] = {}
    ended = threading.Event()

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:
            box["error"] = exc
        box["ended_at"] = time.monotonic()
        ended.set()

    started = time.monotonic()
    worker = threading.Thread(target=run, name=name, daemon=True)
    worker.start()
    finished = ended.wait(timeout)
    elapsed_ms = round((time.monotonic() - started) * 1000, 1)
    ended_at = box.get("ended_at")
    if not finished or not isinstance(ended_at, float) or ended_at - started > timeout:
        return Bounded(timed_out=True, elapsed_ms=elapsed_ms)
    error = box.get("error")
    return Bounded(
        timed_out=False,
        value=box.get("value"),
        error=error if isinstance(error, BaseException) else None,
        elapsed_ms=elapsed_ms,
    )


def deliver_alert(alert: Alert, text: str, timeout: float) -> AlertOutcome:
    """Run ``alert(text)`` in a daemon thread and wait at most ``timeout`` seconds.

    Whatever the alert does (raise, hang in DNS, return ``False``), the caller gets an
    outcome back within the deadline and nothing propagates; the outcome is logged.
    """
    if not getattr(alert, "enabled", True):
        with contextlib.suppress(Exception):  # a disabled alert only logs
            alert(text)
        return "disabled"
    result = run_bounded(lambda: alert(text), timeout, "ibkr-alert")
    elapsed_ms = result.elapsed_ms
    outcome: AlertOutcome
    if result.timed_out:
        outcome = "timed_out"
        log.error("ibkr.alert.timed_out", timeout_s=timeout, elapsed_ms=elapsed_ms)
    elif result.error is not None:
        outcome = "failed"
        error = result.error
        log.error(
            "ibkr.alert.failed",
            error_type=type(error).__name__,
            error=scrub(str(error)),
            elapsed_ms=elapsed_ms,
        )
    elif result.value is False:
        outcome = "failed"
        log.error("ibkr.alert.failed", error="alert reported failure", elapsed_ms=elapsed_ms)
    else:
        outcome = "sent"
        log.info("ibkr.alert.sent", elapsed_ms=elapsed_ms)
    return outcome

"""Telegram, the default alert channel: the Bot API ``sendMessage`` call, escaped and bounded.

The text is escaped for Telegram's HTML mode (a stray ``<`` or ``&`` makes the Bot API
reject the message and the alert is lost) and cut to the 4096-character limit; one 429
answer is retried after its ``retry_after`` when that fits the deadline. The token is
part of the URL, so it is registered with the log redactor and never logged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from .._core.config import DEFAULT_ALERT_TIMEOUT, DEFAULT_TELEGRAM_API_URL, check_setting, env_value
from .._core.log import get_logger
from .._core.redact import register_secret, scrub
from .delivery import Alert
from .http import HttpPost, HttpResponse, requests_post

log = get_logger("ibkr_resilience.alerts")

TELEGRAM_MAX_CHARS = 4096
_TRUNCATION_MARK = "\n[truncated]"


def telegram_html(text: str, limit: int = TELEGRAM_MAX_CHARS) -> str:
    """Escape ``text`` for ``parse_mode=HTML`` and keep the result within ``limit``.

    The raw text is cut *before* escaping, at the longest prefix whose escaped form
    (plus a truncation mark) fits, so no entity such as ``&amp;`` is ever cut in half.
    """
    import html  # with html.entities, a cost every run would pay for a rare message

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
        post: HttpPost = requests_post,
    ) -> None:
        register_secret(token)
        self._token = token
        self.chat_id = str(chat_id)
        self.api_url = check_setting("telegram_api_url", api_url)
        self.timeout = float(check_setting("alert_timeout", timeout))
        self._sleep = sleep
        self._clock = clock
        self._post = post

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
                response = self._post(url, json=payload, timeout=remaining)
            except Exception as exc:
                # str(exc) holds the URL, hence the token: scrub before logging.
                log.error(
                    "ibkr.alert.telegram.failed",
                    attempt=attempt,
                    error_type=type(exc).__name__,
                    error=scrub(str(exc)),
                )
                return False
            body = _json_object(response)
            # Delivered only when the Bot API says so: a proxy or captive portal can
            # answer 200 with an HTML page, and the message is then lost.
            if response.status == 200 and body.get("ok") is True:
                log.debug("ibkr.alert.telegram.sent", attempt=attempt)
                return True
            description = scrub(str(body.get("description", response.reason)))
            retry_after = _retry_after(body)
            if (
                response.status == 429
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
                status=response.status,
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


def _json_object(response: HttpResponse) -> dict[str, Any]:
    body = response.json()
    return body if isinstance(body, dict) else {}


def _retry_after(body: Mapping[str, Any]) -> float | None:
    parameters = body.get("parameters")
    if not isinstance(parameters, dict):
        return None
    value = parameters.get("retry_after")
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return float(value)

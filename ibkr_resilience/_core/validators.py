"""The settings' validators: one small parser per kind of value, and what each expects.

Each parser takes the raw value (a string from the environment, or a Python value from
code) and returns it parsed, or raises ``ValueError``/``TypeError``; the settings module
turns that into one :class:`~ibkr_resilience.errors.ConfigError` line naming the
variable and quoting what :data:`VALIDATORS` says was expected.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("json", "console")
CLIENT_LIBRARIES = ("ib_insync", "ib_async")
"""The client libraries the package runs on, in the order it looks for them."""

# The shapes the Bot API accepts: a token is ``<bot id>:<secret>``, a chat is a numeric id
# (negative for groups and channels) or a public ``@username``. Checked up front: a typo
# here would otherwise surface only when the alert is needed, as a lost alert.
_TELEGRAM_TOKEN = re.compile(r"\d+:[A-Za-z0-9_-]+")
_CHAT_ID = re.compile(r"-?\d+|@[A-Za-z][A-Za-z0-9_]*")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _integer(low: int, high: int) -> Callable[[object], int]:
    def parse(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise TypeError
        number = value if isinstance(value, int) else int(value.strip())
        if not low <= number <= high:
            raise ValueError
        return number

    return parse


def _seconds(*, zero_ok: bool) -> Callable[[object], float]:
    def parse(value: object) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise TypeError
        real = float(value.strip()) if isinstance(value, str) else float(value)
        if not math.isfinite(real) or real < 0 or (real == 0 and not zero_ok):
            raise ValueError
        return real if isinstance(value, str) else value

    return parse


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else ""
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError


def _one_of(choices: tuple[str, ...], normalise: Callable[[str], str]) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if isinstance(value, str) and normalise(value.strip()) in choices:
            return normalise(value.strip())
        raise ValueError

    return parse


def _host(value: object) -> str:
    if isinstance(value, str) and value.strip() and not any(c.isspace() for c in value.strip()):
        return value.strip()
    raise ValueError


def _url(value: object) -> str:
    text = value.strip() if isinstance(value, str) else ""
    parts = urlsplit(text)
    parts.port  # noqa: B018  (raises ValueError on a bad port)
    if parts.scheme in ("http", "https") and parts.hostname and not any(c.isspace() for c in text):
        return text.rstrip("/")
    raise ValueError


def _path(value: object) -> str:
    if isinstance(value, str | os.PathLike) and str(value).strip():
        # Crontab variable lines do not expand "~"; do it here.
        return os.path.expanduser(str(value).strip())
    raise ValueError


def _matching(pattern: re.Pattern[str]) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if isinstance(value, str) and pattern.fullmatch(value.strip()):
            return value.strip()
        raise ValueError

    return parse


def _text(value: object) -> str:
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise ValueError


_URL_EXPECTED = "an http:// or https:// URL with a host"
VALIDATORS: dict[str, tuple[Callable[[object], Any], str]] = {
    "port": (_integer(1, 65535), "an integer port between 1 and 65535"),
    "client_id": (_integer(0, 2**31 - 1), "an integer client id between 0 and 2147483647"),
    "count": (_integer(1, 10**9), "an integer >= 1"),
    "window": (_integer(1, 100), "an integer from 1 to 100 (orders in flight)"),
    "positive": (_seconds(zero_ok=False), "a finite number of seconds > 0"),
    "non_negative": (_seconds(zero_ok=True), "a finite number of seconds >= 0"),
    "amount": (_seconds(zero_ok=False), "a finite amount > 0"),
    "bool": (_boolean, "one of 1/0, true/false, yes/no, on/off"),
    "log_format": (_one_of(LOG_FORMATS, str.lower), "json or console"),
    "log_level": (_one_of(LOG_LEVELS, str.upper), "one of " + ", ".join(LOG_LEVELS)),
    "host": (_host, "a host name or IP address without spaces"),
    "url": (_url, _URL_EXPECTED),
    "secret_url": (_url, _URL_EXPECTED),
    "path": (_path, "a non-empty file path"),
    "telegram_token": (
        _matching(_TELEGRAM_TOKEN),
        "a Bot API token of the form <digits>:<letters, digits, _ or ->",
    ),
    "chat_id": (
        _matching(_CHAT_ID),
        "a numeric chat id (e.g. -1001234567890) or an @channel name",
    ),
    "text": (_text, "a non-empty string"),
    "secret": (_text, "a non-empty string"),
    "client_library": (_one_of(CLIENT_LIBRARIES, str.lower), " or ".join(CLIENT_LIBRARIES)),
}
"""Kind -> (parser, what the error message says was expected)."""

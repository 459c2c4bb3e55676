"""Keep the Telegram bot token out of every log line.

The token is part of the Bot API URL, so it leaks through ``requests`` exception texts,
urllib3's DEBUG lines and rendered tracebacks. Rather than trusting each call site, one
structlog processor scrubs every string of every event (ours and ib_insync's/urllib3's
stdlib records alike) just before rendering. Known token values are registered at
runtime (from the environment and by every :class:`TelegramAlert`) on top of the
generic ``bot<digits>:<secret>`` pattern, which also catches tokens we were never told.

The scrub runs on the *rendered* line (one string per line, whatever its fields), so a
secret is registered with the spellings a renderer gives it: as is, JSON-escaped (the
JSON lines) and ``repr``-escaped (the console renderer's values).

That scrub only guards the handlers :func:`configure_logging` installs. urllib3 puts the
Bot API URL in its own DEBUG lines, which also reach an application's handlers
(``logging.basicConfig``); :func:`scrub_records_of` scrubs those records themselves.
"""

from __future__ import annotations

import json
import logging
import re
import threading

REDACTED = "[REDACTED]"
_TOKEN_PATTERN = re.compile(r"bot\d+:[\w-]+")
# A bare token (without the "bot" prefix), e.g. when an error message quotes it.
_BARE_TOKEN_PATTERN = re.compile(r"\b\d{5,}:[\w-]{20,}")

_lock = threading.Lock()
_secrets: set[str] = set()
# Longest first, rebuilt on registration: scrub() runs for every log
# line, so it reads this tuple (replaced atomically) instead of locking and sorting.
_ordered: tuple[str, ...] = ()


def register_secret(value: str | None) -> None:
    """Add a literal value that must never be logged (ignored when empty or tiny)."""
    global _ordered
    if value and len(value) >= 4:
        if value in _secrets:  # every session registers the same few values again
            return
        spellings = {value, json.dumps(value)[1:-1], repr(value)[1:-1]}
        with _lock:
            _secrets.update(spellings)
            _ordered = tuple(sorted(_secrets, key=len, reverse=True))


def scrub(text: str) -> str:
    """Return ``text`` with every known secret and token-shaped string replaced."""
    for secret in _ordered:
        if secret in text:
            text = text.replace(secret, REDACTED)
    if ":" not in text:
        return text  # both token patterns need the colon between bot id and secret
    text = _TOKEN_PATTERN.sub("bot" + REDACTED, text)
    return _BARE_TOKEN_PATTERN.sub(REDACTED, text)


URLLIB3_LOGGERS = ("urllib3", "urllib3.connectionpool", "urllib3.poolmanager", "urllib3.util.retry")
"""The loggers whose lines quote the URL of a request (``"POST /bot<token>/sendMessage"``)."""


class _ScrubRecords(logging.Filter):
    """Replace a record's message by its scrubbed text when it carries a secret.

    A logger's filters run once per record, before any handler sees it, so every
    handler (ours, the application's, pytest's) gets the scrubbed record. They run only
    for records the logger's level lets through: nothing is paid at INFO.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        clean = scrub(text)
        if clean != text:
            record.msg, record.args = clean, None
        return True


_record_scrubber = _ScrubRecords()


def scrub_records_of(names: tuple[str, ...] = URLLIB3_LOGGERS) -> None:
    """Scrub the records of the loggers ``names`` (once each; idempotent)."""
    for name in names:
        logger = logging.getLogger(name)
        if _record_scrubber not in logger.filters:
            logger.addFilter(_record_scrubber)

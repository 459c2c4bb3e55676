"""Keep the Telegram bot token out of every log line.

The token is part of the Bot API URL, so it leaks through ``requests`` exception texts,
urllib3's DEBUG lines and rendered tracebacks. Rather than trusting each call site, one
structlog processor scrubs every string of every event (ours and ib_insync's/urllib3's
stdlib records alike) just before rendering. Known token values are registered at
runtime (from the environment and by every :class:`TelegramAlert`) on top of the
generic ``bot<digits>:<secret>`` pattern, which also catches tokens we were never told.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any

REDACTED = "[REDACTED]"
_TOKEN_PATTERN = re.compile(r"bot\d+:[\w-]+")
# A bare token (without the "bot" prefix), e.g. when an error message quotes it.
_BARE_TOKEN_PATTERN = re.compile(r"\b\d{5,}:[\w-]{20,}")

_lock = threading.Lock()
_secrets: set[str] = set()
# Longest first, rebuilt on registration: scrub() runs for every string of every log
# line, so it reads this tuple (replaced atomically) instead of locking and sorting.
_ordered: tuple[str, ...] = ()


def register_secret(value: str | None) -> None:
    """Add a literal value that must never be logged (ignored when empty or tiny)."""
    global _ordered
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)
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


def scrub_value(value: Any) -> Any:
    """Scrub strings anywhere inside nested dicts, lists and tuples."""
    if isinstance(value, str):
        return scrub(value)
    # Numbers before the Mapping check: most fields of a line are numbers, and an
    # isinstance against an ABC costs several times one against concrete types.
    if isinstance(value, int | float | bool) or value is None:
        return value
    if isinstance(value, Mapping):
        return {scrub_value(k): scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub_value(v) for v in value)
    # Anything else is rendered with str() by the JSON/console renderers anyway;
    # render it here so its text is scrubbed too.
    return scrub(str(value))


def redact_secrets(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Any:
    """The one structlog processor that removes bot tokens from an event dict."""
    for key in list(event_dict.keys()):
        if key.startswith("_"):
            # structlog/ProcessorFormatter internals (the LogRecord), never rendered.
            continue
        event_dict[key] = scrub_value(event_dict[key])
    return event_dict

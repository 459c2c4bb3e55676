"""The package's loggers: structlog when the application configured it, stdlib otherwise.

Python's rule for libraries: emit through the stdlib ``logging`` module and configure
nothing, so a program that never set up logging sees at most WARNING and above on
stderr (``logging.lastResort``), and never a line on stdout. structlog, left
unconfigured, prints every line to *stdout* instead, which corrupts a script whose
stdout is data. So every module of this package logs through :func:`get_logger`:

* once the application has configured structlog (``configure_logging()``, or its own
  ``structlog.configure``), lines go through structlog as they always did;
* before that, each line becomes one stdlib record on the logger of the same name,
  ``event key=value ...``, scrubbed of secrets.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

from .redact import scrub

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


class LibraryLogger:
    """A structlog-style logger (``bind``, ``info(event, **fields)``...) that obeys the rule."""

    __slots__ = ("_context", "_name")

    def __init__(self, name: str, context: dict[str, Any] | None = None) -> None:
        self._name = name
        self._context = context or {}

    def bind(self, **fields: Any) -> LibraryLogger:
        """A logger that adds ``fields`` to every line."""
        return LibraryLogger(self._name, {**self._context, **fields})

    def debug(self, event: str, **fields: Any) -> None:
        self._log("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log("error", event, fields)

    def critical(self, event: str, **fields: Any) -> None:
        self._log("critical", event, fields)

    def _log(self, method: str, event: str, fields: dict[str, Any]) -> None:
        if structlog.is_configured():
            logger = structlog.get_logger(self._name)
            if self._context:
                logger = logger.bind(**self._context)
            getattr(logger, method)(event, **fields)
            return
        std = logging.getLogger(self._name)
        level = _LEVELS[method]
        if not std.isEnabledFor(level):
            return
        exc_info = fields.pop("exc_info", None)
        pairs = "".join(f" {k}={v!r}" for k, v in {**self._context, **fields}.items())
        std.log(level, "%s", scrub(event + pairs), exc_info=exc_info)


def get_logger(name: str) -> LibraryLogger:
    """The logger for module ``name`` (``ibkr_resilience.connect``...)."""
    return LibraryLogger(name)

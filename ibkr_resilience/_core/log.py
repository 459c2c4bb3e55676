"""The package's loggers: structlog when the application configured it, stdlib otherwise.

Python's rule for libraries: emit through the stdlib ``logging`` module and configure
nothing, so a program that never set up logging sees at most WARNING and above on
stderr (``logging.lastResort``), and never a line on stdout. structlog, left
unconfigured, prints every line to *stdout* instead, which corrupts a script whose
stdout is data. So every module of this package logs through :func:`get_logger`:

* once :func:`~ibkr_resilience.configure_logging` has configured logging, each line is
  one stdlib record whose fields ride along on the record (:data:`FIELDS`); the
  formatter it installed turns them into keys of the JSON line. That is the path of
  ib_insync's own lines, and it skips building a structlog logger per line (about a
  third of a line's cost);
* when the application configured structlog itself (``structlog.configure``), lines go
  through its structlog processors;
* before either, each line becomes one stdlib record on the logger of the same name,
  ``event key=value ...``, scrubbed of secrets.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

from .redact import scrub

FIELDS = "ibkr_fields"
"""The LogRecord attribute that carries a line's fields on the ``configure_logging`` path."""

# The processors list configure_logging() handed to structlog.configure, and a copy of
# its items: while that list is the configured one and still holds them, the formatter
# configure_logging installed reads FIELDS off the records. The copy matters:
# structlog.testing.capture_logs() swaps the items of the same list object.
_routed: list[tuple[list[Any], list[Any]]] = []


def route_through_stdlib(processors: list[Any]) -> None:
    """Send the package's lines as stdlib records while ``processors`` is structlog's
    configured chain, unchanged (called by ``configure_logging``, which installs the
    formatter that reads them)."""
    _routed[:] = [(processors, list(processors))]


def _routed_to_stdlib() -> bool:
    if not _routed:
        return False
    configured = structlog.get_config()["processors"]
    processors, items = _routed[0]
    return configured is processors and configured == items


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
            if _routed_to_stdlib():
                self._to_stdlib(_LEVELS[method], event, fields)
                return
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

    def _to_stdlib(self, level: int, event: str, fields: dict[str, Any]) -> None:
        """One record, its fields on :data:`FIELDS` (the ``configure_logging`` path)."""
        std = logging.getLogger(self._name)
        if not std.isEnabledFor(level):
            return
        exc_info = fields.pop("exc_info", None)
        if self._context:
            fields = {**self._context, **fields}
        std.log(level, event, exc_info=exc_info, extra={FIELDS: fields})


def get_logger(name: str) -> LibraryLogger:
    """The logger for module ``name`` (``ibkr_resilience.connect``...)."""
    return LibraryLogger(name)

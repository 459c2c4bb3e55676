"""The one place where logging is configured, called by the scripts, never on import.

A library that configures logging on import fights its host application; so the
package only *emits* events and :func:`configure_logging` wires them up. It routes
structlog and the stdlib (``ib_insync.*``, ``urllib3``) through the same
``ProcessorFormatter`` so that one run produces one homogeneous stream of JSON lines a
log viewer can index: ``timestamp`` (RFC 3339, UTC, ``Z``), ``level``, ``logger``,



"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import sys
import uuid
import weakref
from collections.abc import Mapping, MutableMapping
from typing import IO, Any

import structlog
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import Processor

from ..errors import ConfigError
from . import twslevels
from .config import check_setting, env_value
from .identity import script_name
from .log import FIELDS, route_through_stdlib
from .redact import register_secret, scrub

_HANDLER_MARK = "_ibkr_resilience_handler"
_FIRST_KEYS = ("timestamp", "level", "logger", "event", "run_id", "script")


class _RunContext:
    """Stamp every line, ours and foreign, with the run's id and script name.

    A processor rather than contextvars: contextvars do not follow the daemon threads
    that deliver alerts, and every line of the run must carry the same ids.
    """

    def __init__(self, run_id: str, script: str) -> None:
        self.run_id = run_id
        self.script = script

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event_dict.setdefault("run_id", self.run_id)
        event_dict.setdefault("script", self.script)
        return event_dict


def _order_keys(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Put the keys a human scans first at the start of each JSON line."""
    ordered = {key: event_dict.pop(key) for key in _FIRST_KEYS if key in event_dict}
    ordered.update(event_dict)
    return ordered


def _library_fields(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Make the fields this package's lines carry on their record keys of the line.

    The record in ``_record`` is the formatter's own copy, so taking the attribute off
    it (for ExtraAdder not to copy it as one nested key) leaves the original alone.
    """
    record = event_dict.get("_record")
    fields = getattr(record, FIELDS, None)
    if fields is not None:
        delattr(record, FIELDS)
        event_dict.update(fields)
    return event_dict


def _scrub_line(logger: Any, method_name: str, line: Any) -> str:
    """Remove secrets from the rendered line (one pass over one string, whatever the
    fields: tracebacks, nested values and foreign records included)."""
    return scrub(str(line))


def _drop_formatter_leftovers(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Drop ``message``/``asctime`` that another handler's Formatter left on a LogRecord.

    ``logging.Formatter.format`` stores them on the record itself; when a second handler
    (pytest's capture, an application's own) formatted the record first, ExtraAdder would
    copy them as if they were ``extra=`` fields, duplicating ``event``.
    """
    event_dict.pop("message", None)
    event_dict.pop("asctime", None)
    return event_dict


def configure_logging(
    format: str | None = None,
    level: str | None = None,
    file: str | None = None,
    script: str | None = None,
    run_id: str | None = None,
    *,
    stream: IO[str] | None = None,
    stream_level: str | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Configure structlog and the stdlib root logger; return the run id.

    ``None`` arguments come from ``IBKR_LOG_FORMAT``, ``IBKR_LOG_LEVEL``,
    ``IBKR_LOG_FILE`` and ``IBKR_LOG_STDERR_LEVEL``, else the defaults (console when
    ``stream`` is a terminal, JSON otherwise; INFO; no file). With a log file, the
    stream (stderr: what cron mails) gets only WARNING and above unless
    ``stream_level`` says otherwise; the file gets everything at ``level``. The file is
    reopened when logrotate moves it (``create`` mode) and keeps appending after a
    ``copytruncate``. Calling it again replaces the previous setup instead of stacking
    handlers, so a script and a test can both call it.
    """
    environ = os.environ if env is None else env
    out: IO[str] = sys.stderr if stream is None else stream
    fmt = check_setting("log_format", format) if format else env_value("IBKR_LOG_FORMAT", environ)
    if fmt is None:
        isatty = getattr(out, "isatty", None)
        fmt = "console" if callable(isatty) and isatty() else "json"
    lvl = check_setting("log_level", level) if level else env_value("IBKR_LOG_LEVEL", environ)
    lvl = lvl or "INFO"
    path = file or env_value("IBKR_LOG_FILE", environ)
    stream_lvl = (
        check_setting("log_stderr_level", stream_level)
        if stream_level
        else env_value("IBKR_LOG_STDERR_LEVEL", environ)
    ) or ("WARNING" if path else None)
    # Opened before anything is changed: a path that cannot be appended to (a missing
    # directory, a directory, no permission) is a configuration error like any other
    # bad setting, one line naming the setting, and leaves the previous setup intact.
    to_file = _open_log_file(path, "file" if file else "IBKR_LOG_FILE") if path else None
    run = run_id or uuid.uuid4().hex
    register_secret(environ.get("IFDS_TELEGRAM_BOT_TOKEN"))

    shared: list[Processor] = [
        _library_fields,
        structlog.contextvars.merge_contextvars,
        _RunContext(run, script or script_name()),
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        # stdlib ``logger.info(msg, extra={...})`` fields become keys of the line.
        structlog.stdlib.ExtraAdder(),
        _drop_formatter_leftovers,
    ]

    processors: list[Processor] = [
        structlog.stdlib.filter_by_level,
        *shared,
        structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
    ]
    structlog.configure(
        processors=processors,
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: module-level loggers must follow a later reconfiguration.
        cache_logger_on_first_use=False,
    )
    route_through_stdlib(processors)

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        if isinstance(old, logging.FileHandler):
            old.close()

    console = _StreamHandler(out)
    if stream_lvl is not None:  # else the loggers' levels decide, as for the file
        console.setLevel(stream_lvl)
    console_formatter = _formatter(fmt, shared, colors=fmt == "console" and _isatty(out))
    console.setFormatter(console_formatter)
    setattr(console, _HANDLER_MARK, True)
    root.addHandler(console)
    if to_file is not None:
        # Both sinks JSON: one formatter, so a line both sinks take is rendered once.
        same = fmt == "json"
        to_file.setFormatter(
            console_formatter if same else _formatter("json", shared, colors=False)
        )
        setattr(to_file, _HANDLER_MARK, True)
        root.addHandler(to_file)
    root.setLevel(lvl)
    twslevels.install()
    return run


class _ScrubbedErrors(logging.Handler):
    """A failed write (a full disk, a closed pipe) reported as one scrubbed line.

    The stdlib's ``handleError`` prints "--- Logging error ---" with the record's raw
    message and arguments, which are not scrubbed yet (urllib3's DEBUG line carries the
    Bot API path with the token); and a traceback per line would bury cron mail.
    """

    _lost = 0

    def handleError(self, record: logging.LogRecord) -> None:
        if not logging.raiseExceptions:
            return
        self._lost += 1
        if self._lost > 1:
            return  # one line per sink: a full disk must not fill cron mail line by line
        error = sys.exc_info()[1]
        with contextlib.suppress(Exception):  # stderr itself gone: nothing left to tell
            sys.stderr.write(
                scrub(
                    f"ibkr_resilience: log line lost: {type(error).__name__}: {error} "
                    "(further lines this sink loses are not reported)"
                )
                + "\n"
            )


class _StreamHandler(_ScrubbedErrors, logging.StreamHandler):  # type: ignore[type-arg]
    pass


class _FileHandler(_ScrubbedErrors, logging.handlers.WatchedFileHandler):
    pass


def _open_log_file(path: str, label: str) -> logging.FileHandler:
    try:
        return _FileHandler(path, mode="a", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"{label}={path!r}: cannot open for appending ({exc.strerror or exc})"
        ) from None


def _isatty(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(callable(isatty) and isatty())


class _RenderOnce(structlog.stdlib.ProcessorFormatter):
    """A ``ProcessorFormatter`` that renders a record once for all the sinks sharing it.

    The root logger hands one ``LogRecord`` to each handler in turn; a stderr sink and a
    file sink with the same format would each run the processors and the JSON renderer
    (and stamp their own timestamp). The last record and its line are kept as one tuple,
    so a thread reading it sees a consistent pair; each handler still applies its own
    level, and the line is the redacted one.
    """

    _last: tuple[weakref.ref[logging.LogRecord], str] | None = None

    def format(self, record: logging.LogRecord) -> str:
        last = self._last
        if last is not None and last[0]() is record:
            return last[1]
        line = super().format(record)
        # A weak reference: a record with exc_info must not keep its frames alive.
        self._last = (weakref.ref(record), line)
        return line


def _formatter(fmt: str, shared: list[Processor], *, colors: bool) -> _RenderOnce:
    renderer: Processor
    exceptions: Processor
    if fmt == "console":
        # Render the traceback to text first so that redaction sees it.
        exceptions = structlog.processors.format_exc_info
        renderer = structlog.dev.ConsoleRenderer(colors=colors)
    else:
        # show_locals=False: a frame local may hold the bot token.
        exceptions = structlog.processors.ExceptionRenderer(
            ExceptionDictTransformer(show_locals=False)
        )
        renderer = structlog.processors.JSONRenderer()
    return _RenderOnce(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            exceptions,
            _order_keys,
            renderer,
            # Last: whatever the renderer wrote (an exception's text, a nested value,
            # a foreign library's message) is in the one string scrubbed here.
            _scrub_line,
        ],
    )

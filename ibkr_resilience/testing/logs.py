"""The package's JSON log lines, captured as dicts: what a log viewer would see.

    with JsonLogCapture() as logs:
        with ibkr_session(...):
            ...
    assert logs.events("ibkr.connect.success")

Capture goes through :func:`ibkr_resilience.configure_logging` (so lines are rendered
exactly as in production, ib_insync's records included), and the previous logging setup
is restored on exit.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections.abc import Iterator
from typing import Any, Self

import structlog

from .._core.logconfig import configure_logging


def read_json_lines(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file (a log or a journal); a torn last line is skipped."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return []
    return parse_json_lines(text)


def parse_json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` that is a JSON object; others (a line being written) are skipped."""
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


@contextlib.contextmanager
def restored_logging() -> Iterator[None]:
    """Undo at the block's end what was done to logging inside it (``configure_logging``
    included): root handlers added are removed and closed, the root level is restored,
    structlog is reset to its defaults."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)
        structlog.reset_defaults()


class JsonLogCapture:
    """Configure JSON logging into memory for the ``with`` block; restore the old setup after."""

    def __init__(self, level: str = "DEBUG") -> None:
        self.level = level
        self.stream = io.StringIO()
        self._restore = contextlib.ExitStack()

    def __enter__(self) -> Self:
        self._restore.enter_context(restored_logging())
        configure_logging(format="json", level=self.level, stream=self.stream, env={})
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._restore.close()

    @property
    def text(self) -> str:
        """Everything written so far, as text."""
        return self.stream.getvalue()

    @property
    def records(self) -> list[dict[str, Any]]:
        """Every line written so far, parsed."""
        return parse_json_lines(self.text)

    def events(self, name: str) -> list[dict[str, Any]]:
        """The lines whose ``event`` is ``name``."""
        return [r for r in self.records if r.get("event") == name]

"""Test kit for people who test their own IB cron jobs (and for this project's own tests).

* :class:`FakeGateway` (re-exported from :mod:`ibkr_resilience.simulator`): a simulated
  IB Gateway on 127.0.0.1 for the real ib_insync client;
* :class:`RecordingAlert`: an ``alert=`` hook that records texts;
* :class:`BotApi` / :class:`HttpServer` / :class:`BlackHole` / :func:`closed_port_url`:
  loopback stand-ins for the Telegram Bot API and healthchecks.io;
* :class:`FakeTime`: an injectable clock and sleep;
* :class:`JsonLogCapture` / :func:`read_json_lines`: the JSON log lines as dicts;
  :func:`restored_logging`: undo a test's logging setup.

pytest fixtures: ``pytest_plugins = ["ibkr_resilience.testing.pytest_plugin"]``.
"""

from __future__ import annotations

from ..simulator import FakeGateway
from .fakes import FakeTime, RecordingAlert
from .http import BlackHole, BotApi, HttpServer, Request, closed_port_url
from .logs import JsonLogCapture, parse_json_lines, read_json_lines, restored_logging

__all__ = [
    "BlackHole",
    "BotApi",
    "FakeGateway",
    "FakeTime",
    "HttpServer",
    "JsonLogCapture",
    "RecordingAlert",
    "Request",
    "closed_port_url",
    "parse_json_lines",
    "read_json_lines",
    "restored_logging",
]

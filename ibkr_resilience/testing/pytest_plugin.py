"""pytest fixtures for testing your own cron jobs against the package's stand-ins.

Enable with ``pytest_plugins = ["ibkr_resilience.testing.pytest_plugin"]`` in your
``conftest.py``. Fixtures: ``fake_gateway`` (a running simulated IB Gateway on
127.0.0.1, see ``docs/simulator.md``), ``bot_api`` (a Telegram Bot API stand-in),
``recording_alert`` and ``json_logs``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..simulator.pytest_plugin import fake_gateway
from .fakes import RecordingAlert
from .http import BotApi
from .logs import JsonLogCapture

__all__ = ["bot_api", "fake_gateway", "json_logs", "recording_alert"]


@pytest.fixture
def bot_api() -> Iterator[BotApi]:
    """A Telegram Bot API stand-in on 127.0.0.1: point ``IFDS_TELEGRAM_API_URL`` at ``.url``."""
    with BotApi() as api:
        yield api


@pytest.fixture
def recording_alert() -> RecordingAlert:
    """An alert hook that records its texts (pass it as ``alert=``)."""
    return RecordingAlert()


@pytest.fixture
def json_logs() -> Iterator[JsonLogCapture]:
    """The package's JSON log lines during the test, as dicts (``json_logs.events(name)``)."""
    with JsonLogCapture() as capture:
        yield capture

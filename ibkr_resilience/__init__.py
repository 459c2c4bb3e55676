"""Resilient IB Gateway / TWS sessions for unattended trading scripts.

``with ibkr_session(client_id=10) as ib:`` (``async with`` inside a running event loop)
yields a connected, fully synced ``IB`` and always disconnects; see
``docs/configuration.md`` and ``docs/logging.md``. Nothing here configures logging on
import: scripts call :func:`configure_logging`.
"""

from __future__ import annotations

from ._core.config import (
    DEFAULT_CLIENT_ID,
    GATEWAY_LIVE_PORT,
    GATEWAY_PAPER_PORT,
    LIVE_PORT,
    PAPER_PORT,
    SessionConfig,
)
from ._core.logconfig import configure_logging
from ._legacy.connection import connect, disconnect, get_account
from ._notify.telegram import TelegramAlert
from ._session.session import ibkr_session
from .errors import ConfigError, ConnectionFailed, LiveAccountRefused, RunningEventLoopError

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_CLIENT_ID",
    "GATEWAY_LIVE_PORT",
    "GATEWAY_PAPER_PORT",
    "LIVE_PORT",
    "PAPER_PORT",
    "ConfigError",
    "ConnectionFailed",
    "LiveAccountRefused",
    "RunningEventLoopError",
    "SessionConfig",
    "TelegramAlert",
    "__version__",
    "configure_logging",
    "connect",
    "disconnect",
    "get_account",
    "ibkr_session",
]

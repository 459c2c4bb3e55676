"""Resilient IB Gateway / TWS sessions for unattended trading scripts.

``with ibkr_session(client_id=10) as ib:`` (``async with`` inside a running event loop)
yields a connected, fully synced ``IB`` and always disconnects; see
``docs/configuration.md`` and ``docs/logging.md``. Nothing here configures logging on
import: scripts call :func:`configure_logging`.

The names below load on first use (PEP 562): a cron job that imports one submodule
(``ibkr_resilience._app.jobs.submit``) does not pay for the legacy API or the alert
channels it never touches (docs/performance.md, section 5).
"""

from __future__ import annotations

import importlib
import typing

if typing.TYPE_CHECKING:
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

_SOURCES = {
    "DEFAULT_CLIENT_ID": "._core.config",
    "GATEWAY_LIVE_PORT": "._core.config",
    "GATEWAY_PAPER_PORT": "._core.config",
    "LIVE_PORT": "._core.config",
    "PAPER_PORT": "._core.config",
    "SessionConfig": "._core.config",
    "configure_logging": "._core.logconfig",
    "connect": "._legacy.connection",
    "disconnect": "._legacy.connection",
    "get_account": "._legacy.connection",
    "TelegramAlert": "._notify.telegram",
    "ibkr_session": "._session.session",
    "ConfigError": ".errors",
    "ConnectionFailed": ".errors",
    "LiveAccountRefused": ".errors",
    "RunningEventLoopError": ".errors",
}
"""Where each public name lives; :func:`__getattr__` imports it from there on first use."""

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


def __getattr__(name: str) -> typing.Any:
    """Import a public name from its module on first access, then keep it (PEP 562).

    Raises ``AttributeError`` for a name that is not public, as a module does.
    """
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(source, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

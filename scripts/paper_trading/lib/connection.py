"""Legacy connection helper for the paper-trading scripts (kept for old callers).

New code should use ``ibkr_resilience.ibkr_session``. This module keeps the old
contract to the letter, as a thin layer over ``ibkr_resilience``:

* ``CONNECT_MAX_RETRIES`` / ``CONNECT_RETRY_DELAY`` / ``CONNECT_TIMEOUT`` are read from
  ``IBKR_CONNECT_MAX_RETRIES`` / ``IBKR_CONNECT_RETRY_DELAY`` / ``IBKR_CONNECT_TIMEOUT``
  when the module is imported (``importlib.reload`` re-reads them);
* ``IB`` and ``_send_telegram_alert`` are looked up in *this* module at call time, so
  ``mock.patch("scripts.paper_trading.lib.connection.IB", ...)`` takes effect;
* ``connect`` makes ``max_retries`` attempts with a fresh ``IB()`` each, calling exactly
  ``ib.connect(host, port, clientId=client_id, timeout=timeout)``, ``retry_delay`` seconds
  apart (``time.sleep``); after the last failure it alerts once and calls ``sys.exit(1)``.
"""

from __future__ import annotations

import os  # noqa: F401  (old tests patch ``connection.os.environ``)
import sys  # noqa: F401  (old tests patch ``connection.sys.exit``)
import time  # noqa: F401  (old tests patch ``connection.time.sleep``)

from ibkr_resilience._connect.compat import IB
from ibkr_resilience._core.config import DEFAULT_CLIENT_ID, LIVE_PORT, PAPER_PORT
from ibkr_resilience._legacy import connection as _legacy

__all__ = [
    "CONNECT_MAX_RETRIES",
    "CONNECT_RETRY_DELAY",
    "CONNECT_TIMEOUT",
    "DEFAULT_CLIENT_ID",
    "IB",
    "LIVE_PORT",
    "PAPER_PORT",
    "connect",
    "disconnect",
    "get_account",
]

CONNECT_MAX_RETRIES, CONNECT_RETRY_DELAY, CONNECT_TIMEOUT = _legacy.legacy_settings()


def _send_telegram_alert(message: str) -> None:
    """Send ``message`` to Telegram (parse_mode HTML); no-op when unconfigured; never raises."""
    _legacy._send_telegram_alert(message)


_SEND_TELEGRAM_ALERT = _send_telegram_alert


def connect(
    host: str = "127.0.0.1",
    port: int = PAPER_PORT,
    client_id: int = DEFAULT_CLIENT_ID,
    max_retries: int = CONNECT_MAX_RETRIES,
    retry_delay: float = CONNECT_RETRY_DELAY,
    timeout: float = CONNECT_TIMEOUT,
) -> IB:
    """Connect to TWS / IB Gateway with retries; alert and ``sys.exit(1)`` when all fail."""
    result: IB = _legacy.connect_impl(
        host,
        port,
        client_id,
        max_retries,
        retry_delay,
        timeout,
        # Looked up here, at call time, so patching this module's names works.
        ib_class=lambda: IB(),
        send_alert=_legacy.legacy_alert(_send_telegram_alert, _SEND_TELEGRAM_ALERT),
    )
    return result


def get_account(ib: IB) -> str:
    """Return the paper account id (starts with ``D``); raise rather than return a live one."""
    return _legacy.get_account(ib)


def disconnect(ib: IB | None) -> None:
    """Disconnect ``ib`` if connected; never raises."""
    _legacy.disconnect(ib)

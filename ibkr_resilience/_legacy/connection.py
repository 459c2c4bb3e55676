"""The old ``connect()`` / ``get_account()`` / ``disconnect()`` API, kept to the letter.

Old callers (``ib = connect(client_id=10)``) and their mock-based tests must keep
working unchanged, so the call shapes are fixed: a fresh ``IB()`` per attempt, exactly
``ib.connect(host, port, clientId=client_id, timeout=timeout)``, ``max_retries`` attempts
``retry_delay`` seconds apart (slept with ``time.sleep``, by backoff), one alert, then
``sys.exit(1)``. Underneath it is the new core: the same backoff-driven loop, the same
failure classes and the same JSON log line per attempt.

:func:`connect_impl` takes the ``IB`` class and the alert function as arguments, so the
``scripts.paper_trading.lib.connection`` module can pass *its own* globals, looked up at
call time: ``mock.patch("scripts.paper_trading.lib.connection.IB")`` then takes effect.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any, cast

import structlog

from .._connect.accounts import describe_ib, is_paper_account
from .._connect.attempt import blocking_connect, disconnect_quietly
from .._connect.compat import IB
from .._connect.policy import RetryPolicy, Target, connect_with_retries
from .._core.config import (
    DEFAULT_ALERT_TIMEOUT,
    DEFAULT_CLIENT_ID,
    DEFAULT_HOST,
    LIVE_PORT,
    PAPER_PORT,
    env_value,
)
from .._core.log import get_logger
from .._core.logconfig import configure_logging
from .._notify.delivery import deliver_alert
from .._notify.events import ConnectGaveUp, Gateway
from .._notify.telegram import TelegramAlert
from .._notify.texts import gave_up_text
from ..errors import ConnectionFailed, LiveAccountRefused

log = get_logger("ibkr_resilience.legacy")

__all__ = [
    "DEFAULT_CLIENT_ID",
    "IB",
    "LIVE_PORT",
    "PAPER_PORT",
    "_send_telegram_alert",
    "connect",
    "disconnect",
    "get_account",
]


def legacy_settings(env: Mapping[str, str] | None = None) -> tuple[int, float, float]:
    """``(CONNECT_MAX_RETRIES, CONNECT_RETRY_DELAY, CONNECT_TIMEOUT)`` from the environment.

    The legacy defaults stay 3 attempts, 5 s apart, 15 s timeout; a bad value raises
    ``ConfigError`` (a ``ValueError``) naming the variable. The legacy module reads them
    when it is imported (its contract); ``import ibkr_resilience`` never does, so a bad
    variable cannot break an import of the package.
    """
    retries = env_value("IBKR_CONNECT_MAX_RETRIES", env)
    delay = env_value("IBKR_CONNECT_RETRY_DELAY", env)
    timeout = env_value("IBKR_CONNECT_TIMEOUT", env)
    return (
        3 if retries is None else int(retries),
        5.0 if delay is None else float(delay),
        15.0 if timeout is None else float(timeout),
    )


def _send_telegram_alert(message: str) -> None:
    """Post ``message`` to Telegram (HTML, escaped) when token and chat id are set.

    Does nothing when either is unset; never raises.
    """
    try:
        TelegramAlert.from_env()(message)
    except Exception as exc:
        log.error("ibkr.alert.failed", error_type=type(exc).__name__, error=str(exc))


def legacy_alert(
    send: Callable[[str], object], default: Callable[[str], object]
) -> Callable[[str], object]:
    """What ``connect`` alerts through: the Telegram channel itself while ``send`` is the
    module's own ``_send_telegram_alert`` (``default``), else ``send`` as given.

    ``_send_telegram_alert`` returns ``None`` by contract, so through it the delivery
    could not tell sent from failed or unconfigured and logged ``ibkr.alert.sent`` after
    a refused post. Old callers' suites patch ``_send_telegram_alert``: their
    replacement is still what gets called.
    """
    return TelegramAlert.from_env() if send is default else send


_SEND_TELEGRAM_ALERT = _send_telegram_alert


def connect_impl(
    host: str,
    port: int,
    client_id: int,
    max_retries: int,
    retry_delay: float,
    timeout: float,
    *,
    ib_class: Callable[[], Any],
    send_alert: Callable[[str], object],
) -> Any:
    """The legacy connect loop; see the module docstring for the fixed call shapes."""
    if not structlog.is_configured():
        # Old scripts never call configure_logging(); give them the JSON attempt lines.
        configure_logging()
    attempts = max(1, int(max_retries))
    policy = RetryPolicy(
        max_attempts=attempts,
        max_time=None,
        retry_delay=retry_delay,
        max_retry_delay=retry_delay,
        refused_interval=retry_delay,
        fixed_delay=True,
    )
    target = Target(host, port, client_id, timeout)

    def attempt(number: int, _bound: float) -> Any:
        ib = ib_class()
        blocking_connect(ib, host, port, client_id, timeout)
        return ib

    try:
        return connect_with_retries(attempt, policy=policy, target=target, describe=describe_ib)
    except ConnectionFailed as exc:
        alert_timeout = env_value("IBKR_ALERT_TIMEOUT") or DEFAULT_ALERT_TIMEOUT
        text = gave_up_text(ConnectGaveUp(Gateway(host, port, client_id), exc, attempts))
        deliver_alert(send_alert, text, alert_timeout)
        sys.exit(1)
        return cast(Any, None)  # only reached when sys.exit is mocked


def connect(
    host: str = DEFAULT_HOST,
    port: int = PAPER_PORT,
    client_id: int = DEFAULT_CLIENT_ID,
    max_retries: int | None = None,
    retry_delay: float | None = None,
    timeout: float | None = None,
) -> Any:
    """Connect with retries; on failure alert once and ``sys.exit(1)`` (legacy contract).

    ``None`` settings come from ``IBKR_CONNECT_*`` at call time, else 3 attempts, 5 s
    apart, 15 s timeout (the legacy defaults).
    """
    env_retries, env_delay, env_timeout = legacy_settings()
    return connect_impl(
        host,
        port,
        client_id,
        env_retries if max_retries is None else max_retries,
        env_delay if retry_delay is None else retry_delay,
        env_timeout if timeout is None else timeout,
        ib_class=lambda: IB(),
        send_alert=legacy_alert(_send_telegram_alert, _SEND_TELEGRAM_ALERT),
    )


def get_account(ib: Any) -> str:
    """Return the paper account (id starting with ``D``); never a live one silently.

    The old helper fell back to the first account, which on the live port is a live
    account. Now that raises :class:`LiveAccountRefused`, unless ``IBKR_ALLOW_LIVE=1``.
    """
    accounts = [str(a) for a in ib.managedAccounts()]
    for account in accounts:
        if is_paper_account(account):
            return account
    if accounts and env_value("IBKR_ALLOW_LIVE"):
        log.warning("ibkr.account.live_allowed", account=accounts[0], accounts=accounts)
        return accounts[0]
    log.error("ibkr.account.no_paper_account", accounts=accounts)
    raise LiveAccountRefused(
        f"no paper account (id starting with 'D') among managed accounts {accounts}: "
        "refusing to return a live account (is the script on the live port?). "
        "Set IBKR_ALLOW_LIVE=1 to allow it.",
        accounts=accounts,
    )


def disconnect(ib: Any) -> None:
    """Disconnect if connected; never raises (errors are logged)."""
    try:
        if ib is not None and ib.isConnected():
            disconnect_quietly(ib, reason="legacy disconnect")
            log.info("ibkr.disconnect.done")
    except Exception as exc:
        log.warning("ibkr.disconnect.failed", error_type=type(exc).__name__, error=str(exc))

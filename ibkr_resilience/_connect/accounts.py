"""The paper-account rule and what a connected ``IB`` says about itself.

IB paper-trading account ids start with ``D`` (``DU1234567``; live ones with ``U``).
A paper script must never trade a live account because it was pointed at the wrong
port, so every place that decides "is this paper?" asks :func:`is_paper_account`.
"""

from __future__ import annotations

from typing import Any


def is_paper_account(account: str) -> bool:
    """Whether ``account`` is an IB paper account (its id starts with ``D``)."""
    return account.startswith("D")


def managed_accounts(ib: Any) -> list[str]:
    """The account ids the gateway sent at connect (``managedAccounts``); ``[]`` if none."""
    try:
        return [str(a) for a in ib.managedAccounts()]
    except Exception:
        return []


def has_paper_account(accounts: list[str]) -> bool:
    """Whether any of ``accounts`` is a paper account."""
    return any(is_paper_account(a) for a in accounts)


def describe_ib(ib: Any) -> dict[str, Any]:
    """What a success line reports: ``server_version`` (int or None) and ``accounts``."""
    info: dict[str, Any] = {}
    try:
        info["server_version"] = ib.client.serverVersion()
    except Exception:
        info["server_version"] = None
    info["accounts"] = managed_accounts(ib)
    return info

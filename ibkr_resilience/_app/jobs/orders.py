"""What both jobs ask the gateway about orders, and how they read its answers.

``submit_orders`` and ``close_positions`` must agree on what "accepted" means, on how
long and how they wait for it, and on which orders count as live, or the same gateway
answer would be journaled differently by the two scripts. So contract qualification,
the acknowledgement rules (:func:`trade_outcome`, :func:`acknowledgement`), the waits and
the open-order view live here once. The rules are documented in ``docs/scripts.md``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from ..._connect import compat
from ..._connect.accounts import is_paper_account, managed_accounts
from ..._connect.compat import ensure_event_loop, order_status
from ...errors import LiveAccountRefused
from .journal import REJECTED, SUBMITTED, UNCONFIRMED

ACCEPTED_STATUSES = frozenset({"Submitted", "PreSubmitted", "Filled"})
"""The gateway took the order: it is working, waiting for its parent, or done."""
REJECTED_STATUSES = frozenset({"Cancelled", "ApiCancelled", "Inactive"})
"""The gateway refused or dropped the order (the client library marks an order error
Cancelled; statuses are read through :func:`compat.order_status`)."""

_Key = TypeVar("_Key", bound=tuple[str, ...])


def paper_account(ib: Any) -> str:
    """The account to trade: the first paper account; the session already refused a
    gateway without one unless live trading was explicitly allowed."""
    accounts = managed_accounts(ib)
    for account in accounts:
        if is_paper_account(account):
            return account
    if not accounts:
        raise LiveAccountRefused("the gateway reported no account at all", accounts=[])
    return accounts[0]


def qualify(ib: Any, contracts: Mapping[_Key, Any]) -> dict[_Key, str]:
    """Qualify every distinct contract in one round; return the failures by key.

    ``contracts`` maps a key such as ``(symbol, sec_type, exchange, currency)`` to an
    unqualified contract, which qualifying fills in place. The gateway's own error text
    (``error 200: No security definition ...``) is kept, because "unknown contract"
    alone does not tell a typo from a wrong exchange.
    """
    errors: dict[int, str] = {}

    def on_error(req_id: int, code: int, message: str, contract: Any) -> None:
        if contract is not None:
            errors[id(contract)] = f"error {code}: {message}"

    ib.errorEvent += on_error
    try:
        qualified = {id(c) for c in compat.qualified(ib.qualifyContracts(*contracts.values()))}
    finally:
        ib.errorEvent -= on_error
    failures: dict[_Key, str] = {}
    for key, contract in contracts.items():
        if id(contract) not in qualified:
            reason = errors.get(id(contract), "unknown or ambiguous contract")
            failures[key] = f"contract {' '.join(key)} could not be qualified ({reason})"
    return failures


def trade_error(trade: Any) -> str:
    """The gateway's last error for an order (``"error 201: ..."``), or ``""``."""
    errors = compat.order_errors(trade)
    if not errors:
        return ""
    code, message = errors[-1]
    return f"error {code}: {message}"


def trade_outcome(trade: Any) -> str:
    """``accepted``, ``rejected`` or ``pending`` by the rules in docs/scripts.md."""
    status = order_status(trade)
    if status in ACCEPTED_STATUSES:
        return "accepted"
    if status in REJECTED_STATUSES:
        return "rejected"
    return "pending"


def acknowledgement(ib: Any, trades: Sequence[Any], timeout: float) -> tuple[str, str]:
    """Wait up to ``timeout`` seconds for the orders just placed; return the journal
    event and message for them as one unit (a bracket's legs stand or fall together).

    ``order.rejected`` with the gateway's error if any order was refused,
    ``order.unconfirmed`` if any is still unacknowledged, else ``order.submitted``.
    """
    wait_for_acks(ib, trades, timeout)
    outcomes = [trade_outcome(t) for t in trades]
    if "rejected" in outcomes:
        error = next((trade_error(t) for t in trades if trade_error(t)), "")
        return REJECTED, error or "cancelled by the gateway"
    if "pending" in outcomes:
        return UNCONFIRMED, f"no acknowledgement within {timeout:g} s: check TWS"
    return SUBMITTED, ""


def wait_for_acks(ib: Any, trades: Sequence[Any], timeout: float) -> None:
    """Run the client's loop until every trade is accepted or rejected, or ``timeout``."""
    pending = list(trades)
    wait_for_update(ib, lambda: all(trade_outcome(t) != "pending" for t in pending), timeout)


def wait_for_update(ib: Any, done: Callable[[], bool], timeout: float) -> bool:
    """Run the client's loop until ``done()`` holds or ``timeout``; return ``done()``.

    Wakes on the client's ``updateEvent`` (emitted after every batch of incoming
    messages), so it returns as soon as the deciding message is processed. The handler
    is attached *before* the loop runs: ``IB.waitOnUpdate`` attaches it one loop step
    late and misses a reply that is already waiting in the socket.
    """
    loop = ensure_event_loop()  # the loop the client library runs on
    deadline = time.monotonic() + timeout
    while not done():
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not ib.isConnected():
            return done()
        woken: asyncio.Future[None] = loop.create_future()

        def wake(*_: Any, woken: asyncio.Future[None] = woken) -> None:
            if not woken.done():
                woken.set_result(None)

        ib.updateEvent += wake
        ib.disconnectedEvent += wake  # a lost gateway ends the wait at once
        try:
            # The loop itself, not the library's util.run: that one raises any client's
            # socket loss (Python 3.12+), where the loss should just end the wait.
            loop.run_until_complete(asyncio.wait_for(woken, remaining))
        except TimeoutError:
            pass
        finally:
            ib.updateEvent -= wake
            ib.disconnectedEvent -= wake
    return True


def wait_until(ib: Any, done: Callable[[], bool], timeout: float, poll: float = 0.2) -> bool:
    """Poll ``done()`` every ``poll`` seconds while the client's loop runs, for state the
    gateway does not push (another client's cancels are only seen by asking again)."""
    deadline = time.monotonic() + timeout
    while not done():
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not ib.isConnected():
            return False
        ib.sleep(min(poll, remaining))
    return True


def live_open_orders(ib: Any, account: str) -> list[Any]:
    """Every client's open orders in ``account`` (``reqAllOpenOrders``), freshly asked.

    ``openTrades()`` alone is not enough: it only follows this client's orders, and
    another client's order cancelled since our last request would still look open.
    """
    seen: dict[Any, Any] = {}
    for trade in ib.reqAllOpenOrders():
        order = trade.order
        if order.account not in (account, ""):
            continue
        if order_status(trade) in compat.DONE_STATES:
            continue
        seen[order_key(order)] = trade
    return list(seen.values())


def order_key(order: Any) -> Any:
    """TWS's permanent id when known (stable across clients), else (client id, order id)."""
    return order.permId or (order.clientId, order.orderId)


def contract_fields(contract: Any) -> dict[str, str]:
    """A contract as the journal records it: symbol, sec_type, exchange, currency."""
    return {
        "symbol": contract.symbol,
        "sec_type": contract.secType or "STK",
        "exchange": contract.exchange or "SMART",
        "currency": contract.currency or "USD",
    }

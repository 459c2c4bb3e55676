"""What both jobs ask the gateway about orders, and how they read its answers.

``submit_orders`` and ``close_positions`` must agree on what "accepted" means, on how
long and how they wait for it, and on which orders count as live, or the same gateway
answer would be journaled differently by the two scripts. So contract qualification,
the acknowledgement rules (:func:`trade_outcome`, :func:`classify`), the waits and
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
from ..._connect.failures import is_read_only_error
from ..._core.twslevels import INFORMATIONAL_ORDER_CODES
from ...errors import LiveAccountRefused
from .journal import REJECTED, SUBMITTED, UNCONFIRMED

ACCEPTED_STATUSES = frozenset({"Submitted", "PreSubmitted", "Filled"})
"""The gateway took the order: it is working, waiting for its parent, or done."""
REJECTED_STATUSES = frozenset({"Cancelled", "ApiCancelled", "Inactive"})
"""The gateway refused or dropped the order (the client library marks an order error
Cancelled; statuses are read through :func:`compat.order_status`)."""

INFORMATIONAL_CODES = INFORMATIONAL_ORDER_CODES
"""Order-scoped "errors" that are notices (:data:`.twslevels.INFORMATIONAL_ORDER_CODES`,
which also logs them at INFO). 2100-2199 are notices too (:func:`is_informational`).
ib_insync 0.9.86 marks an order Cancelled on 10349 (its warning list predates it;
ib_async #191, #217), so a Cancelled status caused by one of these is not a rejection:
the order's own status messages decide.
"""

_Key = TypeVar("_Key", bound=tuple[str, ...])


def is_informational(code: int) -> bool:
    """An order message that informs and does not refuse (:data:`INFORMATIONAL_CODES`)."""
    return code in INFORMATIONAL_CODES or 2100 <= code <= 2199


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


def trade_errors(trade: Any) -> list[tuple[int, str]]:
    """Every ``(code, message)`` the gateway sent about an order, oldest first."""
    return [
        (entry.errorCode, entry.message)
        for entry in getattr(trade, "log", [])
        if getattr(entry, "errorCode", 0)
    ]


def trade_error(trade: Any) -> str:
    """The gateway's last refusal for an order (``"error 201: ..."``), or ``""``
    (informational notices are not refusals)."""
    for code, message in reversed(trade_errors(trade)):
        if not is_informational(code):
            return f"error {code}: {message}"
    return ""


def trade_outcome(trade: Any) -> str:
    """``accepted``, ``rejected`` or ``pending`` by the rules in docs/scripts.md.

    A Cancelled status whose latest error is informational (10349 ...) is the client
    library's guess, not the gateway's answer: still pending.
    """
    status = order_status(trade)
    if status in ACCEPTED_STATUSES:
        return "accepted"
    if status in REJECTED_STATUSES:
        errors = trade_errors(trade)
        if errors and is_informational(errors[-1][0]):
            return "pending"
        return "rejected"
    return "pending"


def classify(ib: Any, trades: Sequence[Any], timeout: float) -> tuple[str, str]:
    """The journal event and message for ``trades`` as they stand, as one unit (a
    bracket's legs stand or fall together): ``order.rejected`` with the gateway's error
    if any order was refused, ``order.unconfirmed`` if any is still unacknowledged, else
    ``order.submitted``. A rejection is confirmed with the gateway first: its own
    statuses are asked for again (``reqAllOpenOrders``), because the client library marks
    an order Cancelled on any order error; a Read-Only refusal (321) is not asked about,
    since a read-only gateway may refuse that request too."""
    outcomes = [trade_outcome(t) for t in trades]
    read_only = any(
        is_read_only_error(code, message) for t in trades for code, message in trade_errors(t)
    )
    if "rejected" in outcomes and not read_only and ib.isConnected():
        respect_reported_ids(ib, ib.reqAllOpenOrders())
        outcomes = [trade_outcome(t) for t in trades]
    if "rejected" in outcomes:
        error = next((trade_error(t) for t in trades if trade_error(t)), "")
        return REJECTED, error or "cancelled by the gateway"
    if "pending" in outcomes:
        return UNCONFIRMED, unconfirmed_message(ib, timeout)
    return SUBMITTED, ""


def unconfirmed_message(ib: Any, timeout: float) -> str:
    """Why an order placed is journaled unconfirmed: the deadline, or the lost session."""
    if not ib.isConnected():
        return "the connection was lost before the gateway confirmed it: check TWS"
    return f"no acknowledgement within {timeout:g} s: check TWS"


def respect_reported_ids(ib: Any, trades: Sequence[Any]) -> list[Any]:
    """Raise the client's next order id above every order id in ``trades`` (the answer
    of ``reqAllOpenOrders``); return ``trades``.

    TWS API docs, order submission: "if the function reqAllOpenOrders is used by a
    client, subsequent orders placed by that client must have order IDs greater than
    the order IDs of all orders returned", else error 103 "Duplicate order id". Lean's
    IB brokerage does the same. ib_insync 0.9.86 happens to do it on each openOrder;
    this does not rely on that.
    """
    top = max((t.order.orderId for t in trades), default=0)
    if top > 0:
        ib.client.updateReqId(top + 1)
    return list(trades)


def wait_for_update(ib: Any, done: Callable[[], bool], timeout: float) -> bool:
    """Run the client's loop until ``done()`` holds or ``timeout``; return ``done()``.

    Wakes on the client's ``updateEvent`` (emitted after every batch of incoming
    messages), so it returns as soon as the deciding message is processed. The handler
    is attached *before* the loop runs: ``IB.waitOnUpdate`` attaches it one loop step
    late and misses a reply that is already waiting in the socket.

    A lost gateway ends the wait through ``disconnectedEvent``: it returns ``done()``
    (false unless the update came first) and never raises, on every Python. So the loop
    is run directly, not through ``ib_insync.util.run``: that cancels what it runs when
    the socket drops (``globalErrorEvent``) and re-raises the drop as ``ConnectionError``;
    Python 3.11's ``asyncio.wait_for`` hid that by returning the woken future's result,
    3.12's (built on ``asyncio.timeout``) lets the ``ConnectionError`` escape.
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
            # asyncio.wait neither raises on its timeout nor cancels ``woken``.
            loop.run_until_complete(asyncio.wait({woken}, timeout=remaining))
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
    for trade in respect_reported_ids(ib, ib.reqAllOpenOrders()):
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

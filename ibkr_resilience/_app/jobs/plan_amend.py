"""``submit_orders --amend``: modify a working order in place to match its edited row.

TWS modifies an order when ``placeOrder`` is called again with the order's own id and
changed fields (TWS API docs, "Modifying Orders": "re-use the same order identifier
and change the fields to modify"; only the client that placed the order can do so). So
an edited row never becomes a second order: its one order changes, or nothing happens.
Only quantity and prices are amended; a change of symbol, side, order type or time in
force, a bracket, or an order that is done or belongs to another client id is reported,
not amended (docs/order-plan.md).
"""

from __future__ import annotations

from typing import Any

from ..._connect import compat
from ..._connect.compat import order_status
from .orders import is_informational, trade_errors, trade_outcome, wait_for_update
from .placements import AMEND_FAILED, AMENDED, Found, Review, gateway_changes
from .planned_order import PlannedOrder

__all__ = ["AMENDABLE", "amend", "amend_blocker"]

AMENDABLE = frozenset({"quantity", "limit_price", "stop_price"})
"""Fields ``--amend`` changes in place."""


def amend_blocker(row: PlannedOrder, review: Review, client_id: int) -> str | None:
    """Why ``row``'s order cannot be amended, or ``None`` if it can."""
    if row.is_bracket:
        return "a bracket is not amended (its legs are linked): change it in TWS"
    entry: Found | None = review.legs.get(row.order_ref)
    if entry is None or entry.trade is None:
        return "no working order at the gateway to amend (filled, cancelled or expired)"
    if order_status(entry.trade) in compat.DONE_STATES:
        return f"its order is {order_status(entry.trade)}"
    owner = entry.trade.order.clientId
    if owner != client_id:
        return f"its order belongs to client id {owner}: run with --client-id {owner}"
    fields = {change.split(" ", 1)[0] for change in review.changes}
    other = sorted(fields - AMENDABLE)
    if other:
        return f"only quantity and prices are amended, not {', '.join(other)}"
    return None


def amend(ib: Any, row: PlannedOrder, trade: Any, account: str, timeout: float) -> tuple[str, str]:
    """Send the row's order under ``trade``'s order id; wait up to ``timeout`` seconds
    for the gateway to echo the new fields (or refuse). Return the journal event
    (``order.amended`` / ``order.amend_failed``) and message."""
    order_id = trade.order.orderId
    order = row.build_orders(lambda: order_id, account=account)[0]
    seen = len(trade.log)

    def applied() -> bool:
        echoed = gateway_changes(row, {row.order_ref: Found("open order", None, None, "", trade)})
        return echoed == [] and trade_outcome(trade) == "accepted"

    def refused() -> str:
        for entry in trade.log[seen:]:
            code = getattr(entry, "errorCode", 0)
            if code and not is_informational(code):
                return f"error {code}: {entry.message}"
        return ""

    ib.placeOrder(trade.contract, order)
    wait_for_update(ib, lambda: applied() or bool(refused()), timeout)
    if refused():
        return (
            AMEND_FAILED,
            f"the gateway refused the amendment ({refused()}); order {order_id} stays as placed",
        )
    if applied():
        return AMENDED, f"order {order_id} modified in place"
    errors = "; ".join(f"error {c}: {m}" for c, m in trade_errors(trade)[-1:])
    return (
        AMEND_FAILED,
        f"the amendment of order {order_id} was not confirmed within {timeout:g} s"
        f"{f' ({errors})' if errors else ''}: check TWS; a re-run compares again",
    )

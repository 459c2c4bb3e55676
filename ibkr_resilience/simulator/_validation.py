"""What TWS refuses in a ``placeOrder`` before it becomes an order, and with which error.

A client bug (a ``nan`` quantity, a negative limit price, a size no market takes) must
get an order-scoped error as from TWS, never become an order or a position that breaks
the next client reading the account. Codes and texts, and where they come from, are in
``docs/simulator.md``.
"""

from __future__ import annotations

import math

from . import _codec as c

__all__ = ["MAX_ORDER_QUANTITY", "order_problem", "unreadable_number"]

MAX_ORDER_QUANTITY = 1e9
"""Orders for more shares than this are refused (321) as TWS refuses absurd sizes."""


def unreadable_number(r: c.PlaceOrder) -> str | None:
    """TWS's 320 text for a quantity or price that is not a finite number, or None.

    Python clients send ``nan`` (``str(float)``) and ``Infinite`` (ib_insync's spelling
    of infinity), which Java's ``Double.parseDouble`` rejects.
    """
    texts = [r.unreadable] if r.unreadable else []
    texts += [str(v) for v in (r.quantity, r.lmt_price, r.aux_price) if v is not None]
    for text in texts:
        if text == r.unreadable or not math.isfinite(float(text)):
            return (
                "Error reading request. Unable to parse data. "
                f'java.lang.NumberFormatException: For input string: "{text}"'
            )
    return None


def order_problem(r: c.PlaceOrder, account: str, accounts: list[str]) -> str | None:
    """Why TWS would refuse this order with error 321, or None."""
    if account not in accounts:
        return f"Invalid account {account}"
    if r.action not in ("BUY", "SELL", "SSHORT"):
        return f"Invalid action {r.action!r}"
    if r.quantity is None or r.quantity <= 0:
        return "Order quantity must be positive"
    if r.quantity > MAX_ORDER_QUANTITY:
        return "-'bS' : cause - The order size is not in line with the market rules"
    if r.order_type in ("LMT", "LOC", "STP LMT") and r.lmt_price is None:
        return f"{r.order_type} order needs a limit price"
    if r.order_type in ("STP", "STP LMT") and r.aux_price is None:
        return f"{r.order_type} order needs a stop price"
    for name, price, used in (
        ("limit", r.lmt_price, ("LMT", "LOC", "STP LMT")),
        ("stop", r.aux_price, ("STP", "STP LMT")),
    ):
        if r.order_type in used and price is not None and price <= 0:
            return f"-'bO' : cause - The {name} price {price:g} must be greater than zero"
    return None

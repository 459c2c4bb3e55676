"""The simulator refuses what TWS refuses (issue 11 item 9): the real client over TCP
sends non-finite and absurd quantities and prices; each gets an order-scoped error as
from TWS, and none becomes an order or a position that breaks the next client."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from client_helpers import wait_until
from test_simulator_incidents import aapl_limit, connect

from ibkr_resilience._connect import compat
from ibkr_resilience.simulator import FakeGateway

CASES: dict[str, tuple[Callable[[], Any], int, str]] = {
    "nan_quantity": (
        lambda: compat.LimitOrder("BUY", math.nan, 100.0),
        320,
        "NumberFormatException",
    ),
    "inf_quantity": (
        lambda: compat.LimitOrder("BUY", math.inf, 100.0),
        320,
        "NumberFormatException",
    ),
    "negative_quantity": (lambda: compat.LimitOrder("BUY", -5, 100.0), 321, "positive"),
    "zero_quantity": (lambda: compat.LimitOrder("BUY", 0, 100.0), 321, "positive"),
    "huge_quantity": (lambda: compat.LimitOrder("BUY", 1e12, 100.0), 321, "order size"),
    "nan_limit_price": (
        lambda: compat.LimitOrder("BUY", 1, math.nan),
        320,
        "NumberFormatException",
    ),
    "negative_limit_price": (lambda: compat.LimitOrder("BUY", 1, -100.0), 321, "greater than"),
    "zero_stop_price": (lambda: compat.StopOrder("SELL", 1, 0.0), 321, "greater than"),
    "inf_limit_price": (
        lambda: compat.LimitOrder("BUY", 1, math.inf),
        320,
        "NumberFormatException",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_absurd_order_is_refused_and_leaves_the_account_clean(
    case: str, fake_gateway: FakeGateway
) -> None:
    gw = fake_gateway
    make, code, text = CASES[case]
    ib = connect(gw)
    try:
        trade = aapl_limit(ib, make())
        assert wait_until(ib, lambda: bool(compat.order_errors(trade)))
        got_code, message = compat.order_errors(trade)[-1]
        assert got_code == code, message
        assert text in message, message
        assert compat.order_status(trade) in compat.DONE_STATES
    finally:
        ib.disconnect()
    assert gw.state.order_list() == []
    assert gw.state.position_list() == [] or all(
        p.symbol != "AAPL" for p in gw.state.position_list()
    )
    # The next client reads the account as usual.
    later = connect(gw, client_id=11)
    try:
        assert all(math.isfinite(p.position) for p in later.reqPositions())
        assert later.reqAllOpenOrders() == []
    finally:
        later.disconnect()


def test_a_working_order_is_modified_in_place_and_keeps_its_ids(fake_gateway: FakeGateway) -> None:
    """TWS API "Modifying Orders": placeOrder with a working order's id modifies it; a
    change of side is refused (105) and leaves the order as it was."""
    gw = fake_gateway
    ib = connect(gw)
    try:
        trade = aapl_limit(ib, compat.LimitOrder("BUY", 10, 100.0))
        assert wait_until(ib, lambda: compat.order_status(trade) == "Submitted")
        (before,) = gw.state.order_list()
        changed = compat.LimitOrder("BUY", 12, 101.0, orderId=trade.order.orderId)
        ib.placeOrder(trade.contract, changed)
        assert wait_until(ib, lambda: trade.order.totalQuantity == 12)
        (after,) = gw.state.order_list()
        assert (after.order_id, after.perm_id) == (before.order_id, before.perm_id)
        assert (after.quantity, after.lmt_price, after.status) == (12, 101.0, "Submitted")
        flipped = compat.LimitOrder("SELL", 12, 101.0, orderId=trade.order.orderId)
        ib.placeOrder(trade.contract, flipped)
        assert wait_until(ib, lambda: any(c == 105 for c, _ in compat.order_errors(trade)))
        (kept,) = gw.state.order_list()
        assert (kept.action, kept.quantity, kept.status) == ("BUY", 12, "Submitted")
    finally:
        ib.disconnect()

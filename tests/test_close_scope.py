"""What a close_positions run acts on: scope, orders to cancel, blocking orders."""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace
from typing import Any

from ibkr_resilience._app.jobs.close_scope import Book, close_ref

DAY = date(2024, 5, 6)


def position(symbol: str, qty: float, account: str = "DU1") -> Any:
    return SimpleNamespace(contract=SimpleNamespace(symbol=symbol), position=qty, account=account)


def open_order(symbol: str, order_id: int, ref: str = "", account: str = "DU1") -> Any:
    order = SimpleNamespace(
        permId=1000 + order_id, clientId=10, orderId=order_id, orderRef=ref, account=account
    )
    return SimpleNamespace(
        contract=SimpleNamespace(symbol=symbol),
        order=order,
        orderStatus=SimpleNamespace(status="Submitted"),
    )


class Gateway:
    def __init__(self, positions: list[Any], orders: list[Any]) -> None:
        self.positions, self.orders = positions, orders
        self.next_ids: list[int] = []
        self.client = SimpleNamespace(updateReqId=self.next_ids.append)

    def reqPositions(self) -> list[Any]:
        return self.positions

    def reqAllOpenOrders(self) -> list[Any]:
        return self.orders


def book() -> Book:
    ib = Gateway(
        [
            position("AAPL", 10),
            position("MSFT", -5),
            position("SPY", 0),
            position("QQQ", 3, account="DU2"),
        ],
        [
            open_order("AAPL", 1),
            open_order("MSFT", 2, close_ref("MSFT", DAY)),
            open_order("TSLA", 3),
            open_order("AAPL", 4, close_ref("AAPL", date(2024, 5, 3))),
        ],
    )
    return Book.read(ib, "DU1", DAY)


def test_book_reads_the_accounts_non_zero_positions_and_todays_closes() -> None:
    """Flat positions and other accounts are left out; only today's refs are our closes."""
    b = book()
    assert sorted(b.positions) == ["AAPL", "MSFT"]
    assert [t.order.orderId for t in b.pending.values()] == [2]
    assert b.pending_close("MSFT") is not None and b.pending_close("AAPL") is None


def test_scope_is_the_symbols_given_else_everything_in_the_account() -> None:
    """Without --symbols every position and every open order's symbol is in scope."""
    b = book()
    assert b.scope([]) == {"AAPL", "MSFT", "TSLA"}
    assert b.scope(["AAPL"]) == {"AAPL"}
    assert b.idle(["NVDA", "AAPL", "TSLA"]) == ["NVDA"]


def test_orders_to_cancel_and_orders_that_block_a_close() -> None:
    """Every live order in scope but today's closing orders is cancelled, and blocks."""
    b = book()
    assert [t.order.orderId for t in b.to_cancel({"AAPL", "MSFT"})] == [1, 4]
    assert {s: [t.order.orderId for t in ts] for s, ts in b.live_by_symbol().items()} == {
        "AAPL": [1, 4],
        "TSLA": [3],
    }
    assert list(b.closing({"MSFT", "AAPL", "TSLA"})) == ["AAPL", "MSFT"]

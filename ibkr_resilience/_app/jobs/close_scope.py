"""What a ``close_positions`` run acts on: the account's book, and the day it closes for.

A closing order is marked as ours with ``close:<exchange date>:<symbol>``, so a re-run
on the same trading day recognises it and never sends a second one; the date is the
exchange's, not UTC's, for the same reason. The book is always read fresh from the
gateway (``reqPositions``, ``reqAllOpenOrders``): an order may fill or be cancelled by
another client between two steps of a run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..._core.log import get_logger
from .orders import live_open_orders, order_key

log = get_logger("ibkr_resilience.close")

EXCHANGE_TIMEZONE = "America/New_York"


def exchange_timezone() -> tzinfo:
    """New York, where US stocks trade; UTC if the system has no time-zone database."""
    try:
        return ZoneInfo(EXCHANGE_TIMEZONE)
    except ZoneInfoNotFoundError:
        log.warning("close.no_tzdata", timezone=EXCHANGE_TIMEZONE, using="UTC")
        return UTC


def trading_date(now: datetime | None = None) -> date:
    """The exchange's calendar date: the day a DAY or MOC closing order belongs to.

    UTC would switch dates at 20:00 New York time (19:00 in winter), in the middle of
    the evening in which an after-close cron run would look for today's closing orders.
    """
    moment = datetime.now(UTC) if now is None else now
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(exchange_timezone()).date()


def close_ref(symbol: str, day: date) -> str:
    """``close:2024-05-06:AAPL``: the orderRef that marks a closing order as ours."""
    return f"close:{day.isoformat()}:{symbol}"


@dataclass(frozen=True)
class Book:
    """The account as the gateway reported it at one moment of the run."""

    positions: dict[str, Any]
    """Non-zero positions by symbol (``ib_insync.Position``)."""
    orders: list[Any]
    """Every client's live orders in the account (``ib_insync.Trade``)."""
    pending: dict[Any, Any]
    """Today's closing orders still working, by :func:`.orders.order_key`."""

    @classmethod
    def read(cls, ib: Any, account: str, day: date) -> Book:
        """Ask the gateway afresh (not its cached view): positions first, then orders."""
        positions = {
            p.contract.symbol: p for p in ib.reqPositions() if p.account == account and p.position
        }
        orders = live_open_orders(ib, account)
        pending = {
            order_key(t.order): t
            for t in orders
            if t.order.orderRef == close_ref(t.contract.symbol, day)
        }
        return cls(positions, orders, pending)

    def scope(self, symbols: Sequence[str]) -> set[str]:
        """The symbols to act on: ``symbols``, else every position's and open order's."""
        return set(symbols) or set(self.positions) | {t.contract.symbol for t in self.orders}

    def to_cancel(self, scope: set[str]) -> list[Any]:
        """The live orders on ``scope`` that could reopen a position (not our closes)."""
        return [
            t
            for t in self.orders
            if t.contract.symbol in scope and order_key(t.order) not in self.pending
        ]

    def idle(self, symbols: Sequence[str]) -> list[str]:
        """Asked-for symbols with neither a position nor an open order, sorted."""
        busy = {t.contract.symbol for t in self.orders}
        return sorted(s for s in symbols if s not in self.positions and s not in busy)

    def closing(self, scope: set[str]) -> dict[str, Any]:
        """The positions to close, by symbol in alphabetical order."""
        return {s: p for s, p in sorted(self.positions.items()) if s in scope}

    def live_by_symbol(self) -> dict[str, list[Any]]:
        """Live orders other than today's closing orders, by symbol: they block a close."""
        live: dict[str, list[Any]] = {}
        for t in self.orders:
            if order_key(t.order) not in self.pending:
                live.setdefault(t.contract.symbol, []).append(t)
        return live

    def pending_close(self, symbol: str) -> Any | None:
        """Today's closing order for ``symbol`` still working, if any."""
        return next((t for t in self.pending.values() if t.contract.symbol == symbol), None)

"""Placing the closing orders: one per position, never a second one for the same day.

A closing order carries ``close:<exchange date>:<symbol>``; one already working that
matches the position is reported as skipped, and one that does not match (another
quantity or side) is left for a human rather than topped up, because guessing wrong
would open a position instead of closing one.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from ..._connect import compat
from .close_records import CloseParams, CloseRecorder, closing_side, qty
from .close_scope import close_ref
from .gateway_watch import GatewayWatch, stop_after
from .journal import NOT_PLACED, SKIPPED, UNCONFIRMED
from .orders import qualify
from .window import OrderWindow, Unit


class ClosingOrders:
    """Builds, qualifies and sends closing orders, or records why one is not sent."""

    def __init__(
        self, params: CloseParams, record: CloseRecorder, watch: GatewayWatch, *, timeout: float
    ) -> None:
        self.params = params
        self.record = record
        self.watch = watch
        self.timeout = timeout
        self._contracts: dict[str, Any] = {}

    def qualify(self, ib: Any, closing: Mapping[str, Any]) -> dict[str, str]:
        """Qualify the contracts of the positions in ``closing`` (by symbol) in one
        round; return the failures by symbol."""
        contracts = {
            (s, p.contract.secType or "STK", "SMART", p.contract.currency or "USD"): (
                _closing_contract(p)
            )
            for s, p in closing.items()
        }
        if not contracts:
            return {}
        failures = qualify(ib, contracts)
        self._contracts = {key[0]: c for key, c in contracts.items()}
        return {key[0]: reason for key, reason in failures.items()}

    def order_for(self, pos: Any) -> Any:
        """The DAY order that flattens ``pos``, marked with today's close ref."""
        return compat.Order(
            orderType=self.params.order_type,
            action=closing_side(pos),
            totalQuantity=abs(pos.position),
            tif="DAY",
            account=self.params.account,
            orderRef=close_ref(pos.contract.symbol, self.params.day),
        )

    def window(self, ib: Any, *, size: int) -> OrderWindow[Any]:
        """The window the closing orders go through (:mod:`.window`): up to ``size`` in
        flight, announced in bursts (one fsync each), outcomes recorded in position
        order in journal batches, and every order still in flight journaled when the
        run stops early."""
        return OrderWindow(
            ib,
            self.watch,
            size=size,
            timeout=self.timeout,
            record=self._record_unit,
            cut_short=self._record_cut_short,
            stop_after=lambda trades, event: stop_after(ib, trades, event, self.timeout),
            batch=self.record.journal.batch,
            announcing=self.record.journal.announcing,
        )

    def place(self, ib: Any, window: OrderWindow[Any], pos: Any) -> bool:
        """Send the closing order for ``pos`` (qualified first) through ``window`` (in
        its next burst); its outcome is recorded when the window settles it. ``False``:
        the connection is gone and nothing more is sent.

        As in ``submit_orders``: the fsynced ``order.sending`` goes first (a failure
        there raises and nothing is sent), nothing is sent while error 1100 is in force,
        and a Read-Only refusal, an outage past its wait or a silent gateway raise
        :class:`.exits.RunStopped` once the outcomes in flight are recorded.
        """
        contract = self._contracts[pos.contract.symbol]
        order = self.order_for(pos)
        order.orderId = ib.client.getReqId()  # known before sending, for the journal
        return window.place(pos, contract, [order], partial(self.record.sending, pos, order))

    def _record_unit(self, unit: Unit[Any], event: str, message: str) -> None:
        self.record.close(unit.key, event, trade=unit.trades[0], message=message)

    def _record_cut_short(self, unit: Unit[Any], cause: str) -> None:
        """A closing order in the window when the run stopped: unconfirmed, with why."""
        self.record.close(
            unit.key,
            UNCONFIRMED,
            trade=unit.trades[0] if unit.trades else None,
            order=unit.orders[0],
            message=f"{cause} while placing, before the gateway confirmed; a re-run "
            "skips it if it is still pending",
        )

    def skip_pending(self, pos: Any, trade: Any) -> None:
        """Record that today's closing order ``trade`` already handles ``pos`` (or not)."""
        order = trade.order
        remaining = trade.orderStatus.remaining or order.totalQuantity
        if order.action != closing_side(pos) or remaining != abs(pos.position):
            self.record.close(
                pos,
                NOT_PLACED,
                trade=trade,
                message=f"a pending closing order {order.orderId} ({order.action} "
                f"{qty(remaining)}) does not match the position; not sending another: "
                "check TWS",
            )
            return
        self.record.close(
            pos,
            SKIPPED,
            trade=trade,
            message=f"closing order {order.orderId} already pending ({compat.order_status(trade)})",
        )

    def preview(self, pos: Any, pending: Any | None) -> str:
        """What :meth:`place` or :meth:`skip_pending` would do, for a dry run."""
        if pending is not None:
            return f"would skip: closing order {pending.order.orderId} already pending"
        order = self.order_for(pos)
        return (
            f"would place {order.action} {qty(order.totalQuantity)} "
            f"{pos.contract.symbol} {self.params.order_type}"
        )


def _closing_contract(pos: Any) -> Any:
    """The position's contract, routed SMART (positions come without an exchange)."""
    c = pos.contract
    return compat.Contract(
        conId=c.conId,
        symbol=c.symbol,
        secType=c.secType or "STK",
        exchange="SMART",
        currency=c.currency or "USD",
    )

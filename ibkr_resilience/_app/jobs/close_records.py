"""What ``close_positions`` writes down about each cancel and each position.

Every step of a close run leaves one fsynced journal record, one summary line and one
log line, worded the same way, so the journal alone can answer "was AAPL closed on
Monday, and if not, why not". Both kinds of record are built here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from ..._connect.compat import order_status
from ..._core.log import get_logger
from .close_scope import close_ref
from .journal import CANCELLED, DRY_RUN, Journal
from .kit import Outcome, RunState
from .orders import contract_fields

log = get_logger("ibkr_resilience.close")


@dataclass(frozen=True)
class CloseParams:
    """What every closing order of one run shares."""

    account: str
    day: date
    """The exchange date of the run (:func:`.close_scope.trading_date`)."""
    order_type: str
    """``MKT`` or ``MOC``."""


def qty(value: float) -> float | int:
    """Whole share counts as ints in the journal (``10``, not ``10.0``)."""
    return int(value) if float(value).is_integer() else float(value)


def closing_side(pos: Any) -> str:
    """``SELL`` to close a long position, ``BUY`` to close a short one."""
    return "SELL" if pos.position > 0 else "BUY"


class CloseRecorder:
    """Journals, summarises and logs each cancel and each position's outcome."""

    def __init__(self, journal: Journal, state: RunState, params: CloseParams) -> None:
        self.journal = journal
        self.state = state
        self.params = params

    def cancel(self, trade: Any, event: str, message: str) -> None:
        """Record what became of one open order (``order.cancelled``, ...)."""
        order = trade.order
        fields = {
            "order_ref": order.orderRef,
            "order_id": order.orderId,
            "perm_id": order.permId or None,
            "client_id": order.clientId,
            "account": order.account or self.params.account,
            "contract": contract_fields(trade.contract),
            "side": order.action,
            "quantity": qty(order.totalQuantity),
            "order_type": order.orderType,
            "status": "Cancelled" if event == CANCELLED else order_status(trade),
            "message": message,
        }
        self.journal.append(event, **fields)
        what = (
            f"cancel {order.action} {qty(order.totalQuantity)} {trade.contract.symbol} "
            f"{order.orderType} (client {order.clientId})"
        )
        self.state.outcomes.append(
            Outcome(event, what, order.orderRef, fields["status"], order.orderId, message)
        )
        log.info(
            "close.cancel",
            outcome=event,
            order_id=order.orderId,
            client_id=order.clientId,
            symbol=trade.contract.symbol,
            message=message or None,
        )

    def sending(self, pos: Any, order: Any) -> None:
        """Journal (fsynced) the closing ``order`` for ``pos`` right before it is sent."""
        self.journal.sending(
            order_ref=order.orderRef,
            order_id=order.orderId,
            account=self.params.account,
            contract=contract_fields(pos.contract),
            side=order.action,
            quantity=qty(order.totalQuantity),
            order_type=order.orderType,
            tif=order.tif,
            position=qty(pos.position),
        )

    def close(
        self,
        pos: Any,
        event: str,
        *,
        trade: Any = None,
        message: str = "",
        order: Any = None,
    ) -> None:
        """Record what became of one position; ``order`` when no ``trade`` exists yet."""
        symbol = pos.contract.symbol
        side = closing_side(pos)
        order = trade.order if trade is not None else order
        order_id = order.orderId if order is not None and event != DRY_RUN else None
        status = order_status(trade) if trade is not None else ""
        perm_id = (trade.orderStatus.permId or trade.order.permId or None) if trade else None
        ref = order.orderRef if order is not None else close_ref(symbol, self.params.day)
        fields = {
            "order_ref": ref,
            "order_id": order_id,
            "perm_id": perm_id,
            "account": self.params.account,
            "contract": contract_fields(pos.contract),
            "side": side,
            "quantity": qty(abs(pos.position)),
            "order_type": order.orderType if order is not None else self.params.order_type,
            "tif": "DAY",
            "position": qty(pos.position),
            "status": status,
            "message": message,
        }
        self.journal.append(event, **fields)
        what = (
            f"close {symbol} {qty(pos.position):+}: {side} {qty(abs(pos.position))} "
            f"{fields['order_type']}"
        )
        self.state.outcomes.append(Outcome(event, what, ref, status, order_id, message))
        log.info(
            "close.order",
            outcome=event,
            symbol=symbol,
            order_ref=ref,
            order_id=order_id,
            status=status,
            message=message or None,
        )

"""Cancelling the open orders that stand in the way of closing a position.

A stop or limit order left working after a position is closed can open a new one later,
and a closing order sent while another order on the symbol is live can overshoot; so
every such order must be confirmed gone before its symbol is closed. TWS lets a client
cancel only its own orders (error 10147 otherwise), hence another client id's orders are
cancelled through a short session under that id; an order entered by hand in TWS, or
one whose owner is still connected (error 326), blocks its symbol instead, unless
``--global-cancel`` was given.
"""

from __future__ import annotations

from typing import Any

from ..._connect.compat import is_done
from ..._core.config import SessionConfig
from ..._core.log import get_logger
from ..._notify.telegram import DisabledAlert
from ..._session.session import ibkr_session
from ...errors import ConnectionFailed
from .close_records import CloseRecorder
from .journal import CANCEL_FAILED, CANCELLED
from .orders import live_open_orders, order_key, wait_for_update, wait_until

log = get_logger("ibkr_resilience.close")


class Canceller:
    """Cancels orders, waits until the gateway confirms, says which symbols stay blocked."""

    def __init__(
        self,
        config: SessionConfig,
        record: CloseRecorder,
        *,
        timeout: float,
        global_cancel: bool,
    ) -> None:
        self.config = config
        self.record = record
        self.account = record.params.account
        self.timeout = timeout
        self.global_cancel = global_cancel

    def cancel(self, ib: Any, to_cancel: list[Any]) -> dict[str, str]:
        """Cancel ``to_cancel`` and wait up to the ack timeout until none is live.

        Returns the symbols that must not be closed, each with the reason; every order
        is journaled as ``order.cancelled`` or ``order.cancel_failed``.
        """
        if not to_cancel:
            return {}
        blocked = self._request(ib, to_cancel)
        self._confirm(ib, to_cancel, blocked)
        return blocked

    def _request(self, ib: Any, to_cancel: list[Any]) -> dict[str, str]:
        """Send the cancels (by owner, or one global cancel); return blocked symbols."""
        blocked: dict[str, str] = {}
        if self.global_cancel:
            log.warning("close.global_cancel", orders=len(to_cancel))
            ib.reqGlobalCancel()
            return blocked
        by_owner: dict[int, list[Any]] = {}
        for t in to_cancel:
            by_owner.setdefault(t.order.clientId, []).append(t)
        for owner, trades in sorted(by_owner.items()):
            ids = {t.order.orderId for t in trades}
            # A bracket's children go with their parent; cancelling them too would
            # only earn "order not found" errors.
            roots = [t for t in trades if t.order.parentId not in ids]
            manual = [t for t in trades if t.order.orderId <= 0]
            if manual:
                for t in manual:
                    blocked[t.contract.symbol] = (
                        f"order (permId {t.order.permId}) was entered in TWS by hand; "
                        "cancel it there, or use --global-cancel"
                    )
                roots = [t for t in roots if t.order.orderId > 0]
            if owner == ib.client.clientId:
                for t in roots:
                    ib.cancelOrder(t.order)
            elif roots:
                reason = self._cancel_as(owner, roots)
                if reason:
                    for t in trades:
                        blocked.setdefault(t.contract.symbol, reason)
        return blocked

    def _confirm(self, ib: Any, to_cancel: list[Any], blocked: dict[str, str]) -> None:
        """Wait until the cancels sent are confirmed; record each order; extend ``blocked``."""
        # Wait only for the cancels actually requested: an order whose owner could not
        # be reached stays live, and waiting for it would only delay the report.
        sent = [t for t in to_cancel if t.contract.symbol not in blocked]
        wanted = {order_key(t.order) for t in sent}
        still: list[Any] = list(sent)

        def none_live() -> bool:
            nonlocal still
            live = {order_key(t.order) for t in live_open_orders(ib, self.account)}
            still = [t for t in sent if order_key(t.order) in live & wanted]
            return not still

        if sent:
            wait_until(ib, none_live, self.timeout)
        failed = {order_key(t.order) for t in still}
        failed |= {order_key(t.order) for t in to_cancel if t.contract.symbol in blocked}
        for t in to_cancel:
            symbol = t.contract.symbol
            if order_key(t.order) in failed:
                reason = blocked.get(symbol) or (f"cancel not confirmed within {self.timeout:g} s")
                blocked.setdefault(symbol, f"order {t.order.orderId} not cancelled: {reason}")
                self.record.cancel(t, CANCEL_FAILED, reason)
            else:
                self.record.cancel(t, CANCELLED, "")

    def _cancel_as(self, owner: int, trades: list[Any]) -> str | None:
        """Cancel another client id's orders through a short session as that client.

        One attempt, no alert: if the owner is still connected the gateway answers 326
        at once, and that is a finding for the summary, not an outage to page about.
        """
        wanted = {order_key(t.order) for t in trades}
        config = self.config.replace(client_id=owner, max_attempts=1)
        quiet = DisabledAlert("cancel session of close_positions: failures are in its summary")
        log.info("close.cancel_as", client_id=owner, orders=len(trades))
        try:
            with ibkr_session(client_id=owner, config=config, alert=quiet) as other:
                other.RequestTimeout = self.timeout
                mine = [t for t in other.openTrades() if order_key(t.order) in wanted]
                for t in mine:
                    other.cancelOrder(t.order)
                wait_for_update(other, lambda: all(is_done(t) for t in mine), self.timeout)
        except ConnectionFailed as exc:
            return (
                f"its orders belong to client id {owner}, which could not be used "
                f"({exc.failure_class}: still connected?); stop that client and re-run, "
                "or use --global-cancel"
            )
        return None

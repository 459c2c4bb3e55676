"""The broker behind the simulated gateway: what each request means for the account.

``Broker`` answers decoded requests against ``GatewayState`` (orders, fills, cancels,
positions, executions, accounts, contracts, order ids) and sends the replies through
an ``Outbox``. It knows nothing of sockets or of faults beyond the one hook it asks
(``on_order``, just before a valid order is accepted). ``ROUTES`` at the bottom is the
request table: message name -> (message id and decoder, from the codec's record
type, and the broker method that answers it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from . import _codec as c
from . import _messages as m
from ._faults import Drop, Fail, FaultChain
from ._protocol import Field
from ._server import Connection
from ._state import IMMEDIATE_FILL_TYPES, GatewayState, SimOrder
from ._validation import order_problem, unreadable_number

NO_SECURITY_DEFINITION = "No security definition has been found for the request"

R = TypeVar("R", bound=c.Request)


class Outbox(Protocol):
    """Where replies go (the server)."""

    def send(self, conn: Connection, fields: list[Field]) -> None: ...

    def connections(self) -> list[Connection]: ...


class Broker:
    """Serves the account's requests; one per gateway, on the gateway's thread."""

    def __init__(self, state: GatewayState, out: Outbox, faults: FaultChain, cash: float) -> None:
        self.state = state
        self.cash = cash
        self._out = out
        self._faults = faults

    def _send(self, conn: Connection, fields: list[Field]) -> None:
        self._out.send(conn, fields)

    # ------------------------------------------------------------------ session
    def api_started(self, conn: Connection) -> None:
        """The greeting TWS sends when the API starts: next order id, accounts."""
        self._send(conn, m.next_valid_id(self.state.next_order_id))
        self._send(conn, m.managed_accounts(self.state.accounts))

    def req_ids(self, conn: Connection, r: c.ReqIds) -> None:
        self._send(conn, m.next_valid_id(self.state.next_order_id))

    def req_managed_accts(self, conn: Connection, r: c.ReqManagedAccts) -> None:
        self._send(conn, m.managed_accounts(self.state.accounts))

    def req_current_time(self, conn: Connection, r: c.ReqCurrentTime) -> None:
        self._send(conn, m.current_time(datetime.now(UTC)))

    # ------------------------------------------------------------------ account
    def req_positions(self, conn: Connection, r: c.ReqPositions) -> None:
        conn.positions_subscribed = True
        for pos in self.state.position_list():
            self._send(conn, m.position(pos))
        self._send(conn, m.position_end())

    def cancel_positions(self, conn: Connection, r: c.CancelPositions) -> None:
        conn.positions_subscribed = False

    def req_account_updates(self, conn: Connection, r: c.ReqAccountUpdates) -> None:
        if not r.subscribe:
            conn.account_subscribed = ""
            return
        account = r.account or self.state.accounts[0]
        conn.account_subscribed = account
        now = datetime.now(UTC)
        for msg in m.account_values(account, self.cash):
            self._send(conn, msg)
        for pos in self.state.position_list():
            if pos.account == account and pos.quantity:
                self._send(conn, m.portfolio_value(pos, self._price(pos.symbol, pos.avg_cost)))
        self._send(conn, m.account_update_time(now))
        self._send(conn, m.account_download_end(account))

    def req_account_updates_multi(self, conn: Connection, r: c.ReqAccountUpdatesMulti) -> None:
        self._send(
            conn, m.account_update_multi(r.req_id, r.account, "NetLiquidation", f"{self.cash:.2f}")
        )
        self._send(conn, m.account_update_multi_end(r.req_id))

    def req_contract_details(self, conn: Connection, r: c.ReqContractDetails) -> None:
        wc = r.contract
        contract = self.state.contract_for(wc.symbol, wc.con_id)
        ok = (
            contract is not None
            and wc.sec_type in ("", contract.sec_type)
            and wc.currency in ("", contract.currency)
        )
        if not ok or contract is None:
            self._send(conn, m.error(r.req_id, 200, NO_SECURITY_DEFINITION))
            return
        self._send(conn, m.contract_details(r.req_id, contract))
        self._send(conn, m.contract_details_end(r.req_id))

    # ------------------------------------------------------------------ order queries
    def req_completed_orders(self, conn: Connection, r: c.ReqCompletedOrders) -> None:
        self._send(conn, m.completed_orders_end())

    def req_open_orders(self, conn: Connection, r: c.ReqOpenOrders) -> None:
        # reqOpenOrders reports this client's orders (client 0 sees all, as in TWS).
        self._open_orders(conn, None if conn.client_id == 0 else conn.client_id)

    def req_all_open_orders(self, conn: Connection, r: c.ReqAllOpenOrders) -> None:
        self._open_orders(conn, None)

    def _open_orders(self, conn: Connection, client_id: int | None) -> None:
        for order in self.state.open_orders(client_id):
            self._report(conn, order)
            self._send(conn, m.order_status(order))
        self._send(conn, m.open_order_end())

    def req_executions(self, conn: Connection, r: c.ReqExecutions) -> None:
        since = _parse_filter_time(r.since)
        side = {"BUY": "BOT", "SELL": "SLD"}.get(r.side.upper(), r.side)
        with self.state.lock:
            executions = list(self.state.executions)
        for e in executions:
            if (
                (r.client_id and e.client_id != r.client_id)
                or (r.account and e.account != r.account)
                or (r.symbol and e.symbol != r.symbol.upper())
                or (r.sec_type and e.sec_type != r.sec_type)
                or (r.exchange and r.exchange not in (e.exchange, "SMART"))
                or (r.side and side != e.side)
                or (since and e.time < since)
            ):
                continue
            self._send(conn, m.execution(r.req_id, e))
            self._send(conn, m.commission_report(e))
        self._send(conn, m.execution_end(r.req_id))

    # ------------------------------------------------------------------ orders
    def place_order(self, conn: Connection, r: c.PlaceOrder) -> None:
        assert conn.client_id is not None
        order_id = r.order_id
        existing = self.state.orders.get((conn.client_id, order_id))
        reused = existing is not None and not existing.is_open and existing.transmit
        if reused and existing is not None and existing.status == "Filled":
            self._send(conn, m.error(order_id, 104, "Can't modify a filled order"))
            return
        if reused or (existing is None and order_id <= conn.max_reported_order_id):
            # TWS API docs, order submission: after reqAllOpenOrders, "subsequent orders
            # placed by that client must have order IDs greater than the order IDs of all
            # orders returned"; a new id at or below one reported here is a duplicate.
            self._send(conn, m.error(order_id, 103, "Duplicate order id"))
            return
        contract = self.state.contract_for(r.contract.symbol, r.contract.con_id)
        if contract is None:
            self._send(conn, m.error(order_id, 200, NO_SECURITY_DEFINITION))
            return
        unreadable = unreadable_number(r)
        if unreadable:
            # What TWS's Java decoder answers to a number it cannot parse ("nan", "inf").
            self._send(conn, m.error(order_id, 320, unreadable))
            return
        # TWS API docs, "Modifying Orders": placeOrder with the id of a working order
        # modifies it; the contract and side of an order cannot change.
        modifying = existing if existing is not None and existing.is_open else None
        if modifying is not None and (
            modifying.symbol != contract.symbol or modifying.action != r.action
        ):
            self._send(
                conn, m.error(order_id, 105, "Order being modified does not match original order.")
            )
            return
        account = r.account or self.state.accounts[0]
        problem = order_problem(r, account, self.state.accounts)
        if problem:
            self._send(conn, m.error(order_id, 321, f"Error validating request: {problem}"))
            return
        answer = self._faults.on_order(conn, r)
        if isinstance(answer, Drop):
            return
        if modifying is not None and isinstance(answer, Fail):
            # A refused modification leaves the working order as it was.
            self._send(conn, m.error(order_id, answer.code, answer.text))
            return
        assert r.quantity is not None  # _order_problem checked it
        order = SimOrder(
            order_id=order_id,
            perm_id=existing.perm_id if existing else self.state.new_perm_id(),
            client_id=conn.client_id,
            account=account,
            symbol=contract.symbol,
            sec_type=contract.sec_type,
            exchange=r.contract.exchange or "SMART",
            currency=contract.currency,
            con_id=contract.con_id,
            action=r.action,
            quantity=r.quantity,
            order_type=r.order_type,
            lmt_price=r.lmt_price,
            aux_price=r.aux_price,
            tif=r.tif or "DAY",
            order_ref=r.order_ref,
            parent_id=r.parent_id,
            transmit=r.transmit,
            filled=modifying.filled if modifying is not None else 0.0,
            avg_fill_price=modifying.avg_fill_price if modifying is not None else 0.0,
        )
        if isinstance(answer, Fail):
            order.status = "Cancelled"
            self.state.add_order(order)
            self._send(conn, m.error(order_id, answer.code, answer.text))
            return
        for code, text in answer.notices:
            self._send(conn, m.error(order_id, code, text))
        self.state.add_order(order)
        if not r.transmit:
            return  # held until a transmitting order of its group arrives
        group = [order]
        if r.parent_id:
            parent = self.state.orders.get((conn.client_id, r.parent_id))
            if parent is not None and not parent.transmit:
                group.insert(0, parent)
            group += [
                o
                for o in self.state.orders.values()
                if o.parent_id == r.parent_id and not o.transmit and o is not order
            ]
        for o in group:
            o.transmit = True
        for o in group:
            self._activate(conn, o)

    def _activate(self, conn: Connection, order: SimOrder) -> None:
        parent = self.state.orders.get((order.client_id, order.parent_id))
        waiting = parent is not None and parent.status != "Filled"
        order.status = "PreSubmitted" if waiting else "Submitted"
        self._report(conn, order)
        self._send(conn, m.order_status(order))
        if order.order_type in IMMEDIATE_FILL_TYPES and not waiting:
            execution = self.state.fill(order, self._price(order.symbol, 0.0))
            self._send(conn, m.execution(-1, execution))
            self._send(conn, m.commission_report(execution))
            self._report(conn, order)
            self._send(conn, m.order_status(order))
            self._stream_position(order.account, order.symbol)
            for child in list(self.state.orders.values()):
                if (
                    child.parent_id == order.order_id
                    and child.client_id == order.client_id
                    and child.is_open
                    and child.transmit
                ):
                    self._activate(conn, child)

    def _report(self, conn: Connection, order: SimOrder) -> None:
        """Send ``openOrder``; remember the id for the order-id rule (error 103)."""
        conn.max_reported_order_id = max(conn.max_reported_order_id, order.order_id)
        self._send(conn, m.open_order(order))

    def cancel_order(self, conn: Connection, r: c.CancelOrder) -> None:
        assert conn.client_id is not None
        order = self.state.orders.get((conn.client_id, r.order_id))
        if order is None or not order.is_open:
            self._send(
                conn,
                m.error(
                    r.order_id,
                    10147,
                    f"OrderId {r.order_id} that needs to be cancelled is not found.",
                ),
            )
            return
        self._cancel(order)

    def global_cancel(self, conn: Connection, r: c.ReqGlobalCancel) -> None:
        for order in self.state.open_orders(None):
            self._cancel(order)

    def _cancel(self, order: SimOrder) -> None:
        order.status = "Cancelled"
        owner = next(
            (
                o
                for o in self._out.connections()
                if o.client_id == order.client_id and o.api_started
            ),
            None,
        )
        if owner is not None:
            self._send(owner, m.order_status(order))
            self._send(owner, m.error(order.order_id, 202, "Order Canceled - reason:"))
        for child in list(self.state.orders.values()):
            if (
                child.parent_id == order.order_id
                and child.client_id == order.client_id
                and child.is_open
            ):
                self._cancel(child)

    def _stream_position(self, account: str, symbol: str) -> None:
        """Push a changed position to subscribers, as TWS does after a fill."""
        pos = self.state.positions.get((account, symbol))
        if pos is None:
            return
        for conn in self._out.connections():
            if conn.positions_subscribed:
                self._send(conn, m.position(pos))
            if conn.account_subscribed == account:
                self._send(conn, m.portfolio_value(pos, self._price(symbol, pos.avg_cost)))

    def _price(self, symbol: str, fallback: float) -> float:
        contract = self.state.contract_for(symbol)
        return contract.price if contract is not None else fallback


def _parse_filter_time(text: str) -> datetime | None:
    """Parse an execution filter's time (``yyyymmdd hh:mm:ss[ zone]``); UTC assumed."""
    text = text.strip()
    if not text:
        return None
    parts = text.replace("-", " ").split()
    try:
        return datetime.strptime(" ".join(parts[:2]), "%Y%m%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None


@dataclass(frozen=True)
class Route(Generic[R]):
    """One row of the request table: the record type (its ``MSG_ID``, ``NAME`` and
    ``decode``) and the broker method that answers it."""

    kind: type[R]
    handle: Callable[[Broker, Connection, R], None]


ROUTES: dict[str, Route[Any]] = {
    route.kind.NAME: route
    for route in (
        Route(c.PlaceOrder, Broker.place_order),
        Route(c.CancelOrder, Broker.cancel_order),
        Route(c.ReqGlobalCancel, Broker.global_cancel),
        Route(c.ReqOpenOrders, Broker.req_open_orders),
        Route(c.ReqAllOpenOrders, Broker.req_all_open_orders),
        Route(c.ReqCompletedOrders, Broker.req_completed_orders),
        Route(c.ReqAccountUpdates, Broker.req_account_updates),
        Route(c.ReqAccountUpdatesMulti, Broker.req_account_updates_multi),
        Route(c.ReqExecutions, Broker.req_executions),
        Route(c.ReqIds, Broker.req_ids),
        Route(c.ReqContractDetails, Broker.req_contract_details),
        Route(c.ReqManagedAccts, Broker.req_managed_accts),
        Route(c.ReqCurrentTime, Broker.req_current_time),
        Route(c.ReqPositions, Broker.req_positions),
        Route(c.CancelPositions, Broker.cancel_positions),
    )
}

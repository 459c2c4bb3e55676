"""The simulator's fault hooks as a user sees them, and its bounded, indexed records.

Users' faults here are incidents that real gateways produce (docs/simulator.md, "Your
own faults"), each a few lines against the public hook API, driven by the real
client library (ib_insync or ib_async).
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
from client_helpers import connect_once_the_id_is_free, wait_until

from ibkr_resilience._connect import compat
from ibkr_resilience._connect.compat import IB
from ibkr_resilience.simulator import (
    DROP,
    PROCEED,
    AcceptAnswer,
    Close,
    Connection,
    Delay,
    Fail,
    FakeGateway,
    Fault,
    OrderAnswer,
    PlaceOrder,
    Proceed,
    Request,
    RequestAnswer,
    StartApi,
    StartApiAnswer,
)
from ibkr_resilience.simulator._codec import decode
from ibkr_resilience.simulator._recording import Received, Recorder

Stock = compat.Stock
LimitOrder = compat.LimitOrder

READ_ONLY_TEXT = (
    "Error validating request.-'bN' : cause - The API interface is currently in Read-Only mode."
)


# --------------------------------------------------------------------------- users' faults
class Unanswered(Fault):
    """One request kind is never answered (some gateways and reqCompletedOrders)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def on_request(self, conn: Connection, request: Request) -> RequestAnswer:
        return DROP if request.name == self.name else PROCEED


class ReadOnlyApi(Fault):
    """IBC ``ReadOnlyApi=yes``: order requests get error 321 and no end marker."""

    ORDER_REQUESTS = frozenset({"placeOrder", "cancelOrder", "reqOpenOrders"})

    def on_request(self, conn: Connection, request: Request) -> RequestAnswer:
        return Fail(321, READ_ONLY_TEXT) if request.name in self.ORDER_REQUESTS else PROCEED


class ClientIdBusyFor(Fault):
    """Error 326 for one client id during the first ``seconds`` after installation."""

    def __init__(self, client_id: int, seconds: float) -> None:
        self.client_id, self.seconds = client_id, seconds

    def on_install(self) -> None:
        self.until = self.gateway.now() + self.seconds

    def on_start_api(self, conn: Connection, request: StartApi) -> StartApiAnswer:
        if request.client_id == self.client_id and self.gateway.now() < self.until:
            return Fail(326, "Unable to connect as the client id is already in use.")
        return PROCEED


class Outage(Fault):
    """IB's servers unreachable with the socket up: 1100 to everyone, orders held
    until it ends, then 1102 (restored, data maintained) and the held orders served."""

    def __init__(self) -> None:
        self.held: list[tuple[Connection, PlaceOrder]] = []

    def on_install(self) -> None:
        for conn in self.gateway.connections():
            self.gateway.send_error(conn, -1, 1100, "Connectivity between IB and TWS lost.")

    def on_order(self, conn: Connection, order: PlaceOrder) -> OrderAnswer:
        self.held.append((conn, order))
        return DROP

    def on_remove(self) -> None:
        for conn in self.gateway.connections():
            self.gateway.send_error(conn, -1, 1102, "Connectivity restored - data maintained.")
        for conn, order in self.held:
            self.gateway.process(conn, order)


class OrderPreset(Fault):
    """Newer gateways' informational order "error" 10349, then the order is accepted."""

    def on_order(self, conn: Connection, order: PlaceOrder) -> OrderAnswer:
        return Proceed(notices=((10349, "Order TIF was set to DAY based on order preset."),))


class RelayFront(Fault):
    """socat in front of a restarting gateway: every connection accepted and closed at
    once, before any handshake byte, for ``seconds``; then the gateway is back."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_install(self) -> None:
        for conn in self.gateway.connections():
            self.gateway.close(conn, "relay: gateway restarting")
        self.gateway.call_later(self.seconds, self.gateway.end)

    def on_accept(self, conn: Connection) -> AcceptAnswer:
        return Close("relay: gateway restarting")


def test_relay_front_accepts_and_closes_until_the_gateway_is_back(
    fake_gateway: FakeGateway,
) -> None:
    """Not refused: accepted and closed, which ib_insync waits out; then it connects."""
    before = socket.create_connection(("127.0.0.1", fake_gateway.port), timeout=2)
    assert fake_gateway.wait_for(lambda: fake_gateway.connection_count() == 1, 2)
    fake_gateway.add_fault(RelayFront(1.0))
    assert before.recv(1) == b""  # the gateway behind went away: cut
    before.close()
    with pytest.raises(TimeoutError):
        IB().connect("127.0.0.1", fake_gateway.port, clientId=10, timeout=0.2)
    reasons = [e["reason"] for e in fake_gateway.events("sim.connection.close")]
    assert reasons == ["relay: gateway restarting"] * 2
    assert fake_gateway.wait_for(lambda: bool(fake_gateway.events("sim.fault.removed")), 2)
    IB().connect("127.0.0.1", fake_gateway.port, clientId=10, timeout=2).disconnect()


def test_an_unanswered_request_costs_the_connect_one_timeout(fake_gateway: FakeGateway) -> None:
    """reqCompletedOrders never answered: IB.connect logs the timeout and connects after T."""
    fake_gateway.add_fault(Unanswered("reqCompletedOrders"))
    ib = IB()
    start = time.monotonic()
    ib.connect("127.0.0.1", fake_gateway.port, clientId=10, timeout=0.5)
    took = time.monotonic() - start
    try:
        assert 0.45 <= took < 1.0
        assert fake_gateway.messages("reqCompletedOrders")
    finally:
        ib.disconnect()


def test_read_only_api_refuses_orders_with_321(fake_gateway: FakeGateway) -> None:
    """Read-only mode: the open-orders sync waits out T; each order is refused with 321."""
    fault = fake_gateway.add_fault(ReadOnlyApi())
    ib = IB()
    start = time.monotonic()
    ib.connect("127.0.0.1", fake_gateway.port, clientId=10, timeout=0.5)
    try:
        assert 0.45 <= time.monotonic() - start < 1.0  # no end marker for reqOpenOrders
        trade = ib.placeOrder(Stock("AAPL", "SMART", "USD"), LimitOrder("BUY", 1, 100.0))
        assert wait_until(ib, lambda: compat.order_status(trade) == "Cancelled")
        assert trade.log[-1].errorCode == 321
        assert fake_gateway.state.order_list() == []
        fake_gateway.remove_fault(fault)
        assert fake_gateway.faults == [fake_gateway.faults[0]]  # the scenario's only
    finally:
        ib.disconnect()
    again = IB().connect("127.0.0.1", fake_gateway.port, clientId=10, timeout=2, readonly=True)
    again.disconnect()


def test_client_id_busy_only_for_the_first_seconds(fake_gateway: FakeGateway) -> None:
    """326 while the old session is being torn down, then the same id works."""
    fake_gateway.add_fault(ClientIdBusyFor(10, seconds=0.3))
    ib, refused = connect_once_the_id_is_free(fake_gateway)
    try:
        assert refused >= 1
        assert [r.client_id for r in fake_gateway.messages("startApi")] == [10] * (refused + 1)
        assert fake_gateway.connected_client_ids() == [10]
    finally:
        ib.disconnect()


def test_outage_pushes_1100_holds_orders_then_restores(fake_gateway: FakeGateway) -> None:
    """An error pushed to every client; orders unacknowledged until the outage ends."""
    ib = IB().connect("127.0.0.1", fake_gateway.port, clientId=10, timeout=2)
    codes: list[int] = []
    ib.errorEvent += lambda req_id, code, *_: codes.append(code)
    try:
        outage = fake_gateway.add_fault(Outage())
        assert wait_until(ib, lambda: codes == [1100])
        trade = ib.placeOrder(Stock("AAPL", "SMART", "USD"), LimitOrder("BUY", 1, 100.0))
        assert fake_gateway.wait_for(lambda: bool(fake_gateway.messages("placeOrder")), 2)
        assert compat.order_status(trade) == "PendingSubmit"
        fake_gateway.remove_fault(outage)
        assert wait_until(ib, lambda: compat.order_status(trade) == "Submitted")
        assert codes == [1100, 1102]
    finally:
        ib.disconnect()


def test_informational_order_error_then_acceptance(fake_gateway: FakeGateway) -> None:
    """10349 then acceptance: ib_insync marks the trade Cancelled on the notice (and fires
    cancelledEvent), then Submitted when the acknowledgement follows (ib_async #191)."""
    fake_gateway.add_fault(OrderPreset())
    ib = IB().connect("127.0.0.1", fake_gateway.port, clientId=10, timeout=2)
    try:
        trade = ib.placeOrder(Stock("AAPL", "SMART", "USD"), LimitOrder("BUY", 1, 100.0))
        cancelled: list[object] = []
        trade.cancelledEvent += cancelled.append
        assert wait_until(ib, lambda: compat.order_status(trade) == "Submitted")
        assert [(e.status, e.errorCode) for e in trade.log] == [
            ("PendingSubmit", 0),
            ("Cancelled", 10349),
            ("Submitted", 0),
        ]
        assert cancelled == [trade]
        assert [o.status for o in fake_gateway.state.order_list()] == ["Submitted"]
    finally:
        ib.disconnect()


class SlowClock(Fault):
    """reqCurrentTime answered late; a request kind can be delayed alone."""

    def on_request(self, conn: Connection, request: Request) -> RequestAnswer:
        return Delay(0.3) if request.name == "reqCurrentTime" else PROCEED


def test_a_delayed_request_is_answered_late(fake_gateway: FakeGateway) -> None:
    """``Delay`` serves the request normally, only later."""
    ib = IB().connect("127.0.0.1", fake_gateway.port, clientId=10, timeout=2)
    try:
        fake_gateway.add_fault(SlowClock())
        start = time.monotonic()
        assert ib.reqCurrentTime().year >= 2024
        assert 0.3 <= time.monotonic() - start < 1.0
    finally:
        ib.disconnect()


def test_a_fault_that_is_not_installed_says_so() -> None:
    """``fault.gateway`` outside a gateway is a clear error, not an AttributeError."""
    with pytest.raises(RuntimeError, match="not installed"):
        _ = Unanswered("x").gateway


def test_adding_the_same_fault_twice_is_refused(fake_gateway: FakeGateway) -> None:
    """One fault instance is active at most once."""
    fault = fake_gateway.add_fault(OrderPreset())
    with pytest.raises(ValueError, match="already active"):
        fake_gateway.add_fault(fault)


def test_scenarios_and_added_faults_compose(fake_gateway: FakeGateway) -> None:
    """A named scenario keeps working under an added fault, and ``down`` closes the port
    whatever else is active."""
    fake_gateway.add_fault(Unanswered("reqCompletedOrders"))
    fake_gateway.down()
    assert not fake_gateway.listening
    fake_gateway.up()
    assert fake_gateway.listening
    assert [type(f).__name__ for f in fake_gateway.faults] == ["Normal", "Unanswered"]


# --------------------------------------------------------------------------- records
def _msg(i: int, name: str, client_id: int = 1) -> Received:
    fields = ("49", "1") if name == "reqCurrentTime" else ("8", "1", "1")
    return Received(i, client_id, int(fields[0]), name, fields, float(i), decode(fields))


def test_recorder_keeps_the_newest_and_its_indexes_agree() -> None:
    """The ring forgets the oldest; per-name and per-client views match a plain filter."""
    rec = Recorder(limit=10)
    for i in range(1000):
        rec.message(_msg(i, "reqCurrentTime" if i % 3 else "reqIds", client_id=i % 2))
        rec.event("a" if i % 2 else "b", i=i)
    everything = rec.messages()
    assert [r.conn_id for r in everything] == list(range(990, 1000))
    for name in ("reqCurrentTime", "reqIds", "nope"):
        assert rec.messages(name) == [r for r in everything if r.name == name]
        for cid in (0, 1):
            assert rec.messages(name, cid) == [
                r for r in everything if r.name == name and r.client_id == cid
            ]
    assert [e["i"] for e in rec.events("a")] == [991, 993, 995, 997, 999]
    rec.clear()
    assert rec.messages() == [] and rec.events() == [] and rec.messages("reqIds") == []


def test_record_limit_bounds_a_live_gateway() -> None:
    """``record_limit`` caps messages and events each; ``clear_records`` empties both."""
    with FakeGateway(record_limit=5) as gw:
        assert gw.record_limit == 5
        for _ in range(3):
            IB().connect("127.0.0.1", gw.port, clientId=10, timeout=2).disconnect()
        assert gw.wait_for(lambda: gw.connection_count() == 0, 2)
        assert len(gw.messages()) == 5 and len(gw.events()) == 5
        gw.clear_records()
        assert gw.messages() == [] and gw.events() == []
    with pytest.raises(ValueError, match="record_limit"):
        FakeGateway(record_limit=0)


def test_wait_for_sleeps_until_a_record_arrives() -> None:
    """No polling: the predicate runs once at the start and once per new record."""
    rec = Recorder()
    calls: list[float] = []

    def predicate() -> bool:
        calls.append(time.monotonic())
        return bool(rec.events("go"))

    assert rec.wait_for(predicate, 0.3) is False
    assert len(calls) == 1
    calls.clear()

    def noise_then_go() -> None:
        rec.event("noise")
        rec.event("go")

    timer = threading.Timer(0.1, noise_then_go)
    timer.start()
    try:
        assert rec.wait_for(predicate, 5) is True
    finally:
        timer.join()
    assert 2 <= len(calls) <= 3  # start, then after "noise" (unless both came at once)


def test_received_carries_the_decoded_request(fake_gateway: FakeGateway) -> None:
    """Each recorded message keeps the codec's typed record beside the raw fields."""
    ib = IB().connect("127.0.0.1", fake_gateway.port, clientId=7, timeout=2)
    ib.disconnect()
    start = fake_gateway.messages("startApi")[0]
    assert isinstance(start.request, StartApi) and start.request.client_id == 7

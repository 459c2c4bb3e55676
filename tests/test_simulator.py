"""The simulated gateway, exercised by the real client library over real sockets.

Every scenario asserts what the client sees (exception type) and how long it took;
timeouts are short (0.5-1 s) so that the whole file runs in seconds.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
from client_helpers import SYNC_REQUESTS, wait_until
from loadslack import Load

from ibkr_resilience._connect import compat
from ibkr_resilience._connect.compat import IB
from ibkr_resilience.simulator import SERVER_VERSION, FakeGateway, Scenario, SimPosition

Stock = compat.Stock
MarketOrder = compat.MarketOrder
LimitOrder = compat.LimitOrder
StopOrder = compat.StopOrder


def timed_connect(port: int, timeout: float, client_id: int = 10) -> tuple[object, float, IB]:
    """Connect once; return (exception or None, seconds taken, the IB instance)."""
    ib = IB()
    start = time.monotonic()
    try:
        ib.connect("127.0.0.1", port, clientId=client_id, timeout=timeout)
    except BaseException as exc:
        return exc, time.monotonic() - start, ib
    return None, time.monotonic() - start, ib


@pytest.fixture
def ib_conn(fake_gateway: FakeGateway) -> Iterator[IB]:
    ib = IB()
    ib.connect("127.0.0.1", fake_gateway.port, clientId=10, timeout=2)
    yield ib
    ib.disconnect()


# --------------------------------------------------------------------------- happy path
def test_handshake_and_initial_sync(fake_gateway: FakeGateway) -> None:
    load = Load()
    exc, took, ib = timed_connect(fake_gateway.port, timeout=2)
    try:
        assert exc is None
        assert ib.isConnected()
        assert ib.client.serverVersion() == SERVER_VERSION
        assert ib.managedAccounts() == ["DU1234567"]
        assert took < load.slack(0.5), load
        names = [r.name for r in fake_gateway.messages()]
        assert names[: len(SYNC_REQUESTS)] == SYNC_REQUESTS
        start_api = fake_gateway.messages("startApi")[0]
        assert start_api.fields[2] == "10"
        assert fake_gateway.connected_client_ids() == [10]
    finally:
        ib.disconnect()


def test_positions_and_accounts_are_served() -> None:
    positions = [
        SimPosition("DU1234567", "AAPL", 100, 150.0),
        SimPosition("DU1234567", "MSFT", -5, 400.0),
    ]
    with FakeGateway(accounts=["DU1234567"], positions=positions) as gw:
        ib = IB().connect("127.0.0.1", gw.port, clientId=3, timeout=2)
        try:
            got = {p.contract.symbol: (p.position, p.avgCost) for p in ib.positions()}
            assert got == {"AAPL": (100.0, 150.0), "MSFT": (-5.0, 400.0)}
            assert {v.tag for v in ib.accountValues()} >= {"NetLiquidation", "AccountCode"}
            assert {p.contract.symbol for p in ib.portfolio()} == {"AAPL", "MSFT"}
            assert ib.reqCurrentTime().year >= 2024
        finally:
            ib.disconnect()


def test_live_account_can_be_served() -> None:
    with FakeGateway(accounts=["U7654321"]) as gw:
        ib = IB().connect("127.0.0.1", gw.port, clientId=1, timeout=2)
        try:
            assert ib.managedAccounts() == ["U7654321"]
        finally:
            ib.disconnect()


# --------------------------------------------------------------------------- orders
def test_market_order_fills_with_order_ref(fake_gateway: FakeGateway, ib_conn: IB) -> None:
    contract = Stock("AAPL", "SMART", "USD")
    assert ib_conn.qualifyContracts(contract) == [contract]
    assert contract.conId == 265598
    trade = ib_conn.placeOrder(contract, MarketOrder("BUY", 10, orderRef="plan-a:1"))
    assert wait_until(ib_conn, lambda: compat.order_status(trade) == "Filled")
    assert [f.execution.orderRef for f in trade.fills] == ["plan-a:1"]
    assert trade.fills[0].execution.shares == 10
    assert wait_until(ib_conn, lambda: any(p.position == 10 for p in ib_conn.positions()))
    placed = fake_gateway.messages("placeOrder")[0]
    assert placed.fields[3] == "AAPL" and placed.fields[16] == "BUY"
    assert placed.fields[26] == "plan-a:1"
    order = fake_gateway.state.order_list()[0]
    assert (order.symbol, order.action, order.quantity) == ("AAPL", "BUY", 10)
    assert order.order_type == "MKT"


def test_limit_order_submitted_and_cancelled(fake_gateway: FakeGateway, ib_conn: IB) -> None:
    contract = Stock("MSFT", "SMART", "USD")
    ib_conn.qualifyContracts(contract)
    trade = ib_conn.placeOrder(contract, LimitOrder("BUY", 5, 100.5, tif="GTC", orderRef="r2"))
    assert wait_until(ib_conn, lambda: compat.order_status(trade) == "Submitted")
    recorded = fake_gateway.state.order_list()[0]
    assert (recorded.lmt_price, recorded.tif, recorded.order_ref) == (100.5, "GTC", "r2")
    ib_conn.cancelOrder(trade.order)
    assert wait_until(ib_conn, lambda: compat.order_status(trade) == "Cancelled")
    assert fake_gateway.state.open_orders() == []


def test_bracket_children_wait_for_parent(fake_gateway: FakeGateway, ib_conn: IB) -> None:
    contract = Stock("SPY", "SMART", "USD")
    ib_conn.qualifyContracts(contract)
    bracket = ib_conn.bracketOrder("BUY", 10, 500.0, takeProfitPrice=600.0, stopLossPrice=450.0)
    trades = [ib_conn.placeOrder(contract, o) for o in bracket]
    assert wait_until(
        ib_conn,
        lambda: (
            [compat.order_status(t) for t in trades]
            == ["Submitted", "PreSubmitted", "PreSubmitted"]
        ),
    )
    orders = {o.order_id: o for o in fake_gateway.state.order_list()}
    parent_id = bracket[0].orderId
    assert [orders[o.orderId].parent_id for o in bracket] == [0, parent_id, parent_id]
    assert [orders[o.orderId].transmit for o in bracket] == [True, True, True]
    ib_conn.reqGlobalCancel()
    assert wait_until(ib_conn, lambda: all(compat.order_status(t) == "Cancelled" for t in trades))


def test_unknown_symbol_gets_no_security_definition(ib_conn: IB) -> None:
    errors: list[int] = []
    ib_conn.errorEvent += lambda req_id, code, *_: errors.append(code)
    assert compat.qualified(ib_conn.qualifyContracts(Stock("NOPE", "SMART", "USD"))) == []
    assert errors == [200]


def test_orders_and_fills_are_seen_by_a_later_connection(fake_gateway: FakeGateway) -> None:
    ib = IB().connect("127.0.0.1", fake_gateway.port, clientId=10, timeout=2)
    contract = Stock("IBM", "SMART", "USD")
    ib.qualifyContracts(contract)
    filled = ib.placeOrder(contract, MarketOrder("BUY", 3, orderRef="plan:1"))
    resting = ib.placeOrder(contract, LimitOrder("SELL", 3, 999.0, orderRef="plan:2"))
    assert wait_until(
        ib,
        lambda: (
            compat.order_status(filled) == "Filled" and compat.order_status(resting) == "Submitted"
        ),
    )
    ib.disconnect()

    later = IB().connect("127.0.0.1", fake_gateway.port, clientId=10, timeout=2)
    try:
        assert [t.order.orderRef for t in later.openTrades()] == ["plan:2"]
        assert [f.execution.orderRef for f in later.fills()] == ["plan:1"]
        other = IB().connect("127.0.0.1", fake_gateway.port, clientId=11, timeout=2)
        try:
            assert other.openTrades() == []  # reqOpenOrders: own client id only
            assert [t.order.orderRef for t in other.reqAllOpenOrders()] == ["plan:2"]
        finally:
            other.disconnect()
    finally:
        later.disconnect()


def test_reject_orders(fake_gateway: FakeGateway, ib_conn: IB) -> None:
    fake_gateway.reject_orders()
    contract = Stock("AAPL", "SMART", "USD")
    ib_conn.qualifyContracts(contract)
    trade = ib_conn.placeOrder(contract, MarketOrder("BUY", 1))
    assert wait_until(ib_conn, lambda: compat.order_status(trade) == "Cancelled")
    assert trade.log[-1].errorCode == 201
    assert fake_gateway.state.executions == []


# --------------------------------------------------------------------------- faults
def test_down_is_refused_at_once(fake_gateway: FakeGateway) -> None:
    fake_gateway.down()
    exc, took, _ = timed_connect(fake_gateway.port, timeout=2)
    assert isinstance(exc, ConnectionRefusedError)
    assert took < 2 / 4  # at once: not the 2 s bound
    fake_gateway.up()
    exc, _, ib = timed_connect(fake_gateway.port, timeout=2)
    assert exc is None
    ib.disconnect()


def test_hang_times_out(fake_gateway: FakeGateway) -> None:
    fake_gateway.hang()
    exc, took, _ = timed_connect(fake_gateway.port, timeout=0.5)
    assert isinstance(exc, TimeoutError)
    assert 0.45 <= took < 1.0
    assert fake_gateway.messages() == []  # no handshake reply, so no startApi either


def test_close_on_accept_times_out(fake_gateway: FakeGateway) -> None:
    fake_gateway.close_on_accept()
    exc, took, _ = timed_connect(fake_gateway.port, timeout=0.5)
    # ib_insync does not notice the close before the handshake: it waits out the timeout.
    assert isinstance(exc, TimeoutError)
    assert 0.45 <= took < 1.0
    assert fake_gateway.wait_for(lambda: bool(fake_gateway.events("sim.connection.close")), 5)
    assert fake_gateway.events("sim.connection.close")[0]["reason"] == "close_on_accept"


def test_not_logged_in_times_out_after_handshake(fake_gateway: FakeGateway) -> None:
    fake_gateway.not_logged_in()
    exc, took, _ = timed_connect(fake_gateway.port, timeout=0.5)
    assert isinstance(exc, TimeoutError)
    assert 0.45 <= took < 1.0
    assert [r.name for r in fake_gateway.messages()] == ["startApi"]


def test_client_id_in_use_scenario(fake_gateway: FakeGateway) -> None:
    fake_gateway.client_id_in_use()
    ib = IB()
    errors: list[int] = []
    api_errors: list[str] = []
    ib.errorEvent += lambda req_id, code, *_: errors.append(code)
    ib.client.apiError += api_errors.append
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        ib.connect("127.0.0.1", fake_gateway.port, clientId=10, timeout=0.5)
    took = time.monotonic() - start
    # ib_insync sees 326 and the close at once, yet only gives up at the timeout.
    assert errors == [326]
    assert any("already in use" in e for e in api_errors)
    assert 0.45 <= took < 1.0


def test_second_connection_with_same_client_id_is_refused(
    fake_gateway: FakeGateway, ib_conn: IB
) -> None:
    exc, _, _ = timed_connect(fake_gateway.port, timeout=0.5, client_id=10)
    assert isinstance(exc, TimeoutError)
    assert fake_gateway.events("sim.client_id_in_use")[0]["client_id"] == 10
    assert ib_conn.isConnected()  # the holder keeps its session
    assert fake_gateway.connected_client_ids() == [10]


def test_stall_sync_times_out_after_api_start(
    fake_gateway: FakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    fake_gateway.stall_sync()
    with caplog.at_level(logging.ERROR, logger=compat.IB_LOGGER):
        exc, took, ib = timed_connect(fake_gateway.port, timeout=0.5)
    ib.disconnect()  # ib_async returns the half-synced session
    # The concurrent sync requests time out (only logged), then the executions request
    # times out: two timeouts in all. ib_insync raises TimeoutError at the second,
    # ib_async only logs it too (unless raiseSyncErrors).
    assert exc is None or isinstance(exc, TimeoutError)
    assert 0.95 <= took < 1.5
    timed_out = [r.getMessage() for r in caplog.records if r.name == compat.IB_LOGGER]
    assert "positions request timed out" in timed_out
    assert "executions request timed out" in timed_out or isinstance(exc, TimeoutError)
    assert fake_gateway.events("sim.api_started")


def test_slow_replies_delay_but_connect(fake_gateway: FakeGateway) -> None:
    fake_gateway.slow(0.1)
    exc, took, ib = timed_connect(fake_gateway.port, timeout=2)
    assert exc is None
    # handshake, API start, concurrent sync, executions: four delayed round trips
    assert 0.4 <= took < 1.0
    ib.disconnect()


def test_drop_after_cuts_the_session(fake_gateway: FakeGateway) -> None:
    fake_gateway.drop_after(0.3)
    load = Load()
    exc, _, ib = timed_connect(fake_gateway.port, timeout=2)
    assert exc is None
    dropped: list[float] = []
    ib.disconnectedEvent += lambda: dropped.append(time.monotonic())
    start = time.monotonic()
    # The drop interrupts whatever the client is waiting on with ConnectionError.
    with pytest.raises(ConnectionError, match="Socket disconnect"):
        ib.sleep(10)  # a hard stop: the drop ends it
    assert dropped and dropped[0] - start < 0.3 + load.slack(0.2), load
    assert not ib.isConnected()
    with pytest.raises(ConnectionError):
        ib.reqCurrentTime()


def test_restart_then_reconnect_keeps_open_orders(fake_gateway: FakeGateway) -> None:
    ib = IB().connect("127.0.0.1", fake_gateway.port, clientId=10, timeout=2)
    contract = Stock("AAPL", "SMART", "USD")
    ib.qualifyContracts(contract)
    trade = ib.placeOrder(contract, LimitOrder("BUY", 1, 150.0, orderRef="before-restart"))
    assert wait_until(ib, lambda: compat.order_status(trade) == "Submitted")

    restarted_at = time.monotonic()
    fake_gateway.restart(1)
    with pytest.raises(ConnectionError):  # the restart cuts the session
        ib.sleep(10)  # a hard stop: the cut ends it
    assert not ib.isConnected()
    refused = 0
    while True:
        exc, _, again = timed_connect(fake_gateway.port, timeout=1)
        if exc is None:
            break
        assert isinstance(exc, ConnectionRefusedError)
        refused += 1
        time.sleep(0.05)  # a client's retry interval, not a race guard
    took = time.monotonic() - restarted_at
    try:
        assert refused >= 1
        assert 1.0 <= took < 1.5
        assert [t.order.orderRef for t in again.openTrades()] == ["before-restart"]
    finally:
        again.disconnect()


def test_scenario_parsing() -> None:
    assert Scenario.parse("restart:20") == Scenario("restart", 20.0)
    assert str(Scenario.parse("hang")) == "hang"
    for bad in ("restart", "hang:3", "nope", "slow:abc", "slow:-1", "slow:inf"):
        with pytest.raises(ValueError):
            Scenario.parse(bad)


# --------------------------------------------------------------------------- robustness
def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_two_hundred_cycles_leak_nothing(fake_gateway: FakeGateway) -> None:
    # one warm-up cycle so that lazily created loop resources are counted in the baseline
    IB().connect("127.0.0.1", fake_gateway.port, clientId=10, timeout=2).disconnect()
    assert fake_gateway.wait_for(lambda: fake_gateway.connection_count() == 0, 2)
    IB().run(asyncio.sleep(0))  # let the client loop finish closing its transport
    gc.collect()  # earlier tests' garbage (files, pipes) must not be in the baseline
    fds, threads = _open_fds(), threading.active_count()
    for _ in range(200):
        ib = IB()
        ib.connect("127.0.0.1", fake_gateway.port, clientId=10, timeout=2)
        ib.disconnect()
    assert fake_gateway.wait_for(lambda: fake_gateway.connection_count() == 0, 2)
    IB().run(asyncio.sleep(0))
    assert _open_fds() == fds
    assert threading.active_count() == threads
    assert len(fake_gateway.events("sim.connection.close")) == 201


def _raw(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    return s


def _frame(text: str) -> bytes:
    body = text.encode()
    return struct.pack(">I", len(body)) + body


def _handshake(s: socket.socket) -> None:
    s.sendall(b"API\0" + _frame("v157..176"))
    size = struct.unpack(">I", s.recv(4))[0]
    s.recv(size)


def _closed_by_peer(s: socket.socket) -> bool:
    s.settimeout(2)
    try:
        while s.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return True


@pytest.mark.parametrize(
    "payload, half_close, reason",
    [
        (b"GET / HTTP/1.1\r\n\r\n", False, "bad greeting"),
        (b"API\0" + struct.pack(">I", 100) + b"v157..176", True, "stream ended after"),
        (b"API\0" + struct.pack(">I", 100) + b"v157..176", False, "none or part arrived"),
        (b"API\0" + struct.pack(">I", 1 << 30), False, "out of range"),
    ],
    ids=["garbage", "short-then-eof", "short-then-silence", "huge-prefix"],
)
def test_malformed_input_closes_only_that_connection(
    payload: bytes, half_close: bool, reason: str
) -> None:
    with FakeGateway(partial_message_timeout=0.3) as gw:
        ib = IB().connect("127.0.0.1", gw.port, clientId=1, timeout=2)
        try:
            s = _raw(gw.port)
            s.sendall(payload)
            if half_close:
                s.shutdown(socket.SHUT_WR)
            assert _closed_by_peer(s)
            s.close()
            assert gw.wait_for(lambda: bool(gw.events("sim.malformed")), 2)
            assert reason in gw.events("sim.malformed")[0]["error"]
            assert ib.reqCurrentTime().year >= 2024  # others are still served
        finally:
            ib.disconnect()


def test_unknown_message_id_closes_connection(fake_gateway: FakeGateway, ib_conn: IB) -> None:
    s = _raw(fake_gateway.port)
    _handshake(s)
    s.sendall(_frame("999\x001\x00"))
    assert _closed_by_peer(s)
    s.close()
    assert fake_gateway.wait_for(lambda: bool(fake_gateway.events("sim.malformed")), 2)
    assert "unknown message id 999" in fake_gateway.events("sim.malformed")[0]["error"]
    assert ib_conn.reqCurrentTime().year >= 2024


def test_hold_orders_leaves_orders_unanswered_until_released(
    fake_gateway: FakeGateway, ib_conn: IB
) -> None:
    fake_gateway.hold_orders(after=1)
    aapl = Stock("AAPL", "SMART", "USD")
    first = ib_conn.placeOrder(aapl, LimitOrder("BUY", 1, 100.0, orderRef="first"))
    second = ib_conn.placeOrder(aapl, LimitOrder("BUY", 1, 101.0, orderRef="second"))
    assert fake_gateway.wait_for(lambda: len(fake_gateway.events("sim.order_held")) == 1, 2)
    assert wait_until(ib_conn, lambda: compat.order_status(first) == "Submitted")
    assert [m.fields[26] for m in fake_gateway.messages("placeOrder")] == ["first", "second"]
    assert [o.order_ref for o in fake_gateway.state.order_list()] == ["first"]
    assert compat.order_status(second) == "PendingSubmit"

    assert fake_gateway.release_orders() == 1
    assert wait_until(ib_conn, lambda: compat.order_status(second) == "Submitted")
    third = ib_conn.placeOrder(aapl, LimitOrder("BUY", 1, 102.0, orderRef="third"))
    assert wait_until(ib_conn, lambda: compat.order_status(third) == "Submitted")
    assert fake_gateway.release_orders() == 0
    with pytest.raises(ValueError, match="after"):
        fake_gateway.hold_orders(after=-1)


def test_a_down_gateway_keeps_its_port(fake_gateway: FakeGateway) -> None:
    """While down, connections are refused and no other process can be given the port
    (on a busy machine another test's simulator once was, and a reconnecting client met
    that one); when it listens again, it is on the same port."""
    port = fake_gateway.port
    fake_gateway.down()
    assert not fake_gateway.listening
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    # A plain bind is refused; an ephemeral one (port 0, as every simulator and client
    # asks) never picks a port that has a bound socket, so it cannot be handed this one.
    with socket.socket() as other, pytest.raises(OSError) as taken:
        other.bind(("127.0.0.1", port))
    assert taken.value.errno == errno.EADDRINUSE
    fake_gateway.up()
    assert fake_gateway.wait_listening(5) and fake_gateway.port == port
    socket.create_connection(("127.0.0.1", port), timeout=2).close()

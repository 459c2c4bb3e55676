"""The named incidents of real gateways (simulator/_incidents.py), driven by the real
ib_insync client: what the client sees, and how long it takes, for each."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from client_helpers import connect_once_the_id_is_free, wait_until

from ibkr_resilience._connect import compat
from ibkr_resilience._connect.compat import IB
from ibkr_resilience.simulator import FakeGateway, SimOrder

Stock = compat.Stock
LimitOrder = compat.LimitOrder
REPO = Path(__file__).resolve().parents[1]


def seed_other_clients_order(gw: FakeGateway, order_id: int) -> None:
    """Another client's (client 0, a manual TWS order) working IBM order ``order_id``."""
    gw.state.add_order(
        SimOrder(
            order_id=order_id,
            perm_id=gw.state.new_perm_id(),
            client_id=0,
            account="DU1234567",
            symbol="IBM",
            sec_type="STK",
            exchange="SMART",
            currency="USD",
            con_id=8314,
            action="BUY",
            quantity=1,
            order_type="LMT",
            lmt_price=100.0,
            aux_price=None,
            tif="DAY",
            order_ref="manual",
            parent_id=0,
            transmit=True,
            status="Submitted",
        )
    )


def connect(gw: FakeGateway, client_id: int = 10, timeout: float = 2.0) -> IB:
    ib = IB()
    ib.connect("127.0.0.1", gw.port, clientId=client_id, timeout=timeout)
    return ib


def aapl_limit(ib: IB, order: LimitOrder | None = None) -> compat.Trade:
    return ib.placeOrder(Stock("AAPL", "SMART", "USD"), order or LimitOrder("BUY", 1, 100.0))


# --------------------------------------------------------------------------- relay
def test_relay_restart_accepts_and_closes_then_serves(fake_gateway: FakeGateway) -> None:
    """Never refused: accepted and closed before any byte (ib_insync times out), open
    connections cut; after N s the same port serves."""
    gw = fake_gateway
    before = socket.create_connection(("127.0.0.1", gw.port), timeout=2)
    assert gw.wait_for(lambda: gw.connection_count() == 1, 2)
    gw.relay_restart(1.0)
    assert before.recv(1) == b""
    before.close()
    with pytest.raises(TimeoutError):
        connect(gw, timeout=0.2)
    reasons = [e["reason"] for e in gw.events("sim.connection.close")]
    assert reasons == ["relay: gateway behind is restarting"] * 2
    assert gw.listening
    assert gw.wait_for(lambda: bool(gw.events("sim.restarted")), 3)
    connect(gw).disconnect()


def test_relay_front_keeps_the_port_open_while_the_gateway_is_down() -> None:
    """``FakeGateway(relay=True)``: ``down``/``restart`` never refuse; each connection is
    accepted and closed at once, and the gateway serves again when it is back."""
    with FakeGateway(relay=True) as gw:
        gw.down()
        assert gw.listening and gw.relay
        with pytest.raises(TimeoutError):
            connect(gw, timeout=0.2)
        closed = gw.events("sim.connection.close")[-1]
        assert closed["reason"] == "relay: gateway behind unreachable"
        gw.restart(0.3)
        assert gw.wait_for(lambda: bool(gw.events("sim.restarted")), 3)
        connect(gw).disconnect()


def test_cli_relay_flag() -> None:
    """``python -m ibkr_resilience.simulator --relay --scenario down``: accepted, closed."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ibkr_resilience.simulator",
            "--port",
            "0",
            "--relay",
            "--scenario",
            "down",
        ],
        cwd=REPO,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={"PATH": "/usr/bin:/bin", "IBKR_LOG_FORMAT": "json"},
    )
    try:
        assert proc.stderr is not None
        port = None
        for line in proc.stderr:
            found = re.search(r"simulated IB Gateway on 127\.0\.0\.1:(\d+)", line)
            if found:
                port = int(found.group(1))
                break
        assert port is not None
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)  # not refused
        sock.settimeout(5)
        assert sock.recv(1) == b""  # closed at once
        sock.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


# --------------------------------------------------------------------------- connect-time
def test_client_id_in_use_for_seconds(fake_gateway: FakeGateway) -> None:
    """326 for the first S seconds after the scenario starts, then the same id works."""
    fake_gateway.client_id_in_use_for(0.3)
    ib, refused = connect_once_the_id_is_free(fake_gateway)
    try:
        assert refused >= 1
        assert len(fake_gateway.events("sim.client_id_in_use")) == refused
        assert fake_gateway.connected_client_ids() == [10]
    finally:
        ib.disconnect()


def test_no_completed_orders_costs_the_connect_one_timeout(fake_gateway: FakeGateway) -> None:
    """Msg 99 never answered: ib_insync logs the timeout and connects after T."""
    fake_gateway.set_scenario("no_completed_orders")
    start = time.monotonic()
    ib = connect(fake_gateway, timeout=0.5)
    try:
        assert 0.45 <= time.monotonic() - start < 1.5
        assert fake_gateway.messages("reqCompletedOrders")
        assert ib.reqCurrentTime().year >= 2024  # everything else is answered
    finally:
        ib.disconnect()


# --------------------------------------------------------------------------- read-only
def test_read_only_refuses_the_sync_and_every_order_with_321(fake_gateway: FakeGateway) -> None:
    """The open-orders sync gets 321 and no end marker (connect waits T); each order
    and cancel gets 321; nothing is stored."""
    fake_gateway.set_scenario("read_only")
    start = time.monotonic()
    ib = connect(fake_gateway, timeout=0.5)
    try:
        assert 0.45 <= time.monotonic() - start < 1.5
        trade = aapl_limit(ib)
        assert wait_until(ib, lambda: compat.order_status(trade) == "Cancelled")
        code, message = compat.order_errors(trade)[-1]
        assert code == 321 and "Read-Only mode" in message
        assert fake_gateway.state.order_list() == []
    finally:
        ib.disconnect()


def test_read_only_after_orders_serves_the_first_ones(fake_gateway: FakeGateway) -> None:
    """``read_only(after_orders=1)``: the connect and the first order are served."""
    fake_gateway.read_only(after_orders=1)
    ib = connect(fake_gateway, timeout=2)
    try:
        first = aapl_limit(ib)
        assert wait_until(ib, lambda: compat.order_status(first) == "Submitted")
        second = aapl_limit(ib)
        assert wait_until(ib, lambda: compat.order_status(second) == "Cancelled")
        assert compat.order_errors(second)[-1][0] == 321
        codes: list[int] = []
        ib.errorEvent += lambda req_id, code, *_: codes.append(code)
        ib.cancelOrder(first.order)
        assert wait_until(ib, lambda: codes == [321])
    finally:
        ib.disconnect()


# --------------------------------------------------------------------------- IB offline
def test_ib_offline_pushes_1100_holds_orders_then_1102(fake_gateway: FakeGateway) -> None:
    """Socket up, 1100 to a connected client and to a new one after its API starts;
    orders unacknowledged until 1102, then served."""
    gw = fake_gateway
    ib = connect(gw)
    codes: list[int] = []
    ib.errorEvent += lambda req_id, code, *_: codes.append(code)
    try:
        gw.ib_offline(60)
        assert wait_until(ib, lambda: codes == [1100])
        late = IB()
        late_codes: list[int] = []
        late.errorEvent += lambda req_id, code, *_: late_codes.append(code)
        late.connect("127.0.0.1", gw.port, clientId=11, timeout=2)
        try:
            assert wait_until(late, lambda: late_codes == [1100])
        finally:
            late.disconnect()
        trade = aapl_limit(ib)
        assert gw.wait_for(lambda: bool(gw.events("sim.order_held")), 2)
        assert compat.order_status(trade) == "PendingSubmit"
        gw.normal()  # the outage ends (or after its seconds)
        assert wait_until(ib, lambda: compat.order_status(trade) == "Submitted")
        assert codes == [1100, 1102]
    finally:
        ib.disconnect()


def test_ib_offline_ends_by_itself(fake_gateway: FakeGateway) -> None:
    ib = connect(fake_gateway)
    codes: list[int] = []
    ib.errorEvent += lambda req_id, code, *_: codes.append(code)
    try:
        fake_gateway.set_scenario("ib_offline:0.3")
        assert wait_until(ib, lambda: codes == [1100, 1102], timeout=3)
        assert str(fake_gateway.scenario) == "normal"
    finally:
        ib.disconnect()


# --------------------------------------------------------------------------- silent
def test_silent_answers_nothing_and_keeps_the_socket(fake_gateway: FakeGateway) -> None:
    """No FIN, no RST, no disconnect event: a request just times out."""
    ib = connect(fake_gateway)
    lost: list[object] = []
    ib.disconnectedEvent += lambda: lost.append(True)
    try:
        fake_gateway.silent()
        with pytest.raises(TimeoutError):
            ib.run(asyncio.wait_for(ib.reqCurrentTimeAsync(), 0.3))
        assert ib.isConnected() and lost == []
        assert fake_gateway.connection_count() == 1
        with pytest.raises(TimeoutError):
            connect(fake_gateway, client_id=11, timeout=0.3)  # new ones: no handshake
    finally:
        ib.disconnect()


def test_silent_after_orders(fake_gateway: FakeGateway) -> None:
    """``silent_after_orders:1``: the first order is served, the second is not."""
    fake_gateway.set_scenario("silent_after_orders:1")
    ib = connect(fake_gateway)
    try:
        first = aapl_limit(ib)
        assert wait_until(ib, lambda: first.orderStatus.status == "Submitted")
        second = aapl_limit(ib)
        assert fake_gateway.wait_for(lambda: bool(fake_gateway.events("sim.silent")), 2)
        assert fake_gateway.events("sim.silent")[0]["order_id"] == str(second.order.orderId)
        assert not wait_until(ib, lambda: second.orderStatus.status != "PendingSubmit", 0.3)
    finally:
        ib.disconnect()


# --------------------------------------------------------------------------- notices
@pytest.mark.parametrize(
    ("code", "log"),
    [
        (10349, [("PendingSubmit", 0), ("Cancelled", 10349), ("Submitted", 0)]),
        (399, [("PendingSubmit", 0), ("Submitted", 0)]),  # a warning to ib_insync
        (2109, [("PendingSubmit", 0), ("Submitted", 0)]),
    ],
)
def test_order_notices_then_acceptance(
    fake_gateway: FakeGateway, code: int, log: list[tuple[str, int]]
) -> None:
    """The notice arrives first; ib_insync 0.9.86 marks the order Cancelled on 10349
    (ib_async #191), then Submitted when the acknowledgement follows."""
    fake_gateway.order_notices(code)
    ib = connect(fake_gateway)
    codes: list[int] = []
    ib.errorEvent += lambda req_id, c, *_: codes.append(c)
    try:
        trade = aapl_limit(ib)
        assert wait_until(ib, lambda: compat.order_status(trade) == "Submitted")
        if compat.LIBRARY == "ib_insync":  # how the client keeps its log is its own affair
            assert [(e.status, e.errorCode) for e in trade.log] == log
        assert codes == [code]
        assert [o.status for o in fake_gateway.state.order_list()] == ["Submitted"]
    finally:
        ib.disconnect()


# --------------------------------------------------------------------------- order ids
def test_new_order_id_at_or_below_a_reported_one_is_a_duplicate(
    fake_gateway: FakeGateway,
) -> None:
    """TWS API docs: after reqAllOpenOrders, new ids must exceed every id returned;
    otherwise error 103 "Duplicate order id". Modifying an own order is still allowed."""
    gw = fake_gateway
    seed_other_clients_order(gw, 100)
    gw.state.next_order_id = 1  # TWS's id sequence for client 10 is its own
    ib = connect(gw)
    try:
        assert [t.order.orderId for t in ib.reqAllOpenOrders()] == [100]
        low = LimitOrder("BUY", 1, 100.0)
        low.orderId = 50
        trade = aapl_limit(ib, low)
        assert wait_until(ib, lambda: compat.order_status(trade) == "Cancelled")
        assert compat.order_errors(trade)[-1][0] == 103
        ok = aapl_limit(ib)  # ib_insync's own id, already raised past 100
        assert ok.order.orderId > 100
        assert wait_until(ib, lambda: ok.orderStatus.status == "Submitted")
        ok.order.lmtPrice = 101.0
        ib.placeOrder(ok.contract, ok.order)  # a modification: same id, no 103
        assert gw.wait_for(lambda: len(gw.messages("placeOrder")) == 3, 2)
        assert wait_until(
            ib,
            lambda: (
                [o.lmt_price for o in gw.state.order_list() if o.order_id == ok.order.orderId]
                == [101.0]
            ),
        )
        assert all(e.errorCode != 103 for e in ok.log)
    finally:
        ib.disconnect()

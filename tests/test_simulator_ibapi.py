"""Cross-check with a client we did not write: the official IBKR ``ibapi`` (ibapi-stable).

If the simulator's handshake or message layouts were only right for ib_insync's
decoder, the official client would fail here.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from client_helpers import SYNC_REQUESTS

from ibkr_resilience._connect import compat
from ibkr_resilience._connect.compat import IB
from ibkr_resilience.simulator import SERVER_VERSION, FakeGateway, SimPosition

ibapi_client = pytest.importorskip("ibapi.client", reason="ibapi-stable is not installed")
ibapi_wrapper = pytest.importorskip("ibapi.wrapper")
from ibapi.execution import ExecutionFilter  # noqa: E402


class Recorder(ibapi_wrapper.EWrapper):  # type: ignore[misc, name-defined]
    def __init__(self) -> None:
        super().__init__()
        self.events: dict[str, threading.Event] = {}
        self.data: dict[str, list[Any]] = {}
        self.errors: list[tuple[int, int, str]] = []

    def _hit(self, name: str, *value: Any) -> None:
        self.data.setdefault(name, []).append(value)
        self.events.setdefault(name, threading.Event()).set()

    def wait(self, name: str, timeout: float = 3.0) -> bool:
        return self.events.setdefault(name, threading.Event()).wait(timeout)

    # the callbacks the initial sync produces
    def nextValidId(self, orderId: int) -> None:
        self._hit("nextValidId", orderId)

    def managedAccounts(self, accountsList: str) -> None:
        self._hit("managedAccounts", accountsList)

    def position(self, account: str, contract: Any, position: Any, avgCost: float) -> None:
        self._hit("position", account, contract.symbol, float(position), avgCost)

    def positionEnd(self) -> None:
        self._hit("positionEnd")

    def openOrder(self, orderId: int, contract: Any, order: Any, orderState: Any) -> None:
        self._hit(
            "openOrder",
            orderId,
            contract.symbol,
            order.action,
            float(order.totalQuantity),
            order.orderRef,
            orderState.status,
        )

    def openOrderEnd(self) -> None:
        self._hit("openOrderEnd")

    def completedOrdersEnd(self) -> None:
        self._hit("completedOrdersEnd")

    def updateAccountValue(self, key: str, val: str, currency: str, accountName: str) -> None:
        self._hit("accountValue", key, accountName)

    def accountDownloadEnd(self, accountName: str) -> None:
        self._hit("accountDownloadEnd", accountName)

    def accountUpdateMultiEnd(self, reqId: int) -> None:
        self._hit("accountUpdateMultiEnd", reqId)

    def execDetails(self, reqId: int, contract: Any, execution: Any) -> None:
        self._hit("execDetails", contract.symbol, execution.orderRef, float(execution.shares))

    def execDetailsEnd(self, reqId: int) -> None:
        self._hit("execDetailsEnd", reqId)

    def error(self, reqId: int, *args: Any) -> None:  # signature differs across versions
        code = [a for a in args if isinstance(a, int)][-1]
        self.errors.append((reqId, code, " ".join(str(a) for a in args)))


def _seed_orders(port: int) -> None:
    """Place one filled and one resting order with the client library, so the sync has content."""
    ib = IB().connect("127.0.0.1", port, clientId=10, timeout=2)
    try:
        c = compat.Stock("AAPL", "SMART", "USD")
        ib.qualifyContracts(c)
        filled = ib.placeOrder(c, compat.MarketOrder("BUY", 2, orderRef="x:1"))
        resting = ib.placeOrder(c, compat.LimitOrder("BUY", 3, 100.0, orderRef="x:2"))
        while not (compat.is_done(filled) and compat.order_status(resting) == "Submitted"):
            ib.waitOnUpdate(timeout=1)
    finally:
        ib.disconnect()


def test_official_ibapi_client_completes_handshake_and_sync() -> None:
    positions = [SimPosition("DU1234567", "MSFT", 7, 300.0)]
    with FakeGateway(positions=positions) as gw:
        _seed_orders(gw.port)
        assert gw.wait_for(lambda: gw.connection_count() == 0, 2)

        rec = Recorder()
        app = ibapi_client.EClient(rec)
        app.connect("127.0.0.1", gw.port, 10)
        thread = threading.Thread(target=app.run, daemon=True)
        thread.start()
        try:
            assert app.serverVersion() == SERVER_VERSION
            assert rec.wait("nextValidId") and rec.wait("managedAccounts")
            assert rec.data["managedAccounts"] == [("DU1234567",)]

            # the same initial sync IB.connect() performs
            app.reqPositions()
            app.reqOpenOrders()
            app.reqCompletedOrders(False)
            app.reqAccountUpdates(True, "DU1234567")
            app.reqAccountUpdatesMulti(9001, "DU1234567", "", False)
            app.reqExecutions(9002, ExecutionFilter())
            for end in (
                "positionEnd",
                "openOrderEnd",
                "completedOrdersEnd",
                "accountDownloadEnd",
                "accountUpdateMultiEnd",
                "execDetailsEnd",
            ):
                assert rec.wait(end), f"no {end} from the simulator"

            assert ("DU1234567", "MSFT", 7.0, 300.0) in rec.data["position"]
            assert ("DU1234567", "AAPL", 2.0, 190.0) in rec.data["position"]
            assert [o[1:] for o in rec.data["openOrder"]] == [
                ("AAPL", "BUY", 3.0, "x:2", "Submitted")
            ]
            assert rec.data["execDetails"] == [("AAPL", "x:1", 2.0)]
            assert rec.data["accountDownloadEnd"] == [("DU1234567",)]
            assert rec.errors == []
        finally:
            app.disconnect()
            thread.join(timeout=3)
        assert not thread.is_alive()
        names = [r.name for r in gw.messages(client_id=10)]
        assert set(SYNC_REQUESTS) <= set(names)

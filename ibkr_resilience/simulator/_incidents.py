"""Incidents real gateways produce, as named scenarios (each a few lines of hooks).

``_faults.py`` holds the hook interface and the first scenarios; these are the ones
gathered from public reports and IB's documentation (``/work/shared/FACTS.md``, "What
real gateways do"; sources in each docstring). Each is reachable by name through
:func:`fault_for` (``gw.set_scenario("read_only")``, ``--scenario ib_offline:30``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ._codec import PlaceOrder, Request, StartApi
from ._faults import (
    DROP,
    PROCEED,
    SCENARIO_FAULTS,
    AcceptAnswer,
    Close,
    Fail,
    Fault,
    HandshakeAnswer,
    OrderAnswer,
    Proceed,
    RequestAnswer,
    StartApiAnswer,
    seconds_of,
)
from ._scenarios import Scenario

if TYPE_CHECKING:
    from ._server import Connection

RELAY_REASON = "relay: gateway behind is restarting"
READ_ONLY_TEXT = (
    "Error validating request.-'bN' : cause - The API interface is currently in Read-Only mode."
)
LOST_1100 = "Connectivity between IB and Trader Workstation has been lost."
RESTORED_1102 = (
    "Connectivity between IB and Trader Workstation has been restored - data maintained."
)
NOTICE_TEXTS: dict[int, str] = {
    10349: "Order TIF was set to DAY based on order preset.",
    399: "Order Message:\nWarning: your order will not be placed at the exchange until "
    "the market opens.",
    2109: "Order Event Warning:Attribute 'Outside Regular Trading Hours' is ignored based on "
    "the order type and destination. PlaceOrder is now being processed.",
}
"""Informational order "errors" newer gateways send before accepting (ib_async #191, #217)."""


class RelayRestart(Fault):
    """``relay_restart:N``: socat in front of a restarting gateway (ib-gateway-docker):
    every connection is accepted and closed at once, before any handshake byte, for N s;
    open connections are cut now. The client never sees "connection refused"."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_install(self) -> None:
        for conn in self.gateway.connections():
            self.gateway.close(conn, RELAY_REASON)
        self.gateway.call_later(self.seconds, self._back)

    async def _back(self) -> None:
        gateway = self.gateway
        await gateway.end()  # normal service from the next connection on
        gateway.record_event("sim.restarted", port=gateway.port, relay=True)

    def on_accept(self, conn: Connection) -> AcceptAnswer:
        return Close(RELAY_REASON)


class ClientIdInUseFor(Fault):
    """``client_id_in_use_for:S``: error 326 on ``startApi`` for the first S seconds, then
    the same id works: the gateway still holds the ids of sessions it has not torn down
    after a restart (nautilus_trader #3796, #4412). ``client_id`` None: every id."""

    def __init__(self, seconds: float, client_id: int | None = None) -> None:
        self.seconds, self.client_id = seconds, client_id

    def on_install(self) -> None:
        self.until = self.gateway.now() + self.seconds

    def on_start_api(self, conn: Connection, request: StartApi) -> StartApiAnswer:
        if self.client_id not in (None, request.client_id) or self.gateway.now() >= self.until:
            return PROCEED
        self.gateway.record_event(
            "sim.client_id_in_use", conn=conn.id, client_id=request.client_id, holder=None
        )
        return Fail(
            326,
            "Unable to connect as the client id is already in use. Retry with a unique client id.",
        )


class NoCompletedOrders(Fault):
    """``no_completed_orders``: the completed-orders request (msg 99) of ``IB.connect``'s
    sync is never answered; everything else is (ib_insync #224, #355)."""

    def on_request(self, conn: Connection, request: Request) -> RequestAnswer:
        return DROP if request.name == "reqCompletedOrders" else PROCEED


class ReadOnlyApi(Fault):
    """``read_only``: the gateway's "Read-Only API" setting (IBC ``ReadOnlyApi=yes``).
    Order requests get error 321 "... The API interface is currently in Read-Only
    mode." and no end marker: the sync's open-orders request, ``placeOrder``,
    ``cancelOrder`` and the global cancel. ``after_orders`` N serves N orders first
    (the setting switched on mid-run, e.g. by a restart with another IBC config)."""

    ORDER_REQUESTS = frozenset({"placeOrder", "cancelOrder", "reqOpenOrders", "reqGlobalCancel"})

    def __init__(self, after_orders: int = 0) -> None:
        self.budget = after_orders

    def on_request(self, conn: Connection, request: Request) -> RequestAnswer:
        if request.name not in self.ORDER_REQUESTS:
            return PROCEED
        if self.budget > 0:
            self.budget -= isinstance(request, PlaceOrder)
            return PROCEED
        return Fail(321, READ_ONLY_TEXT)


class IbOffline(Fault):
    """``ib_offline:S``: IB's servers unreachable while the socket stays up (the nightly
    reset; IB: "you are very likely to lose connectivity ... at least once a day").
    1100 is pushed to every client now and to new ones once their API starts; orders
    are held unacknowledged; after S seconds (or when the scenario changes) 1102
    "restored - data maintained" goes to every client and the held orders are served."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.held: list[tuple[Connection, PlaceOrder]] = []

    def on_install(self) -> None:
        for conn in self.gateway.connections():
            if conn.api_started:
                self.gateway.send_error(conn, -1, 1100, LOST_1100)
        self.gateway.record_event("sim.ib_offline", seconds=self.seconds)
        self.gateway.call_later(self.seconds, self.gateway.end)

    def on_start_api(self, conn: Connection, request: StartApi) -> StartApiAnswer:
        # After nextValidId/managedAccounts: the timer fires once startApi is answered.
        self.gateway.call_later(0, lambda: self.gateway.send_error(conn, -1, 1100, LOST_1100))
        return PROCEED

    def on_order(self, conn: Connection, order: PlaceOrder) -> OrderAnswer:
        self.held.append((conn, order))
        self.gateway.record_event(
            "sim.order_held", conn=conn.id, client_id=conn.client_id, order_id=str(order.order_id)
        )
        return DROP

    def on_remove(self) -> None:
        gateway, held = self.gateway, self.held
        self.held = []
        for conn in gateway.connections():
            if conn.api_started:
                gateway.send_error(conn, -1, 1102, RESTORED_1102)
        gateway.record_event("sim.ib_restored", held=len(held))
        for conn, order in held:
            if not conn.closed:
                gateway.process(conn, order)


class Silent(Fault):
    """``silent`` / ``silent_after_orders:N``: a frozen gateway or a dropped NAT path.
    The socket stays open (no FIN/RST) and nothing is answered: no handshake, no
    request, so no disconnect event fires on the client. ``after_orders`` N serves N
    more orders first and goes silent on the next one (event ``sim.silent``)."""

    def __init__(self, after_orders: int = 0) -> None:
        self.budget = after_orders
        self.silent = after_orders == 0

    def on_install(self) -> None:
        if self.silent:
            self.gateway.record_event("sim.silent", order_id=None)

    def on_handshake(self, conn: Connection) -> HandshakeAnswer:
        return DROP if self.silent else PROCEED

    def on_request(self, conn: Connection, request: Request) -> RequestAnswer:
        if not self.silent and isinstance(request, PlaceOrder):
            if self.budget == 0:
                self.silent = True
                self.gateway.record_event("sim.silent", order_id=str(request.order_id))
            self.budget -= 1
        return DROP if self.silent else PROCEED


class OrderNotices(Fault):
    """``order_notices``: each order first gets an informational order-scoped "error"
    (10349 "Order TIF was set to DAY based on order preset", or 399 / 2109; ``code``)
    and is then accepted (ib_async #191, #217). ib_insync 0.9.86 marks the order
    Cancelled locally on 10349 (not on 399/2109, which it knows as warnings)."""

    def __init__(self, code: int = 10349, text: str | None = None) -> None:
        self.code = code
        self.text = text if text is not None else NOTICE_TEXTS.get(code, "Order notice.")

    def on_order(self, conn: Connection, order: PlaceOrder) -> OrderAnswer:
        return Proceed(notices=((self.code, self.text),))

    def __repr__(self) -> str:
        return f"OrderNotices(code={self.code})"


INCIDENTS: dict[str, Callable[[Scenario], Fault]] = {
    "relay_restart": lambda sc: RelayRestart(seconds_of(sc)),
    "client_id_in_use_for": lambda sc: ClientIdInUseFor(seconds_of(sc)),
    "no_completed_orders": lambda sc: NoCompletedOrders(),
    "read_only": lambda sc: ReadOnlyApi(),
    "ib_offline": lambda sc: IbOffline(seconds_of(sc)),
    "silent": lambda sc: Silent(),
    "silent_after_orders": lambda sc: Silent(after_orders=int(seconds_of(sc))),
    "order_notices": lambda sc: OrderNotices(),
}


def fault_for(scenario: Scenario) -> Fault:
    """The fault that plays a named scenario (``SCENARIOS`` lists them)."""
    make = SCENARIO_FAULTS.get(scenario.name) or INCIDENTS[scenario.name]
    return make(scenario)

"""A simulated IB Gateway that speaks the TWS API over a real socket, with faults.

Rehearse scripts offline and in CI against it::

    from ibkr_resilience.simulator import FakeGateway

    with FakeGateway(accounts=["DU1234567"]) as gw:
        ib = IB().connect("127.0.0.1", gw.port, clientId=10)
        gw.restart(5)          # the daily restart, now
        gw.messages("placeOrder")

The server version it speaks is ``SERVER_VERSION`` (157). Scenarios are listed in
``SCENARIOS``; your own incidents are ``Fault`` subclasses given to
``FakeGateway.add_fault``; see ``docs/simulator.md``.
"""

from ._codec import CancelOrder, PlaceOrder, Request, StartApi
from ._faults import (
    DROP,
    PROCEED,
    AcceptAnswer,
    Close,
    Delay,
    Drop,
    Fail,
    Fault,
    GatewayControl,
    HandshakeAnswer,
    OrderAnswer,
    Proceed,
    RequestAnswer,
    StartApiAnswer,
)
from ._gateway import FakeGateway
from ._protocol import SERVER_VERSION
from ._recording import DEFAULT_RECORD_LIMIT, Received
from ._scenarios import SCENARIOS, Scenario
from ._server import Connection
from ._state import (
    DEFAULT_CONTRACTS,
    GatewayState,
    SimContract,
    SimExecution,
    SimOrder,
    SimPosition,
    load_positions_csv,
)

__all__ = [
    "DEFAULT_CONTRACTS",
    "DEFAULT_RECORD_LIMIT",
    "DROP",
    "PROCEED",
    "SCENARIOS",
    "SERVER_VERSION",
    "AcceptAnswer",
    "CancelOrder",
    "Close",
    "Connection",
    "Delay",
    "Drop",
    "Fail",
    "FakeGateway",
    "Fault",
    "GatewayControl",
    "GatewayState",
    "HandshakeAnswer",
    "OrderAnswer",
    "PlaceOrder",
    "Proceed",
    "Received",
    "Request",
    "RequestAnswer",
    "Scenario",
    "SimContract",
    "SimExecution",
    "SimOrder",
    "SimPosition",
    "StartApi",
    "StartApiAnswer",
    "load_positions_csv",
]

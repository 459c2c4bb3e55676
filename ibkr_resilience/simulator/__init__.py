"""A simulated IB Gateway that speaks the TWS API over a real socket, with faults.

Rehearse scripts offline and in CI against it::

    from ibkr_resilience.simulator import FakeGateway

    with FakeGateway(accounts=["DU1234567"]) as gw:
        ib = IB().connect("127.0.0.1", gw.port, clientId=10)
        gw.restart(5)          # the daily restart, now
        gw.messages("placeOrder")

The server version it speaks is ``SERVER_VERSION`` (157). Scenarios are listed in
``SCENARIOS``; see ``docs/simulator.md``.
"""

from ._gateway import FakeGateway
from ._protocol import SERVER_VERSION
from ._recording import Received
from ._scenarios import SCENARIOS, Scenario
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
    "SCENARIOS",
    "SERVER_VERSION",
    "FakeGateway",
    "GatewayState",
    "Received",
    "Scenario",
    "SimContract",
    "SimExecution",
    "SimOrder",
    "SimPosition",
    "load_positions_csv",
]

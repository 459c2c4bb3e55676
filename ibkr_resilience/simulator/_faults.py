"""Faults: how the simulated gateway misbehaves, each in one class behind named hooks.

The server and the broker ask the active faults at fixed points what to do (accept?
answer the handshake? start the API? serve this request? accept this order? delay
replies?); a ``Fault`` answers "normally" at every hook it does not override. So a
fault's whole behaviour reads in one place, and a user scripts an incident with a
small subclass and ``FakeGateway.add_fault`` without any named scenario.

Hooks run on the gateway's thread, inside its event loop: they must not block. A
fault that needs time (a window, a timer) asks ``self.gateway`` (a ``GatewayControl``)
for the clock and for timers, which end with the fault.

Answers (frozen records; which hook may return which is in its signature):

* ``Proceed(notices=())``: serve normally, after sending each ``(code, text)`` notice
  as an error message carrying the request's id (informational "errors").
* ``Drop()``: never answer (the request is still recorded).
* ``Delay(seconds)``: serve normally after ``seconds`` (unless the connection closes).
* ``Fail(code, text)``: answer with this error instead, and no end marker.
* ``Close(reason)``: close the connection now.

With several faults active (the scenario first, then added faults in order), the
first answer other than ``Proceed`` wins; the notices of ``Proceed`` answers add up;
reply delays take the largest; the port is closed if any fault says so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from ._codec import SYNC_REQUESTS, PlaceOrder, Request, StartApi
from ._protocol import Field
from ._scenarios import Scenario

if TYPE_CHECKING:
    from ._server import Connection

log = logging.getLogger("ibkr_resilience.simulator")
T = TypeVar("T")

CLIENT_ID_IN_USE_TEXT = (
    "Unable to connect as the client id is already in use. Retry with a unique client id."
)
REJECTED_TEXT = "Order rejected - reason: simulated rejection (reject_orders scenario)"


# ----------------------------------------------------------------------------- answers
@dataclass(frozen=True)
class Proceed:
    """Serve normally; first send each ``(code, text)`` as an error with the request's id."""

    notices: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class Drop:
    """Leave it unanswered (a message is still recorded)."""


@dataclass(frozen=True)
class Delay:
    """Serve it normally ``seconds`` from now."""

    seconds: float


@dataclass(frozen=True)
class Fail:
    """Answer with error ``code``/``text`` instead (no end marker follows)."""

    code: int
    text: str


@dataclass(frozen=True)
class Close:
    """Close the connection now; ``reason`` goes into ``sim.connection.close``."""

    reason: str


PROCEED = Proceed()
DROP = Drop()

AcceptAnswer = Proceed | Close
HandshakeAnswer = Proceed | Drop | Close
StartApiAnswer = Proceed | Drop | Fail | Close
RequestAnswer = Proceed | Drop | Delay | Fail | Close
OrderAnswer = Proceed | Drop | Fail


# ----------------------------------------------------------------------------- the seam
class GatewayControl(Protocol):
    """What a fault may do to the gateway (``Fault.gateway``); gateway thread only."""

    @property
    def port(self) -> int | None:
        """The listening port (``None`` before the first listen)."""

    def now(self) -> float:
        """The gateway loop's clock in seconds (the clock of ``Connection.accepted_at``)."""

    def connections(self) -> list[Connection]:
        """Every open connection, API started or not."""

    def send(self, conn: Connection, fields: list[Field]) -> None:
        """Queue one raw message (``_messages`` builds the field lists)."""

    def send_error(self, conn: Connection, req_id: int, code: int, text: str) -> None:
        """Queue an error message (``req_id`` -1: not about a request)."""

    def close(self, conn: Connection, reason: str, after: float = 0.0) -> None:
        """Close ``conn`` ``after`` seconds from now (kept even if the fault ends)."""

    def call_later(self, seconds: float, callback: Callable[[], object]) -> None:
        """Run ``callback`` (a coroutine function is awaited) unless the fault ends first."""

    def process(self, conn: Connection, request: Request) -> None:
        """Serve ``request`` now as if no fault had intervened (e.g. a held order)."""

    def record_event(self, event: str, **data: object) -> None:
        """Add an event to ``FakeGateway.events()``."""

    def end(self) -> asyncio.Task[None]:
        """Remove this fault (a scenario gives way to ``normal``); await to wait for it."""


class Fault:
    """A gateway misbehaviour. Override the hooks you need; the others serve normally.

    ``listening`` False closes the port (and cuts every connection) while installed.
    """

    listening: bool = True
    _gateway: GatewayControl | None = None

    @property
    def gateway(self) -> GatewayControl:
        """The gateway this fault is installed in (``RuntimeError`` before)."""
        if self._gateway is None:
            raise RuntimeError(f"{type(self).__name__} is not installed in a gateway")
        return self._gateway

    def on_install(self) -> None:
        """Called when the fault becomes active (``self.gateway`` is set)."""

    def on_remove(self) -> None:
        """Called when the fault stops being active; its timers are already cancelled."""

    def on_accept(self, conn: Connection) -> AcceptAnswer:
        """A TCP connection was accepted, before any byte was read."""
        return PROCEED

    def on_handshake(self, conn: Connection) -> HandshakeAnswer:
        """A valid greeting arrived; ``Proceed`` sends the server version and time."""
        return PROCEED

    def on_start_api(self, conn: Connection, request: StartApi) -> StartApiAnswer:
        """``startApi`` for ``request.client_id``; ``Fail`` sends the error and closes."""
        return PROCEED

    def on_request(self, conn: Connection, request: Request) -> RequestAnswer:
        """Any request: ``startApi`` always, the others once the API has started."""
        return PROCEED

    def on_order(self, conn: Connection, order: PlaceOrder) -> OrderAnswer:
        """A valid order about to be accepted; ``Fail`` stores it as Cancelled."""
        return PROCEED

    def reply_delay(self, conn: Connection) -> float:
        """Seconds to hold each outgoing message to ``conn`` (0: send at once)."""
        return 0.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def combine(answers: Iterable[T | Proceed]) -> T | Proceed:
    """The first answer other than ``Proceed``, else ``Proceed`` with all notices."""
    notices: list[tuple[int, str]] = []
    for answer in answers:
        if not isinstance(answer, Proceed):
            return answer
        notices += answer.notices
    return Proceed(tuple(notices)) if notices else PROCEED


class FaultChain:
    """The active faults: the scenario's (first) and the added ones, in order."""

    def __init__(self) -> None:
        self.scenario = Scenario()
        self.scenario_fault: Fault = Normal()
        self.added: list[Fault] = []

    def active(self) -> list[Fault]:
        return [self.scenario_fault, *self.added]

    @property
    def listening(self) -> bool:
        return all(f.listening for f in self.active())

    def on_accept(self, conn: Connection) -> AcceptAnswer:
        return combine(f.on_accept(conn) for f in self.active())

    def on_handshake(self, conn: Connection) -> HandshakeAnswer:
        return combine(f.on_handshake(conn) for f in self.active())

    def on_start_api(self, conn: Connection, request: StartApi) -> StartApiAnswer:
        return combine(f.on_start_api(conn, request) for f in self.active())

    def on_request(self, conn: Connection, request: Request) -> RequestAnswer:
        return combine(f.on_request(conn, request) for f in self.active())

    def on_order(self, conn: Connection, order: PlaceOrder) -> OrderAnswer:
        return combine(f.on_order(conn, order) for f in self.active())

    def reply_delay(self, conn: Connection) -> float:
        return max(f.reply_delay(conn) for f in self.active())


# ----------------------------------------------------------------------------- scenarios
class Normal(Fault):
    """Serves everything promptly."""


class Down(Fault):
    """Port closed: connection refused until the scenario changes."""

    listening = False


class Restart(Fault):
    """Port closed now, listening again after ``seconds`` (the daily restart)."""

    listening = False

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_install(self) -> None:
        self.gateway.call_later(self.seconds, self._reopen)

    async def _reopen(self) -> None:
        gateway = self.gateway
        await gateway.end()  # back to normal: the port opens
        gateway.record_event("sim.restarted", port=gateway.port)
        log.info("sim.restarted", extra={"port": gateway.port})


class Hang(Fault):
    """Accepts TCP, never answers anything, not even the handshake."""

    def on_handshake(self, conn: Connection) -> HandshakeAnswer:
        return DROP

    def on_request(self, conn: Connection, request: Request) -> RequestAnswer:
        return DROP


class CloseOnAccept(Fault):
    """Accepts TCP, then closes at once."""

    def on_accept(self, conn: Connection) -> AcceptAnswer:
        return Close("close_on_accept")


class NotLoggedIn(Fault):
    """Answers the handshake; the API never starts (no nextValidId/managedAccounts)."""

    def on_start_api(self, conn: Connection, request: StartApi) -> StartApiAnswer:
        return DROP


class ClientIdInUse(Fault):
    """Refuses ``client_id`` (every id when ``None``) with error 326, then closes."""

    def __init__(self, client_id: int | None = None) -> None:
        self.client_id = client_id

    def on_start_api(self, conn: Connection, request: StartApi) -> StartApiAnswer:
        if self.client_id not in (None, request.client_id):
            return PROCEED
        self.gateway.record_event(
            "sim.client_id_in_use", conn=conn.id, client_id=request.client_id, holder=None
        )
        return Fail(326, CLIENT_ID_IN_USE_TEXT)


class StallSync(Fault):
    """The API starts; the initial-sync requests are never answered."""

    def on_request(self, conn: Connection, request: Request) -> RequestAnswer:
        return DROP if request.name in SYNC_REQUESTS else PROCEED


class Slow(Fault):
    """Every reply delayed by ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def reply_delay(self, conn: Connection) -> float:
        return self.seconds


class DropAfter(Fault):
    """Cuts each connection ``seconds`` after it was accepted (those open now, too)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_install(self) -> None:
        for conn in self.gateway.connections():
            self._schedule(conn)

    def on_accept(self, conn: Connection) -> AcceptAnswer:
        self._schedule(conn)
        return PROCEED

    def _schedule(self, conn: Connection) -> None:
        delay = max(0.0, conn.accepted_at + self.seconds - self.gateway.now())
        self.gateway.close(conn, f"drop_after {self.seconds:g}s", after=delay)


class RejectOrders(Fault):
    """Every valid order is rejected with error 201."""

    def on_order(self, conn: Connection, order: PlaceOrder) -> OrderAnswer:
        return Fail(201, REJECTED_TEXT)


class HoldOrders(Fault):
    """Answers ``after`` more orders, then holds the following ones unanswered.

    Held orders are recorded (event ``sim.order_held``) but not stored; ``release()``
    ends the fault and serves them in arrival order.
    """

    def __init__(self, after: int) -> None:
        self.budget = after
        self.held: list[tuple[Connection, PlaceOrder]] = []

    def on_request(self, conn: Connection, request: Request) -> RequestAnswer:
        if not isinstance(request, PlaceOrder):
            return PROCEED
        if self.budget > 0:
            self.budget -= 1
            return PROCEED
        self.held.append((conn, request))
        self.gateway.record_event(
            "sim.order_held", conn=conn.id, client_id=conn.client_id, order_id=str(request.order_id)
        )
        return DROP

    async def release(self) -> int:
        gateway, held = self.gateway, self.held
        self.held = []
        await gateway.end()
        for conn, order in held:
            gateway.process(conn, order)
        return len(held)


SCENARIO_FAULTS: dict[str, Callable[[Scenario], Fault]] = {
    "normal": lambda sc: Normal(),
    "down": lambda sc: Down(),
    "restart": lambda sc: Restart(seconds_of(sc)),
    "hang": lambda sc: Hang(),
    "close_on_accept": lambda sc: CloseOnAccept(),
    "not_logged_in": lambda sc: NotLoggedIn(),
    "client_id_in_use": lambda sc: ClientIdInUse(),
    "stall_sync": lambda sc: StallSync(),
    "slow": lambda sc: Slow(seconds_of(sc)),
    "drop_after": lambda sc: DropAfter(seconds_of(sc)),
    "reject_orders": lambda sc: RejectOrders(),
}


def seconds_of(sc: Scenario) -> float:
    """The scenario's parameter (``Scenario`` checked that it has one)."""
    assert sc.seconds is not None
    return sc.seconds

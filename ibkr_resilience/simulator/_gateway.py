"""``FakeGateway``: an asyncio TCP server speaking the TWS API, with fault injection.

It runs its own event loop in a background thread, so that the code under test
(ib_insync drives its own loop in the main thread) talks to it over a real socket
on 127.0.0.1 exactly as it would talk to IB Gateway. All public methods are
thread-safe: they hand work to the gateway's loop and wait for it.

This module is the façade and the assembly: ``Server`` (sockets, framing),
``Dispatcher`` (decode, record, route), ``Broker`` (the account), the ``FaultChain``
(named scenarios and users' faults, installed by ``FaultHost``) and the ``Recorder``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

from . import _protocol as p
from ._broker import Broker
from ._control import FaultHost
from ._dispatch import Dispatcher
from ._faults import ClientIdInUse, Fault, FaultChain, HoldOrders
from ._incidents import ClientIdInUseFor, OrderNotices, ReadOnlyApi, fault_for
from ._recording import DEFAULT_RECORD_LIMIT, Received, Recorder
from ._scenarios import Scenario
from ._server import Connection, Server
from ._state import DEFAULT_CONTRACTS, GatewayState, SimContract, SimPosition

__all__ = ["FakeGateway", "Received"]

log = logging.getLogger("ibkr_resilience.simulator")
T = TypeVar("T")


class FakeGateway:
    """A simulated IB Gateway on 127.0.0.1 for tests, rehearsals and the demo.

    Use it as a context manager (``with FakeGateway() as gw: ... gw.port``) or start
    and stop it explicitly. Port 0 picks a free port; ``.port`` tells which one.
    ``record_limit`` bounds the recorded messages and the recorded events (each; the
    oldest are forgotten first). ``relay=True`` puts a socat relay in front (the
    ib-gateway-docker setup): the port stays open while the gateway is ``down`` or
    restarting, and every connection is then accepted and closed at once.
    """

    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        accounts: Iterable[str] = ("DU1234567",),
        positions: Iterable[SimPosition] = (),
        contracts: Iterable[SimContract] = DEFAULT_CONTRACTS,
        scenario: Scenario | str | None = None,
        server_version: int = p.SERVER_VERSION,
        partial_message_timeout: float = 5.0,
        cash: float = 1_000_000.0,
        record_limit: int = DEFAULT_RECORD_LIMIT,
        relay: bool = False,
    ) -> None:
        self.host = host
        self.state = GatewayState(accounts, contracts, positions)
        self._initial_scenario = self._coerce(scenario) if scenario else Scenario()
        self._recorder = Recorder(record_limit)
        self._faults = FaultChain()
        self._hold: HoldOrders | None = None  # hold_orders() until release_orders()
        self._server = Server(
            host,
            port,
            server_version=server_version,
            partial_message_timeout=partial_message_timeout,
            recorder=self._recorder,
            faults=self._faults,
            on_message=self._on_message,
        )
        self._server.relay = relay
        self._broker = Broker(self.state, self._server, self._faults, cash)
        self._dispatcher = Dispatcher(self._server, self._broker, self._faults, self._recorder)
        self._host = FaultHost(self._faults, self._server, self._recorder, self._dispatcher.process)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def server_version(self) -> int:
        return self._server.server_version

    @server_version.setter
    def server_version(self, value: int) -> None:
        self._server.server_version = value

    @property
    def partial_message_timeout(self) -> float:
        return self._server.partial_message_timeout

    @partial_message_timeout.setter
    def partial_message_timeout(self, value: float) -> None:
        self._server.partial_message_timeout = value

    @property
    def cash(self) -> float:
        return self._broker.cash

    @cash.setter
    def cash(self, value: float) -> None:
        self._broker.cash = value

    # ------------------------------------------------------------------ lifecycle
    @property
    def port(self) -> int:
        if self._server.port is None:
            raise RuntimeError("FakeGateway is not started")
        return self._server.port

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def start(self) -> FakeGateway:
        if self._thread is not None:
            raise RuntimeError("FakeGateway already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._server.open_listener())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._shutdown())
                _finish_leftover_tasks(loop)
                loop.close()

        self._thread = threading.Thread(target=run, name="FakeGateway", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        port, scenario = self._server.port, str(self._initial_scenario)
        self._recorder.event("sim.started", port=port, scenario=scenario)
        log.info(
            "sim.started",
            extra={
                "port": port,
                "server_version": self.server_version,
                "accounts": self.state.accounts,
                "scenario": scenario,
            },
        )
        if self._initial_scenario != Scenario():
            self.set_scenario(self._initial_scenario)
        return self

    def stop(self) -> None:
        """Close the port and every connection, and end the gateway's thread.

        Faults added with ``add_fault`` end too; the scenario goes back to normal.
        """
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = None
        self._loop = None
        self._server.listening.clear()
        log.info("sim.stopped", extra={"port": self._server.port})

    def __enter__(self) -> FakeGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _shutdown(self) -> None:
        self._host.reset()
        self._hold = None
        await self._server.shutdown()

    # ------------------------------------------------------------------ scenarios
    @property
    def scenario(self) -> Scenario:
        return self._faults.scenario

    @staticmethod
    def _coerce(scenario: Scenario | str) -> Scenario:
        return scenario if isinstance(scenario, Scenario) else Scenario.parse(scenario)

    def set_scenario(self, scenario: Scenario | str) -> None:
        """Switch to a named scenario now (see ``SCENARIOS``)."""
        sc = self._coerce(scenario)
        self._call(self._host.set_scenario(sc, fault_for(sc)))

    def normal(self) -> None:
        self.set_scenario(Scenario("normal"))

    def down(self) -> None:
        self.set_scenario(Scenario("down"))

    def up(self) -> None:
        """Listen again (ends ``down``/``restart``) and serve normally."""
        self.normal()

    def restart(self, seconds: float) -> None:
        self.set_scenario(Scenario("restart", float(seconds)))

    def hang(self) -> None:
        self.set_scenario(Scenario("hang"))

    def close_on_accept(self) -> None:
        self.set_scenario(Scenario("close_on_accept"))

    def not_logged_in(self) -> None:
        self.set_scenario(Scenario("not_logged_in"))

    def client_id_in_use(self, client_id: int | None = None) -> None:
        """Refuse ``client_id`` (or every id when None) with error 326, then close."""
        sc = Scenario("client_id_in_use")
        self._call(self._host.set_scenario(sc, ClientIdInUse(client_id)))

    def stall_sync(self) -> None:
        self.set_scenario(Scenario("stall_sync"))

    def slow(self, seconds: float) -> None:
        self.set_scenario(Scenario("slow", float(seconds)))

    def drop_after(self, seconds: float) -> None:
        self.set_scenario(Scenario("drop_after", float(seconds)))

    def reject_orders(self) -> None:
        self.set_scenario(Scenario("reject_orders"))

    @property
    def relay(self) -> bool:
        return self._server.relay

    # Incidents of real gateways (see _incidents.py for the sources).
    def relay_restart(self, seconds: float) -> None:
        self.set_scenario(Scenario("relay_restart", float(seconds)))

    def client_id_in_use_for(self, seconds: float, client_id: int | None = None) -> None:
        """Error 326 for ``client_id`` (every id when None) during the next ``seconds``."""
        sc = Scenario("client_id_in_use_for", float(seconds))
        self._call(self._host.set_scenario(sc, ClientIdInUseFor(float(seconds), client_id)))

    def no_completed_orders(self) -> None:
        self.set_scenario(Scenario("no_completed_orders"))

    def read_only(self, after_orders: int = 0) -> None:
        """Read-Only API (error 321 on order requests), after serving ``after_orders``."""
        self._call(self._host.set_scenario(Scenario("read_only"), ReadOnlyApi(after_orders)))

    def ib_offline(self, seconds: float) -> None:
        self.set_scenario(Scenario("ib_offline", float(seconds)))

    def silent(self, after_orders: int = 0) -> None:
        """Stop answering now, or after serving ``after_orders`` more orders."""
        if after_orders:
            self.set_scenario(Scenario("silent_after_orders", float(after_orders)))
        else:
            self.set_scenario(Scenario("silent"))

    def order_notices(self, code: int = 10349, text: str | None = None) -> None:
        """Each order gets the informational error ``code`` first, then is accepted."""
        self._call(self._host.set_scenario(Scenario("order_notices"), OrderNotices(code, text)))

    def hold_orders(self, after: int = 0) -> None:
        """Answer ``after`` more ``placeOrder`` messages, then hold the following ones.

        A held order is recorded (``messages("placeOrder")``, event ``sim.order_held``)
        but neither answered nor stored until :meth:`release_orders`: the client sees an
        order that the gateway received and has not acknowledged yet. Tests use it to
        stop a script at an exact point (between "sent" and "acknowledged") without sleeps.
        """
        if after < 0:
            raise ValueError(f"after must be >= 0, got {after}")

        async def apply() -> None:
            if self._hold is not None:
                self._hold.budget = after
                return
            self._hold = HoldOrders(after)
            await self._host.add(self._hold)

        self._call(apply())

    def release_orders(self) -> int:
        """Stop holding; process the held orders now, as if they had just arrived.

        Replies go to the sending connection if it is still open (else they are dropped,
        as TWS does for a client that went away); the orders are stored either way.
        Returns how many orders were released.
        """

        async def release() -> int:
            hold, self._hold = self._hold, None
            return 0 if hold is None else await hold.release()

        return self._call(release())

    def drop_connections(self) -> None:
        """Cut every open connection now (the port stays open)."""
        self._call(self._server.drop_all("dropped by test"))

    def wait_listening(self, timeout: float) -> bool:
        return self._server.listening.wait(timeout)

    @property
    def listening(self) -> bool:
        return self._server.listening.is_set()

    # ------------------------------------------------------------------ users' faults
    def add_fault(self, fault: Fault) -> Fault:
        """Make ``fault`` active on top of the scenario (after faults added before).

        It stays until :meth:`remove_fault`, its own ``gateway.end()`` or :meth:`stop`.
        Returns ``fault``. ``ValueError`` if it is already active.
        """
        self._call(self._host.add(fault))
        return fault

    def remove_fault(self, fault: Fault) -> None:
        """End a fault added with :meth:`add_fault` (no-op if it has already ended)."""
        self._call(self._host.remove(fault))

    @property
    def faults(self) -> list[Fault]:
        """The active faults: the scenario's first, then the added ones."""
        return self._faults.active()

    # ------------------------------------------------------------------ records
    def messages(self, name: str | None = None, client_id: int | None = None) -> list[Received]:
        """Messages received so far (the last ``record_limit``), oldest first, optionally
        only one kind and/or one client id."""
        return self._recorder.messages(name, client_id)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Connection-level events (``sim.connection.open``/``close``, ``sim.malformed``...)."""
        return self._recorder.events(name)

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until ``predicate()`` holds (re-checked on every message/event)."""
        return self._recorder.wait_for(predicate, timeout)

    def clear_records(self) -> None:
        """Forget the messages and events recorded so far (state and faults stay)."""
        self._recorder.clear()

    @property
    def record_limit(self) -> int:
        return self._recorder.limit

    def connection_count(self) -> int:
        return len(self._server.connections())

    def connected_client_ids(self) -> list[int]:
        """The client ids of the open connections (not of one being closed)."""
        return sorted(
            c.client_id
            for c in self._server.connections()
            if c.client_id is not None and not c.closed
        )

    # ------------------------------------------------------------------ plumbing
    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError("FakeGateway is not started")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    async def _on_message(self, conn: Connection, fields: list[str]) -> None:
        await self._dispatcher.on_message(conn, fields)


def _finish_leftover_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel and finish the tasks still pending after the shutdown (a connection accepted
    as it stopped): left in a closed loop, a later GC warns "coroutine never awaited"."""
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))

"""Installing and ending faults, and what an installed fault may do to the gateway.

``FaultHost`` switches the scenario's fault, adds and removes users' faults, and
keeps the port open or closed as they want. Each installed fault gets its own
``_FaultControl`` (the ``GatewayControl`` it sees as ``fault.gateway``), which owns
the fault's timers so that they end with it: a replaced ``restart`` never reopens
the port behind the next scenario's back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from . import _messages as m
from ._codec import Request
from ._faults import Fault, FaultChain
from ._incidents import fault_for
from ._protocol import Field
from ._recording import Recorder
from ._scenarios import Scenario
from ._server import Connection, Server

log = logging.getLogger("ibkr_resilience.simulator")

Process = Callable[[Connection, Request], None]


class FaultHost:
    """The gateway's side of the fault API (on the gateway's thread)."""

    def __init__(
        self, chain: FaultChain, server: Server, recorder: Recorder, process: Process
    ) -> None:
        self.chain = chain
        self._server = server
        self._recorder = recorder
        self._process = process

    async def set_scenario(
        self,
        sc: Scenario,
        fault: Fault,
        *,
        announce: bool = True,
        spare: asyncio.Task[Any] | None = None,
    ) -> None:
        """Replace the scenario's fault; ``announce`` records ``sim.scenario``."""
        previous, old = self.chain.scenario, self.chain.scenario_fault
        self.chain.scenario, self.chain.scenario_fault = sc, fault
        self._detach(old, spare)
        if announce:
            self._recorder.event("sim.scenario", scenario=str(sc), previous=str(previous))
            log.info("sim.scenario", extra={"scenario": str(sc), "previous": str(previous)})
        self._attach(fault)
        await self._server.sync_listener()

    async def add(self, fault: Fault) -> None:
        if fault in self.chain.active():
            raise ValueError(f"{fault!r} is already active")
        self.chain.added.append(fault)
        self._recorder.event("sim.fault.added", fault=repr(fault))
        self._attach(fault)
        await self._server.sync_listener()

    async def remove(self, fault: Fault, spare: asyncio.Task[Any] | None = None) -> None:
        """End ``fault``; the scenario's fault gives way to ``normal`` (not announced)."""
        if fault is self.chain.scenario_fault:
            await self.set_scenario(Scenario(), fault_for(Scenario()), announce=False, spare=spare)
        elif fault in self.chain.added:
            self.chain.added.remove(fault)
            self._detach(fault, spare)
            self._recorder.event("sim.fault.removed", fault=repr(fault))
            await self._server.sync_listener()

    def reset(self) -> None:
        """End every fault without touching the port (the gateway is stopping)."""
        for fault in reversed(self.chain.active()):
            self._detach(fault)
        self.chain.added.clear()
        self.chain.scenario, self.chain.scenario_fault = Scenario(), fault_for(Scenario())

    def _attach(self, fault: Fault) -> None:
        fault._gateway = _FaultControl(self, fault)
        fault.on_install()

    def _detach(self, fault: Fault, spare: asyncio.Task[Any] | None = None) -> None:
        control = fault._gateway
        if isinstance(control, _FaultControl):
            control.cancel(spare)
        fault.on_remove()


class _FaultControl:
    """``GatewayControl`` for one installed fault; its timers end with the fault."""

    def __init__(self, host: FaultHost, fault: Fault) -> None:
        self._host = host
        self._server = host._server
        self._fault = fault
        self._timers: set[asyncio.TimerHandle] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ended = False

    @property
    def port(self) -> int | None:
        return self._server.port

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def connections(self) -> list[Connection]:
        return self._server.connections()

    def send(self, conn: Connection, fields: list[Field]) -> None:
        self._server.send(conn, fields)

    def send_error(self, conn: Connection, req_id: int, code: int, text: str) -> None:
        self._server.send(conn, m.error(req_id, code, text))

    def close(self, conn: Connection, reason: str, after: float = 0.0) -> None:
        self._server.close_later(conn, after, reason)

    def call_later(self, seconds: float, callback: Callable[[], object]) -> None:
        if self._ended:
            return
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(handle)
            result = callback()
            if asyncio.iscoroutine(result):
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

        handle = loop.call_later(seconds, fire)
        self._timers.add(handle)

    def process(self, conn: Connection, request: Request) -> None:
        self._host._process(conn, request)

    def record_event(self, event: str, **data: object) -> None:
        self._host._recorder.event(event, **data)

    def end(self) -> asyncio.Task[None]:
        # The task that asks (e.g. a timer's coroutine) must survive the fault's end.
        return asyncio.ensure_future(self._host.remove(self._fault, asyncio.current_task()))

    def cancel(self, spare: asyncio.Task[Any] | None = None) -> None:
        self._ended = True
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        for task in self._tasks:
            if task is not spare:
                task.cancel()

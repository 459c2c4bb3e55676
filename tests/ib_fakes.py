"""Small stand-ins for the client library's ``IB`` and for time, used by the unit tests.

``FakeIB`` has the real eventkit events the library watches (``errorEvent``,
``disconnectedEvent``, ``client.apiError``/``apiStart``, ``client.conn.hasData`` /
``disconnected``) and a scripted ``connectAsync`` that reproduces, in-process, what
ib_insync 0.9.86 does against each gateway behaviour (see FACTS.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ibkr_resilience._connect import compat
from ibkr_resilience.testing import FakeTime

Event = compat.Event


class FakeConn:
    def __init__(self) -> None:
        self.hasData = Event("hasData")
        self.disconnected = Event("disconnected")


class FakeClient:
    def __init__(self) -> None:
        self.apiError = Event("apiError")
        self.apiStart = Event("apiStart")
        self.conn = FakeConn()
        self.connected = False
        self.ready = False
        self.disconnect_calls = 0

    def isConnected(self) -> bool:
        return self.connected

    def isReady(self) -> bool:
        return self.ready

    def serverVersion(self) -> int:
        return 176 if self.connected else 0

    def disconnect(self) -> None:
        self.disconnect_calls += 1
        self.connected = self.ready = False


class FakeIB:
    """``behaviour`` is one of the names in ``connectAsync`` below."""

    def __init__(
        self,
        behaviour: str = "ok",
        accounts: tuple[str, ...] = ("DU1234567",),
        *,
        disconnect_raises: bool = False,
        on_connect: Callable[[FakeIB], None] | None = None,
    ) -> None:
        self.behaviour = behaviour
        self.accounts = list(accounts)
        self.disconnect_raises = disconnect_raises
        self.on_connect = on_connect
        self.client = FakeClient()
        self.errorEvent = Event("errorEvent")
        self.disconnectedEvent = Event("disconnectedEvent")
        self.connect_calls: list[tuple[Any, ...]] = []
        self.disconnect_calls = 0
        self.sleep_calls: list[float] = []
        self.cancelled = False

    # -- what the library calls ---------------------------------------------------------
    async def connectAsync(
        self, host: str, port: int, clientId: int, timeout: float | None = None
    ) -> FakeIB:
        self.connect_calls.append((host, port, clientId, timeout))
        if self.on_connect is not None:
            self.on_connect(self)
        try:
            return await self._behave(clientId, timeout or 0.0)
        except BaseException:
            # ib_insync disconnects (and resets the client) on any failure.
            self.cancelled = True
            self.client.disconnect()
            raise

    async def _behave(self, client_id: int, timeout: float) -> FakeIB:
        b = self.behaviour
        c = self.client
        if b == "ok":
            c.connected = True
            c.conn.hasData.emit(b"handshake")
            c.ready = True
            c.apiStart.emit()
            return self
        if b == "refused":
            raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 7497)")
        if b == "multi":
            raise OSError(
                "Multiple exceptions: [Errno 111] Connect call failed ('::1', 7497, 0, 0), "
                "[Errno 111] Connect call failed ('127.0.0.1', 7497)"
            )
        if b == "inner_timeout":
            raise TimeoutError()
        if b == "error":
            raise ValueError("boom")
        if b == "close_on_accept":
            c.conn.disconnected.emit("")
        elif b == "not_logged_in_quiet":
            c.connected = True  # state only, no events: the bound's snapshot must see it
        elif b == "not_logged_in":
            c.connected = True
            c.conn.hasData.emit(b"handshake")
        elif b == "in_use_326":
            c.connected = True
            c.conn.hasData.emit(b"handshake")
            self.errorEvent.emit(
                -1, 326, "Unable to connect as the client id is already in use.", None
            )
        elif b == "peer_closed":
            c.connected = True
            c.conn.hasData.emit(b"handshake")
            # What Client._onSocketDisconnected does: emit, then reset, then the socket event.
            c.apiError.emit(f"Peer closed connection. clientId {client_id} already in use?")
            c.connected = False
            c.conn.disconnected.emit("")
        elif b == "sync_hang":
            c.connected = True
            c.conn.hasData.emit(b"handshake")
            c.ready = True
            c.apiStart.emit()
        elif b == "phases":
            # ib_insync's per-phase timeouts: four phases, each just under ``timeout``.
            for _ in range(4):
                await asyncio.sleep(0.9 * timeout)
            return self
        elif b != "hang":
            raise AssertionError(f"unknown behaviour {b}")
        await asyncio.Event().wait()  # hang until cancelled
        raise AssertionError("unreachable")

    def disconnect(self) -> None:
        self.disconnect_calls += 1
        if self.disconnect_raises:
            raise ConnectionError("Not connected")
        was = self.client.connected
        self.client.disconnect()
        if was:
            self.disconnectedEvent.emit()

    def isConnected(self) -> bool:
        return self.client.ready

    def managedAccounts(self) -> list[str]:
        return list(self.accounts)

    def sleep(self, seconds: float) -> None:
        self.sleep_calls.append(seconds)

    # -- test helpers -------------------------------------------------------------------
    def drop(self) -> None:
        """The gateway drops the connection mid-session."""
        self.client.connected = self.client.ready = False
        self.disconnectedEvent.emit()


class Factory:
    """``ib_factory`` that hands out FakeIBs with scripted behaviours, one per attempt."""

    def __init__(
        self,
        behaviours: list[str] | str,
        *,
        accounts: tuple[str, ...] = ("DU1234567",),
        time: FakeTime | None = None,
        attempt_cost: float = 0.0,
        disconnect_raises: bool = False,
    ) -> None:
        self.behaviours = behaviours
        self.accounts = accounts
        self.time = time
        self.attempt_cost = attempt_cost
        self.disconnect_raises = disconnect_raises
        self.made: list[FakeIB] = []

    def __call__(self) -> FakeIB:
        n = len(self.made)
        if isinstance(self.behaviours, str):
            behaviour = self.behaviours
        else:
            behaviour = self.behaviours[min(n, len(self.behaviours) - 1)]

        def cost(ib: FakeIB) -> None:
            if self.time is not None:
                # A real attempt never outlives the timeout it was given.
                self.time.advance(min(self.attempt_cost, ib.connect_calls[-1][3] or 0.0))

        ib = FakeIB(
            behaviour,
            self.accounts,
            disconnect_raises=self.disconnect_raises,
            on_connect=cost,
        )
        self.made.append(ib)
        return ib

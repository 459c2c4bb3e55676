"""``FakeGateway``: an asyncio TCP server speaking the TWS API, with fault injection.

It runs its own event loop in a background thread, so that the code under test
(ib_insync drives its own loop in the main thread) talks to it over a real socket
on 127.0.0.1 exactly as it would talk to IB Gateway. All public methods are
thread-safe: they hand work to the gateway's loop and wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import struct
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from . import _messages as m
from . import _protocol as p
from ._protocol import Field, ProtocolError
from ._scenarios import Scenario
from ._state import (
    DEFAULT_CONTRACTS,
    IMMEDIATE_FILL_TYPES,
    GatewayState,
    SimContract,
    SimOrder,
    SimPosition,
)

log = logging.getLogger("ibkr_resilience.simulator")
T = TypeVar("T")

SYNC_REQUESTS = frozenset({5, 6, 7, 16, 61, 76, 99})  # what IB.connect() waits for
NO_SECURITY_DEFINITION = "No security definition has been found for the request"
CLIENT_ID_IN_USE_TEXT = (
    "Unable to connect as the client id is already in use. Retry with a unique client id."
)


@dataclass(frozen=True)
class Received:
    """One decoded message a client sent, as recorded by the gateway."""

    conn_id: int
    client_id: int | None
    msg_id: int
    name: str
    fields: tuple[str, ...]
    at: float  # time.monotonic()


class _Conn:
    """One client connection inside the gateway's loop."""

    def __init__(
        self,
        conn_id: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        accepted_at: float,
    ) -> None:
        self.id = conn_id
        self.reader = reader
        self.writer = writer
        self.accepted_at = accepted_at
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.client_id: int | None = None
        self.api_started = False
        self.positions_subscribed = False
        self.account_subscribed = ""  # account whose updates this connection streams
        self.outbox: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()
        self.tasks: list[asyncio.Task[Any]] = []
        self.closed = False


class FakeGateway:
    """A simulated IB Gateway on 127.0.0.1 for tests, rehearsals and the demo.

    Use it as a context manager (``with FakeGateway() as gw: ... gw.port``) or start
    and stop it explicitly. Port 0 picks a free port; ``.port`` tells which one.
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
    ) -> None:
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self.server_version = server_version
        self.partial_message_timeout = partial_message_timeout
        self.cash = cash
        self.state = GatewayState(accounts, contracts, positions)
        self._initial_scenario = self._coerce(scenario) if scenario else Scenario()
        self._scenario = Scenario()
        self._client_id_in_use: int | None = None  # None: every id is "in use"
        # hold_orders(): placeOrder messages still answered before holding starts, and
        # the ones held (unanswered, not in the state) until release_orders().
        self._hold_budget: int | None = None
        self._held: list[tuple[_Conn, list[str]]] = []

        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._reopen: asyncio.TimerHandle | None = None
        self._conns: dict[int, _Conn] = {}
        self._serving: set[asyncio.Task[Any]] = set()
        self._conn_ids = itertools.count(1)
        self._listening = threading.Event()

        self._received: list[Received] = []
        self._events: list[dict[str, Any]] = []
        self._cond = threading.Condition()

    # ------------------------------------------------------------------ lifecycle
    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeGateway is not started")
        return self._port

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
                loop.run_until_complete(self._open_listener())
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
                loop.close()

        self._thread = threading.Thread(target=run, name="FakeGateway", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        self._record_event("sim.started", port=self._port, scenario=str(self._initial_scenario))
        log.info(
            "sim.started",
            extra={"port": self._port, "server_version": self.server_version,
                   "accounts": self.state.accounts, "scenario": str(self._initial_scenario)},
        )  # fmt: skip
        if self._initial_scenario.name != "normal":
            self.set_scenario(self._initial_scenario)
        return self

    def stop(self) -> None:
        """Close the port and every connection, and end the gateway's thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = None
        self._loop = None
        self._listening.clear()
        log.info("sim.stopped", extra={"port": self._port})

    def __enter__(self) -> FakeGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ scenarios
    @property
    def scenario(self) -> Scenario:
        return self._scenario

    @staticmethod
    def _coerce(scenario: Scenario | str) -> Scenario:
        return scenario if isinstance(scenario, Scenario) else Scenario.parse(scenario)

    def set_scenario(self, scenario: Scenario | str) -> None:
        """Switch to a named scenario now (see ``SCENARIOS``)."""
        sc = self._coerce(scenario)
        self._call(self._apply_scenario(sc))

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
        self._client_id_in_use = client_id
        self.set_scenario(Scenario("client_id_in_use"))

    def stall_sync(self) -> None:
        self.set_scenario(Scenario("stall_sync"))

    def slow(self, seconds: float) -> None:
        self.set_scenario(Scenario("slow", float(seconds)))

    def drop_after(self, seconds: float) -> None:
        self.set_scenario(Scenario("drop_after", float(seconds)))

    def reject_orders(self) -> None:
        self.set_scenario(Scenario("reject_orders"))

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
            self._hold_budget = after

        self._call(apply())

    def release_orders(self) -> int:
        """Stop holding; process the held orders now, as if they had just arrived.

        Replies go to the sending connection if it is still open (else they are dropped,
        as TWS does for a client that went away); the orders are stored either way.
        Returns how many orders were released.
        """

        async def release() -> int:
            self._hold_budget = None
            held, self._held = self._held, []
            for conn, fields in held:
                self._place_order(conn, fields)
            return len(held)

        return self._call(release())

    def drop_connections(self) -> None:
        """Cut every open connection now (the port stays open)."""
        self._call(self._drop_all("dropped by test"))

    def wait_listening(self, timeout: float) -> bool:
        return self._listening.wait(timeout)

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    async def _apply_scenario(self, sc: Scenario) -> None:
        previous = self._scenario
        self._scenario = sc
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        self._record_event("sim.scenario", scenario=str(sc), previous=str(previous))
        log.info("sim.scenario", extra={"scenario": str(sc), "previous": str(previous)})
        if sc.name in ("down", "restart"):
            await self._close_listener()
            if sc.name == "restart":
                assert sc.seconds is not None
                loop = asyncio.get_running_loop()
                self._reopen = loop.call_later(
                    sc.seconds, lambda: asyncio.ensure_future(self._after_restart())
                )
            return
        if self._server is None:
            await self._open_listener()
        if sc.name == "drop_after":
            assert sc.seconds is not None
            for conn in list(self._conns.values()):
                self._schedule_drop(conn, sc.seconds)

    async def _after_restart(self) -> None:
        self._reopen = None
        self._scenario = Scenario()
        await self._open_listener()
        self._record_event("sim.restarted", port=self._port)
        log.info("sim.restarted", extra={"port": self._port})

    # ------------------------------------------------------------------ records
    def messages(self, name: str | None = None, client_id: int | None = None) -> list[Received]:
        """Messages received so far, optionally only one kind and/or one client id."""
        with self._cond:
            return [
                r
                for r in self._received
                if (name is None or r.name == name)
                and (client_id is None or r.client_id == client_id)
            ]

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Connection-level events (``sim.connection.open``/``close``, ``sim.malformed``...)."""
        with self._cond:
            return [dict(e) for e in self._events if name is None or e["event"] == name]

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until ``predicate()`` holds (re-checked on every message/event)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def connection_count(self) -> int:
        """Connections not yet closed. One being closed counts until its socket is closed
        and its ``sim.connection.close`` is recorded: both change together, so a test that
        saw the count reach 0 also sees every close event."""
        with self._cond:
            return len(self._conns)

    def connected_client_ids(self) -> list[int]:
        """The client ids of the open connections (not of one being closed)."""
        with self._cond:
            conns = list(self._conns.values())
        return sorted(c.client_id for c in conns if c.client_id is not None and not c.closed)

    def _record(self, conn: _Conn, fields: list[str], name: str) -> None:
        client_id = conn.client_id
        if name == "startApi" and len(fields) > 2 and fields[2].lstrip("-").isdigit():
            client_id = int(fields[2])  # the id the client asks for, granted or not
        rec = Received(conn.id, client_id, int(fields[0]), name, tuple(fields), time.monotonic())
        with self._cond:
            self._received.append(rec)
            self._cond.notify_all()

    def _record_event(self, event: str, **data: Any) -> None:
        with self._cond:
            self._events.append({"event": event, "at": time.monotonic(), **data})
            self._cond.notify_all()

    # ------------------------------------------------------------------ plumbing
    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError("FakeGateway is not started")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    async def _open_listener(self) -> None:
        if self._server is not None:
            return
        port = self._port if self._port is not None else self._requested_port
        self._server = await asyncio.start_server(
            self._serve, self.host, port, reuse_address=True
        )
        self._port = self._server.sockets[0].getsockname()[1]
        self._listening.set()
        # Recorded before this loop can accept anything: every sim.connection.open on
        # this listener comes after it (tests measure reconnect lag from it).
        self._record_event("sim.listening", port=self._port)

    async def _close_listener(self) -> None:
        server, self._server = self._server, None
        self._listening.clear()
        if server is not None:
            server.close()
        await self._drop_all("gateway going down")
        if server is not None:
            await server.wait_closed()

    async def _drop_all(self, reason: str) -> None:
        for conn in list(self._conns.values()):
            await self._close(conn, reason)

    async def _shutdown(self) -> None:
        if self._reopen is not None:
            self._reopen.cancel()
        await self._close_listener()  # closing each connection ends its handler
        if self._serving:
            _, stuck = await asyncio.wait(list(self._serving), timeout=2)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)

    def _schedule_drop(self, conn: _Conn, after: float) -> None:
        loop = asyncio.get_running_loop()
        delay = max(0.0, conn.accepted_at + after - loop.time())

        async def drop() -> None:
            await asyncio.sleep(delay)
            await self._close(conn, f"drop_after {after:g}s")

        conn.tasks.append(asyncio.ensure_future(drop()))

    async def _close(self, conn: _Conn, reason: str) -> None:
        if conn.closed:
            return
        conn.closed = True
        current = asyncio.current_task()
        for task in conn.tasks:
            if task is not current:
                task.cancel()
        conn.writer.close()
        try:
            await asyncio.wait_for(conn.writer.wait_closed(), 2.0)
        except TimeoutError:  # a peer that reads nothing: do not wait for the flush
            conn.writer.transport.abort()
            with contextlib.suppress(Exception):
                await conn.writer.wait_closed()
        except Exception:
            pass
        with self._cond:  # out of the count exactly when the close is on record
            self._conns.pop(conn.id, None)
            self._record_event("sim.connection.close", conn=conn.id, client_id=conn.client_id,
                               reason=reason)  # fmt: skip
        log.info("sim.connection.close",
                 extra={"conn": conn.id, "client_id": conn.client_id, "reason": reason})

    # ------------------------------------------------------------------ serving
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is not None:
            self._serving.add(task)
            task.add_done_callback(self._serving.discard)
        conn = _Conn(next(self._conn_ids), reader, writer, loop.time())
        with self._cond:
            self._conns[conn.id] = conn
            self._record_event("sim.connection.open", conn=conn.id, peer=conn.peer)
        log.info("sim.connection.open", extra={"conn": conn.id, "peer": conn.peer})
        sc = self._scenario
        if sc.name == "close_on_accept":
            await self._close(conn, "close_on_accept")
            return
        conn.tasks.append(asyncio.ensure_future(self._writer_loop(conn)))
        if sc.name == "drop_after":
            assert sc.seconds is not None
            self._schedule_drop(conn, sc.seconds)
        reason = "client closed"
        try:
            await self._read_loop(conn)
        except ProtocolError as exc:
            reason = f"malformed: {exc}"
            self._record_event("sim.malformed", conn=conn.id, error=str(exc))
            log.warning("sim.malformed", extra={"conn": conn.id, "error": str(exc)})
        except (ConnectionError, asyncio.IncompleteReadError):
            reason = "client closed"
        except asyncio.CancelledError:
            # Only _shutdown cancels a handler. Not re-raised: asyncio's stream
            # callback would report a cancelled handler as an unhandled error.
            reason = "gateway stopped"
        except Exception as exc:  # a simulator bug: keep serving the others
            reason = f"internal error: {exc!r}"
            self._record_event("sim.internal_error", conn=conn.id, error=repr(exc))
            log.exception("sim.internal_error", extra={"conn": conn.id})
        with contextlib.suppress(asyncio.CancelledError):
            await self._close(conn, reason)

    async def _read_message(self, conn: _Conn) -> bytes | None:
        """One length-prefixed body, or None at a clean end of stream."""
        try:
            header = await conn.reader.readexactly(4)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise ProtocolError("stream ended inside a length prefix") from None
            return None
        (size,) = struct.unpack(">I", header)
        if size == 0 or size > p.MAX_MESSAGE_SIZE:
            raise ProtocolError(f"length prefix {size} out of range")
        try:
            return await asyncio.wait_for(
                conn.reader.readexactly(size), self.partial_message_timeout
            )
        except asyncio.IncompleteReadError as exc:
            raise ProtocolError(
                f"length prefix says {size} bytes, stream ended after {len(exc.partial)}"
            ) from None
        except TimeoutError:
            raise ProtocolError(
                f"length prefix says {size} bytes, none or part arrived within "
                f"{self.partial_message_timeout:g}s"
            ) from None

    async def _read_loop(self, conn: _Conn) -> None:
        try:
            greeting = await conn.reader.readexactly(4)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise ProtocolError(f"bad greeting {exc.partial!r}") from None
            return
        if greeting != p.GREETING:
            raise ProtocolError(f"bad greeting {greeting!r} (expected b'API\\x00')")
        body = await self._read_message(conn)
        if body is None:
            return
        low, high, options = p.parse_version_range(body)
        self._record_event("sim.handshake", conn=conn.id, min_version=low, max_version=high,
                           options=options)  # fmt: skip
        if not low <= self.server_version <= high:
            raise ProtocolError(
                f"client versions {low}..{high} exclude server version {self.server_version}"
            )
        if self._scenario.name != "hang":
            self._send(conn, m.handshake_reply(self.server_version, datetime.now(UTC)))
        while True:
            body = await self._read_message(conn)
            if body is None:
                return
            fields = p.split_fields(body)
            if not fields or not fields[0].lstrip("-").isdigit():
                raise ProtocolError(f"message id {fields[:1]!r} is not a number")
            msg_id = int(fields[0])
            name = p.IN_MESSAGES.get(msg_id)
            if name is None:
                raise ProtocolError(f"unknown message id {msg_id}")
            self._record(conn, fields, name)
            log.debug("sim.message", extra={"conn": conn.id, "client_id": conn.client_id,
                                           "request": name, "fields": fields[1:]})  # fmt: skip
            if self._scenario.name == "hang":
                continue
            try:
                await self._dispatch(conn, msg_id, fields)
            except (IndexError, ValueError) as exc:
                raise ProtocolError(f"bad {name} message: {exc}") from None

    def _send(self, conn: _Conn, fields: list[Field]) -> None:
        if conn.closed:
            return
        delay = (self._scenario.seconds or 0.0) if self._scenario.name == "slow" else 0.0
        conn.outbox.put_nowait((asyncio.get_running_loop().time() + delay, p.frame(fields)))

    def _send_then_close(self, conn: _Conn) -> None:
        conn.outbox.put_nowait((asyncio.get_running_loop().time(), None))

    async def _writer_loop(self, conn: _Conn) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, data = await conn.outbox.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                with contextlib.suppress(Exception):
                    await conn.writer.drain()
                await self._close(conn, "closed by gateway after error")
                return
            conn.writer.write(data)
            with contextlib.suppress(ConnectionError):
                await conn.writer.drain()

    # ------------------------------------------------------------------ requests
    async def _dispatch(self, conn: _Conn, msg_id: int, f: list[str]) -> None:
        sc = self._scenario.name
        if msg_id == 71:  # startApi: version, clientId, optionalCapabilities
            await self._start_api(conn, int(f[2]))
            return
        if not conn.api_started:
            return  # TWS ignores requests before startApi
        if sc == "stall_sync" and msg_id in SYNC_REQUESTS:
            return
        if msg_id == 3 and self._hold_budget is not None:
            if self._hold_budget == 0:
                self._held.append((conn, f))
                self._record_event("sim.order_held", conn=conn.id, client_id=conn.client_id,
                                   order_id=f[1])  # fmt: skip
                return
            self._hold_budget -= 1
        handler = self._handlers.get(msg_id)
        if handler is not None:
            handler(self, conn, f)

    async def _start_api(self, conn: _Conn, client_id: int) -> None:
        sc = self._scenario.name
        conn.client_id = client_id
        if sc == "not_logged_in":
            return
        holder = next(
            (c for c in self._conns.values()
             if c is not conn and c.client_id == client_id and c.api_started
             and not c.closed),
            None,
        )  # fmt: skip
        forced = sc == "client_id_in_use" and self._client_id_in_use in (None, client_id)
        if holder is not None or forced:
            conn.client_id = None  # the id belongs to the other connection
            self._record_event("sim.client_id_in_use", conn=conn.id, client_id=client_id,
                               holder=holder.id if holder else None)  # fmt: skip
            self._send(conn, m.error(-1, 326, CLIENT_ID_IN_USE_TEXT))
            self._send_then_close(conn)
            return
        conn.api_started = True
        self._record_event("sim.api_started", conn=conn.id, client_id=client_id)
        self._send(conn, m.next_valid_id(self.state.next_order_id))
        self._send(conn, m.managed_accounts(self.state.accounts))

    def _req_ids(self, conn: _Conn, f: list[str]) -> None:
        self._send(conn, m.next_valid_id(self.state.next_order_id))

    def _req_managed_accts(self, conn: _Conn, f: list[str]) -> None:
        self._send(conn, m.managed_accounts(self.state.accounts))

    def _req_current_time(self, conn: _Conn, f: list[str]) -> None:
        self._send(conn, m.current_time(datetime.now(UTC)))

    def _req_positions(self, conn: _Conn, f: list[str]) -> None:
        conn.positions_subscribed = True
        for pos in self.state.position_list():
            self._send(conn, m.position(pos))
        self._send(conn, m.position_end())

    def _req_account_updates(self, conn: _Conn, f: list[str]) -> None:
        subscribe, account = f[2], f[3]
        if subscribe != "1":
            conn.account_subscribed = ""
            return
        account = account or self.state.accounts[0]
        conn.account_subscribed = account
        now = datetime.now(UTC)
        for msg in m.account_values(account, self.cash):
            self._send(conn, msg)
        for pos in self.state.position_list():
            if pos.account == account and pos.quantity:
                self._send(conn, m.portfolio_value(pos, self._price(pos.symbol, pos.avg_cost)))
        self._send(conn, m.account_update_time(now))
        self._send(conn, m.account_download_end(account))

    def _cancel_positions(self, conn: _Conn, f: list[str]) -> None:
        conn.positions_subscribed = False

    def _req_account_updates_multi(self, conn: _Conn, f: list[str]) -> None:
        req_id, account = int(f[2]), f[3]
        self._send(conn, m.account_update_multi(req_id, account, "NetLiquidation",
                                                f"{self.cash:.2f}"))  # fmt: skip
        self._send(conn, m.account_update_multi_end(req_id))

    def _req_completed_orders(self, conn: _Conn, f: list[str]) -> None:
        self._send(conn, m.completed_orders_end())

    def _req_open_orders(self, conn: _Conn, f: list[str]) -> None:
        # reqOpenOrders reports this client's orders (client 0 sees all, as in TWS);
        # reqAllOpenOrders (16) reports every client's.
        everyone = int(f[0]) == 16 or conn.client_id == 0
        for order in self.state.open_orders(None if everyone else conn.client_id):
            self._send(conn, m.open_order(order))
            self._send(conn, m.order_status(order))
        self._send(conn, m.open_order_end())

    def _req_executions(self, conn: _Conn, f: list[str]) -> None:
        req_id = int(f[2])
        client_id = int(f[3] or 0)
        account, since, symbol, sec_type, exchange, side = (f + [""] * 10)[4:10]
        since_dt = _parse_filter_time(since)
        with self.state.lock:
            executions = list(self.state.executions)
        for e in executions:
            if client_id and e.client_id != client_id:
                continue
            if account and e.account != account:
                continue
            if symbol and e.symbol != symbol.upper():
                continue
            if sec_type and e.sec_type != sec_type:
                continue
            if exchange and exchange not in (e.exchange, "SMART"):
                continue
            if side and {"BUY": "BOT", "SELL": "SLD"}.get(side.upper(), side) != e.side:
                continue
            if since_dt and e.time < since_dt:
                continue
            self._send(conn, m.execution(req_id, e))
            self._send(conn, m.commission_report(e))
        self._send(conn, m.execution_end(req_id))

    def _req_contract_details(self, conn: _Conn, f: list[str]) -> None:
        req_id = int(f[2])
        wc = p.read_contract(f, 3)
        contract = self.state.contract_for(wc.symbol, wc.con_id)
        ok = (
            contract is not None
            and wc.sec_type in ("", contract.sec_type)
            and wc.currency in ("", contract.currency)
        )
        if not ok or contract is None:
            self._send(conn, m.error(req_id, 200, NO_SECURITY_DEFINITION))
            return
        self._send(conn, m.contract_details(req_id, contract))
        self._send(conn, m.contract_details_end(req_id))

    def _place_order(self, conn: _Conn, f: list[str]) -> None:
        assert conn.client_id is not None
        order_id = int(f[1])
        wc = p.read_contract(f, 2)
        action, qty_text, order_type = f[16], f[17], f[18]
        lmt, aux, tif, account = p.to_float(f[19]), p.to_float(f[20]), f[21], f[23]
        order_ref, transmit, parent_id = f[26], f[27] != "0", int(f[28] or 0)
        key = (conn.client_id, order_id)
        existing = self.state.orders.get(key)
        if existing is not None and not existing.is_open and existing.transmit:
            self._send(conn, m.error(order_id, 103, "Duplicate order id"))
            return
        contract = self.state.contract_for(wc.symbol, wc.con_id)
        if contract is None:
            self._send(conn, m.error(order_id, 200, NO_SECURITY_DEFINITION))
            return
        account = account or self.state.accounts[0]
        problem = None
        if account not in self.state.accounts:
            problem = f"Invalid account {account}"
        elif action not in ("BUY", "SELL", "SSHORT"):
            problem = f"Invalid action {action!r}"
        elif not qty_text or float(qty_text) <= 0:
            problem = "Order quantity must be positive"
        elif order_type in ("LMT", "LOC", "STP LMT") and lmt is None:
            problem = f"{order_type} order needs a limit price"
        elif order_type in ("STP", "STP LMT") and aux is None:
            problem = f"{order_type} order needs a stop price"
        if problem:
            self._send(conn, m.error(order_id, 321, f"Error validating request: {problem}"))
            return
        order = SimOrder(
            order_id=order_id,
            perm_id=existing.perm_id if existing else self.state.new_perm_id(),
            client_id=conn.client_id,
            account=account,
            symbol=contract.symbol,
            sec_type=contract.sec_type,
            exchange=wc.exchange or "SMART",
            currency=contract.currency,
            con_id=contract.con_id,
            action=action,
            quantity=float(qty_text),
            order_type=order_type,
            lmt_price=lmt,
            aux_price=aux,
            tif=tif or "DAY",
            order_ref=order_ref,
            parent_id=parent_id,
            transmit=transmit,
        )
        if self._scenario.name == "reject_orders":
            order.status = "Cancelled"
            self.state.add_order(order)
            self._send(conn, m.error(order_id, 201,
                                     "Order rejected - reason: simulated rejection "
                                     "(reject_orders scenario)"))  # fmt: skip
            return
        self.state.add_order(order)
        if not transmit:
            return  # held until a transmitting order of its group arrives
        group = [order]
        if parent_id:
            parent = self.state.orders.get((conn.client_id, parent_id))
            if parent is not None and not parent.transmit:
                group.insert(0, parent)
            group += [
                o for o in self.state.orders.values()
                if o.parent_id == parent_id and not o.transmit and o is not order
            ]  # fmt: skip
        for o in group:
            o.transmit = True
        for o in group:
            self._activate(conn, o)

    def _activate(self, conn: _Conn, order: SimOrder) -> None:
        parent = self.state.orders.get((order.client_id, order.parent_id))
        waiting = parent is not None and parent.status != "Filled"
        order.status = "PreSubmitted" if waiting else "Submitted"
        self._send(conn, m.open_order(order))
        self._send(conn, m.order_status(order))
        if order.order_type in IMMEDIATE_FILL_TYPES and not waiting:
            execution = self.state.fill(order, self._price(order.symbol, 0.0))
            self._send(conn, m.execution(-1, execution))
            self._send(conn, m.commission_report(execution))
            self._send(conn, m.open_order(order))
            self._send(conn, m.order_status(order))
            self._stream_position(order.account, order.symbol)
            for child in list(self.state.orders.values()):
                if child.parent_id == order.order_id and child.client_id == order.client_id \
                        and child.is_open and child.transmit:
                    self._activate(conn, child)

    def _cancel_order(self, conn: _Conn, f: list[str]) -> None:
        assert conn.client_id is not None
        order_id = int(f[2])
        order = self.state.orders.get((conn.client_id, order_id))
        if order is None or not order.is_open:
            self._send(conn, m.error(order_id, 10147,
                                     f"OrderId {order_id} that needs to be cancelled "
                                     "is not found."))  # fmt: skip
            return
        self._cancel(order)

    def _global_cancel(self, conn: _Conn, f: list[str]) -> None:
        for order in self.state.open_orders(None):
            self._cancel(order)

    def _cancel(self, order: SimOrder) -> None:
        order.status = "Cancelled"
        owner = next((c for c in self._conns.values() if c.client_id == order.client_id
                      and c.api_started and not c.closed), None)  # fmt: skip
        if owner is not None:
            self._send(owner, m.order_status(order))
            self._send(owner, m.error(order.order_id, 202, "Order Canceled - reason:"))
        for child in list(self.state.orders.values()):
            if child.parent_id == order.order_id and child.client_id == order.client_id \
                    and child.is_open:
                self._cancel(child)

    def _stream_position(self, account: str, symbol: str) -> None:
        """Push a changed position to subscribers, as TWS does after a fill."""
        pos = self.state.positions.get((account, symbol))
        if pos is None:
            return
        for c in list(self._conns.values()):
            if c.positions_subscribed:
                self._send(c, m.position(pos))
            if c.account_subscribed == account:
                self._send(c, m.portfolio_value(pos, self._price(symbol, pos.avg_cost)))

    def _price(self, symbol: str, fallback: float) -> float:
        contract = self.state.contract_for(symbol)
        return contract.price if contract is not None else fallback

    _handlers: ClassVar[dict[int, Callable[[FakeGateway, _Conn, list[str]], None]]] = {
        3: _place_order,
        4: _cancel_order,
        5: _req_open_orders,
        6: _req_account_updates,
        7: _req_executions,
        8: _req_ids,
        9: _req_contract_details,
        16: _req_open_orders,
        17: _req_managed_accts,
        49: _req_current_time,
        58: _global_cancel,
        61: _req_positions,
        64: _cancel_positions,
        76: _req_account_updates_multi,
        99: _req_completed_orders,
    }


def _parse_filter_time(text: str) -> datetime | None:
    """Parse an execution filter's time (``yyyymmdd hh:mm:ss[ zone]``); UTC assumed."""
    text = text.strip()
    if not text:
        return None
    parts = text.replace("-", " ").split()
    try:
        return datetime.strptime(" ".join(parts[:2]), "%Y%m%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None

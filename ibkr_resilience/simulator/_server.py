"""The simulator's transport: listener, connections, framing, handshake, close.

``Server`` owns the asyncio side of the sockets and nothing else. It reads the
``API\\0`` greeting and the version range, then length-prefixed messages, and hands
each message's fields to ``on_message``; it writes what it is given through one
queue per connection (so a reply delay never reorders messages). What it accepts,
answers and delays is the faults' call (``FaultChain``); what a message means is
the codec's and the broker's. Malformed input closes that connection only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import struct
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from . import _messages as m
from . import _protocol as p
from ._faults import Close, Drop, FaultChain, Proceed
from ._protocol import Field, ProtocolError
from ._recording import Recorder

log = logging.getLogger("ibkr_resilience.simulator")

RELAY_DOWN = "relay: gateway behind unreachable"

MessageHandler = Callable[["Connection", list[str]], Awaitable[None]]


class Connection:
    """One client connection: socket, session state, outgoing queue.

    Faults read ``id``, ``peer``, ``client_id`` (``None`` until ``startApi``, and when
    refused), ``api_started``, ``accepted_at`` (gateway loop clock, seconds) and
    ``closed``; the rest is the server's and the broker's.
    """

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
        self.max_reported_order_id = 0  # highest order id an openOrder told this client
        self.positions_subscribed = False
        self.account_subscribed = ""  # account whose updates this connection streams
        self.outbox: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()
        self.tasks: list[asyncio.Task[Any]] = []
        self.closed = False

    def __repr__(self) -> str:
        return f"Connection(id={self.id}, peer={self.peer}, client_id={self.client_id})"


class Server:
    """Listens on ``host:port`` and serves connections inside the running loop."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        server_version: int,
        partial_message_timeout: float,
        recorder: Recorder,
        faults: FaultChain,
        on_message: MessageHandler,
    ) -> None:
        self.host = host
        self.port: int | None = None
        self._requested_port = port
        self.server_version = server_version
        self.partial_message_timeout = partial_message_timeout
        self._recorder = recorder
        self._faults = faults
        self._on_message = on_message
        self._server: asyncio.Server | None = None
        self._conns: dict[int, Connection] = {}
        self._serving: set[asyncio.Task[Any]] = set()
        self._conn_ids = itertools.count(1)
        self.listening = threading.Event()
        self._held: socket.socket | None = None
        self.relay = False
        """A socat relay in front: the port stays open while the gateway is down or
        restarting, and each connection is then accepted and closed at once."""

    # ------------------------------------------------------------------ listener
    def connections(self) -> list[Connection]:
        return list(self._conns.values())

    async def sync_listener(self) -> None:
        """Open or close the port as the faults want it (a relay keeps it open and cuts
        the connections instead, as socat does when the gateway behind goes away)."""
        if self._faults.listening:
            await self.open_listener()
        elif self.relay:
            await self.open_listener()
            await self.drop_all(RELAY_DOWN)
        else:
            await self.close_listener()

    async def open_listener(self) -> None:
        if self._server is not None:
            return
        port = self.port if self.port is not None else self._requested_port
        self._release_port()
        self._server = await asyncio.start_server(self._serve, self.host, port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        self.listening.set()
        # Recorded before this loop can accept anything: every sim.connection.open on
        # this listener comes after it (tests measure reconnect lag from it).
        self._recorder.event("sim.listening", port=self.port)

    async def close_listener(self) -> None:
        """Close the port and cut every connection (a gateway going down)."""
        server, self._server = self._server, None
        self.listening.clear()
        if server is not None:
            server.close()
        await self.drop_all("gateway going down")
        if server is not None:
            await server.wait_closed()
            self._hold_port()

    def _hold_port(self) -> None:
        """Keep the closed port bound, not listening, until the gateway listens again.

        Connections are refused as for a stopped gateway, but no other process on a busy
        machine can be handed the port meanwhile: a client reconnecting after a restart
        must meet this gateway again, never another one (it happened under load).
        """
        if self.port is None or self._held is not None:
            return
        family, kind, proto, _, address = socket.getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM
        )[0]
        held = socket.socket(family, kind, proto)
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
        try:
            held.bind(address)
        except OSError:  # best effort: taken already; the next listen reports it
            held.close()
            return
        self._held = held

    def _release_port(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.close()

    async def drop_all(self, reason: str) -> None:
        for conn in list(self._conns.values()):
            await self.close(conn, reason)

    async def shutdown(self) -> None:
        await self.close_listener()  # closing each connection ends its handler
        self._release_port()
        if self._serving:
            _, stuck = await asyncio.wait(list(self._serving), timeout=2)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)

    # ------------------------------------------------------------------ output
    def send(self, conn: Connection, fields: list[Field]) -> None:
        """Queue one message, held back by the faults' reply delay."""
        if conn.closed:
            return
        due = asyncio.get_running_loop().time() + self._faults.reply_delay(conn)
        conn.outbox.put_nowait((due, p.frame(fields)))

    def send_then_close(self, conn: Connection) -> None:
        """Close once everything queued before has been written."""
        conn.outbox.put_nowait((asyncio.get_running_loop().time(), None))

    def later(self, conn: Connection, delay: float, action: Callable[[], object]) -> None:
        """Run ``action`` (awaiting it if it returns an awaitable) in ``delay`` seconds,
        unless ``conn`` closes first."""

        async def run() -> None:
            await asyncio.sleep(delay)
            result = action()
            if asyncio.iscoroutine(result):
                await result

        conn.tasks.append(asyncio.ensure_future(run()))

    def close_later(self, conn: Connection, delay: float, reason: str) -> None:
        self.later(conn, delay, lambda: self.close(conn, reason))

    async def _writer_loop(self, conn: Connection) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, data = await conn.outbox.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                with contextlib.suppress(Exception):
                    await conn.writer.drain()
                await self.close(conn, "closed by gateway after error")
                return
            conn.writer.write(data)
            with contextlib.suppress(ConnectionError):
                await conn.writer.drain()

    async def close(self, conn: Connection, reason: str) -> None:
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
        # The close is on record before the connection leaves the table, and both after
        # its socket is closed: a test that saw the count drop also sees the event, and
        # the peer has seen the close.
        self._recorder.event(
            "sim.connection.close", conn=conn.id, client_id=conn.client_id, reason=reason
        )
        self._conns.pop(conn.id, None)
        log.info(
            "sim.connection.close",
            extra={"conn": conn.id, "client_id": conn.client_id, "reason": reason},
        )

    # ------------------------------------------------------------------ input
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is not None:
            self._serving.add(task)
            task.add_done_callback(self._serving.discard)
        conn = Connection(next(self._conn_ids), reader, writer, loop.time())
        self._conns[conn.id] = conn
        self._recorder.event("sim.connection.open", conn=conn.id, peer=conn.peer)
        log.info("sim.connection.open", extra={"conn": conn.id, "peer": conn.peer})
        answer: Proceed | Close = self._faults.on_accept(conn)
        if self.relay and not self._faults.listening:
            answer = Close(RELAY_DOWN)
        if isinstance(answer, Close):
            await self.close(conn, answer.reason)
            return
        conn.tasks.append(asyncio.ensure_future(self._writer_loop(conn)))
        reason = "client closed"
        try:
            await self._read_loop(conn)
        except ProtocolError as exc:
            reason = f"malformed: {exc}"
            self._recorder.event("sim.malformed", conn=conn.id, error=str(exc))
            log.warning("sim.malformed", extra={"conn": conn.id, "error": str(exc)})
        except (ConnectionError, asyncio.IncompleteReadError):
            reason = "client closed"
        except asyncio.CancelledError:
            # Only shutdown() cancels a handler. Not re-raised: asyncio's stream
            # callback would report a cancelled handler as an unhandled error.
            reason = "gateway stopped"
        except Exception as exc:  # a simulator bug: keep serving the others
            reason = f"internal error: {exc!r}"
            self._recorder.event("sim.internal_error", conn=conn.id, error=repr(exc))
            log.exception("sim.internal_error", extra={"conn": conn.id})
        with contextlib.suppress(asyncio.CancelledError):
            await self.close(conn, reason)

    async def _read_message(self, conn: Connection) -> bytes | None:
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

    async def _read_loop(self, conn: Connection) -> None:
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
        self._recorder.event(
            "sim.handshake", conn=conn.id, min_version=low, max_version=high, options=options
        )
        if not low <= self.server_version <= high:
            raise ProtocolError(
                f"client versions {low}..{high} exclude server version {self.server_version}"
            )
        answer = self._faults.on_handshake(conn)
        if isinstance(answer, Close):
            await self.close(conn, answer.reason)
            return
        if not isinstance(answer, Drop):
            self.send(conn, m.handshake_reply(self.server_version, datetime.now(UTC)))
        while not conn.closed:
            body = await self._read_message(conn)
            if body is None:
                return
            await self._on_message(conn, p.split_fields(body))

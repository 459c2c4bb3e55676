"""From a received message to its answer: decode, record, ask the faults, route.

The one path every request takes, in this order: the codec decodes it; it is
recorded (``FakeGateway.messages``) and logged; requests before ``startApi`` are
ignored as TWS does; the faults answer (``on_request``); then ``startApi`` is handled
here (it is session state: client ids, the 326 refusal) and every other request goes
to the broker through its ``ROUTES`` table.
"""

from __future__ import annotations

import logging
import time

from . import _messages as m
from ._broker import ROUTES, Broker
from ._codec import Request, StartApi, decode, message_id
from ._faults import CLIENT_ID_IN_USE_TEXT, Close, Delay, Drop, Fail, FaultChain, Proceed
from ._protocol import ProtocolError
from ._recording import Received, Recorder
from ._server import Connection, Server

log = logging.getLogger("ibkr_resilience.simulator")


class Dispatcher:
    """Turns each client message into the gateway's answer (on the gateway's thread)."""

    def __init__(
        self, server: Server, broker: Broker, faults: FaultChain, recorder: Recorder
    ) -> None:
        self._server = server
        self._broker = broker
        self._faults = faults
        self._recorder = recorder

    async def on_message(self, conn: Connection, fields: list[str]) -> None:
        """Handle one message; ``ProtocolError`` if it is not a well-formed request."""
        msg_id, name = message_id(fields)
        request: Request | None = None
        error: ProtocolError | None = None
        try:
            request = decode(fields)
        except ProtocolError as exc:
            error = exc
        client_id = conn.client_id
        if isinstance(request, StartApi):
            client_id = request.client_id  # the id the client asks for, granted or not
        self._recorder.message(
            Received(conn.id, client_id, msg_id, name, tuple(fields), time.monotonic(), request)
        )
        log.debug(
            "sim.message",
            extra={
                "conn": conn.id,
                "client_id": conn.client_id,
                "request": name,
                "fields": fields[1:],
            },
        )
        if error is not None:
            raise error
        assert request is not None
        if not conn.api_started and not isinstance(request, StartApi):
            return  # TWS ignores requests before startApi
        await self._answer(conn, request, self._faults.on_request(conn, request))

    async def _answer(
        self, conn: Connection, request: Request, answer: Proceed | Drop | Delay | Fail | Close
    ) -> None:
        if isinstance(answer, Proceed):
            for code, text in answer.notices:
                self._server.send(conn, m.error(request.reply_id, code, text))
            self.process(conn, request)
        elif isinstance(answer, Delay):
            self._server.later(conn, answer.seconds, lambda: self.process(conn, request))
        elif isinstance(answer, Fail):
            self._server.send(conn, m.error(request.reply_id, answer.code, answer.text))
        elif isinstance(answer, Close):
            await self._server.close(conn, answer.reason)

    def process(self, conn: Connection, request: Request) -> None:
        """Serve ``request`` normally (the faults have had their say)."""
        if isinstance(request, StartApi):
            self._start_api(conn, request)
            return
        route = ROUTES.get(request.name)
        if route is not None:
            route.handle(self._broker, conn, request)

    def _start_api(self, conn: Connection, request: StartApi) -> None:
        client_id = request.client_id
        conn.client_id = client_id
        answer = self._faults.on_start_api(conn, request)
        if isinstance(answer, Drop):
            return
        if isinstance(answer, Close):
            self._server.close_later(conn, 0.0, answer.reason)
            return
        if isinstance(answer, Fail):
            self._refuse(conn, answer.code, answer.text)
            return
        holder = next(
            (
                c
                for c in self._server.connections()
                if c is not conn and c.client_id == client_id and c.api_started and not c.closed
            ),
            None,
        )
        if holder is not None:
            self._recorder.event(
                "sim.client_id_in_use", conn=conn.id, client_id=client_id, holder=holder.id
            )
            self._refuse(conn, 326, CLIENT_ID_IN_USE_TEXT)
            return
        for code, text in answer.notices:
            self._server.send(conn, m.error(-1, code, text))
        conn.api_started = True
        self._recorder.event("sim.api_started", conn=conn.id, client_id=client_id)
        self._broker.api_started(conn)

    def _refuse(self, conn: Connection, code: int, text: str) -> None:
        """TWS's refusal of an API start: the error, then the connection closes."""
        conn.client_id = None  # the id is not this connection's
        self._server.send(conn, m.error(-1, code, text))
        self._server.send_then_close(conn)

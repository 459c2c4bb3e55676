"""Loopback stand-ins for the HTTP endpoints the package talks to (Telegram Bot API,
healthchecks.io): a recording HTTP server and a TCP black hole, both on 127.0.0.1.

    with HttpServer(answers=[(429, {...}), (200, {"ok": True})]) as api:
        ...  # point the code at api.url
    api.requests[0].json["text"]

    with BlackHole() as hole:
        ...  # hole.url accepts, reads and never answers
"""

from __future__ import annotations

import json
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs

# (status, body): ``bytes`` are sent as they are, anything else as JSON.
Answer = tuple[int, Any]
Answers = list[Answer] | Callable[["Request"], Answer]

OK_JSON: Answer = (200, {"ok": True, "result": {}})


def closed_port_url(path: str = "") -> str:
    """A URL on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


class _Serving:
    """Starts ``_thread`` on entering the ``with`` block, ``close()``s on leaving it."""

    _thread: threading.Thread

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass(frozen=True)
class Request:
    """One request the server received."""

    method: str
    path: str  # with the query string, as sent
    headers: dict[str, str]  # names lower-cased
    body: bytes
    at: float  # time.monotonic() on arrival
    peer: tuple[str, int] = ("", 0)  # the client's address: one per TCP connection

    @property
    def json(self) -> Any:
        """The body parsed as JSON; ``None`` when it is empty or not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def text(self) -> str:
        return self.body.decode()

    @property
    def route(self) -> str:
        """The path without the query string."""
        return self.path.partition("?")[0]

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(self.path.partition("?")[2])


class HttpServer(_Serving):
    """A threading HTTP server on 127.0.0.1 that records every request.

    ``answers`` says what to answer: a list of ``(status, body)``, the n-th request
    getting the n-th answer and the last one repeating, or a callable given the
    :class:`Request`. ``url`` is ``http://127.0.0.1:<port>`` plus ``path``.
    ``keep_alive=True`` speaks HTTP/1.1 and keeps a connection open between requests
    (as healthchecks.io and the Bot API do); each request's ``peer`` tells the
    connections apart.
    """

    def __init__(
        self, answers: Answers | None = None, *, path: str = "", keep_alive: bool = False
    ) -> None:
        self.answers: Answers = [OK_JSON] if answers is None else answers
        self.keep_alive = keep_alive
        self._requests: list[Request] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port: int = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}{path}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), daemon=True
        )

    def answer(self, *answers: Answer) -> None:
        """Answer the n-th request with ``answers[n]``; the last one repeats."""
        self.answers = list(answers)

    @property
    def requests(self) -> list[Request]:
        """The requests received so far, in order (a copy)."""
        with self._lock:
            return list(self._requests)

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> bool:
        """Whether ``n`` requests have arrived within ``timeout`` seconds (no polling)."""
        with self._arrived:
            return self._arrived.wait_for(lambda: len(self._requests) >= n, timeout)

    def _respond(self, request: Request) -> Answer:
        with self._lock:
            self._requests.append(request)
            self._arrived.notify_all()
            count, answers = len(self._requests), self.answers
        if callable(answers):
            return answers(request)
        return answers[min(count, len(answers)) - 1]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if owner.keep_alive else "HTTP/1.0"
            # The headers and the body are two writes: with Nagle on, the body of an
            # answer on a kept connection waits out the client's delayed ACK (40 ms).
            disable_nagle_algorithm = True

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(
                    method=self.command,
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length) if length else b"",
                    at=time.monotonic(),
                    peer=(str(self.client_address[0]), int(self.client_address[1])),
                )
                status, body = owner._respond(request)
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                if not isinstance(body, bytes):
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(raw)

            do_GET = do_POST = do_HEAD = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class BotApi(HttpServer):
    """A Telegram Bot API stand-in: answers ``{"ok": true, ...}`` unless told otherwise."""

    @property
    def texts(self) -> list[str]:
        """The ``text`` of every JSON request body (sendMessage), in order."""
        return [
            str(r.json.get("text", "")) if isinstance(r.json, dict) else "" for r in self.requests
        ]


class BlackHole(_Serving):
    """Accepts TCP connections on 127.0.0.1 and reads them, never answers.

    ``accepted`` holds the time.monotonic() of each accept, ``received`` every byte read
    (all connections together). Everything is closed on exit.
    """

    def __init__(self, *, path: str = "") -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}{path}"
        self._accepted: list[float] = []
        self._received = bytearray()
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def accepted(self) -> list[float]:
        with self._lock:
            return list(self._accepted)

    @property
    def received(self) -> bytes:
        with self._lock:
            return bytes(self._received)

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in selector.select(0.02):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self._listener:
                        try:
                            conn, _ = sock.accept()
                        except OSError:
                            continue
                        with self._lock:
                            self._accepted.append(time.monotonic())
                            self._held.append(conn)
                        selector.register(conn, selectors.EVENT_READ)
                        continue
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        data = b""
                    if not data:  # the peer went away: keep it open, stop watching it
                        selector.unregister(sock)
                    with self._lock:
                        self._received.extend(data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self._held:
            conn.close()
        self._listener.close()

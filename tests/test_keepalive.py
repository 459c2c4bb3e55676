"""The healthcheck's HTTP client (``_notify/keepalive.py``) against real loopback servers."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator

import pytest

from ibkr_resilience._notify.http import MAX_RESPONSE_BYTES, RequestsPost
from ibkr_resilience._notify.keepalive import KeptConnectionPost, ping_post
from ibkr_resilience.testing import HttpServer


class OneShotServer:
    """Answers each connection's first request as HTTP/1.1 keep-alive, then hangs up
    without saying so (a server whose keep-alive timeout passed), or (``silent``)
    reads and never answers. ``accepted`` is set on every accept."""

    def __init__(self, *, silent: bool = False) -> None:
        self.silent = silent
        self.connections = 0
        self.accepted = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/ping"
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            self._held.append(conn)
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                request += chunk
            self.accepted.set()
            if self.silent:
                continue
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
            conn.close()

    def close(self) -> None:
        self._listener.close()
        for conn in self._held:
            conn.close()


@pytest.fixture
def keep_alive() -> Iterator[HttpServer]:
    with HttpServer([(200, b"OK")], path="/ping", keep_alive=True) as server:
        yield server


def test_two_posts_share_one_connection(keep_alive: HttpServer) -> None:
    post = KeptConnectionPost()
    first = post(keep_alive.url + "/start", timeout=5, params={"rid": "r1"}, data=b"hello")
    second = post(keep_alive.url, timeout=5, json={"a": 1})
    post.close()
    assert (first.status, first.body, second.status) == (200, b"OK", 200)
    start, outcome = keep_alive.requests
    assert (start.path, start.body) == ("/ping/start?rid=r1", b"hello")
    assert (outcome.json, outcome.headers["content-type"]) == ({"a": 1}, "application/json")
    assert start.peer == outcome.peer


def test_a_connection_the_server_dropped_is_replaced_once() -> None:
    server = OneShotServer()
    try:
        post = KeptConnectionPost()
        assert post(server.url, timeout=5).status == 200
        # The server hung up the kept connection: the next post finds it dead and
        # sends again on a new one, without an error reaching the caller.
        assert post(server.url, timeout=5).status == 200
        assert server.connections == 2
    finally:
        server.close()


def test_a_refused_connect_is_not_retried() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        KeptConnectionPost()(f"http://127.0.0.1:{port}/ping", timeout=5)


def test_a_large_answer_is_cut_and_its_connection_not_reused() -> None:
    big = b"x" * (MAX_RESPONSE_BYTES + 10)
    with HttpServer([(200, big)], keep_alive=True) as server:
        post = KeptConnectionPost()
        answer = post(server.url, timeout=5)
        post(server.url, timeout=5)
        post.close()
        first, second = server.requests
    assert len(answer.body) == MAX_RESPONSE_BYTES
    assert first.peer != second.peer


def test_a_redirect_is_answered_not_followed() -> None:
    with HttpServer([(302, b"")], keep_alive=True) as server:
        answer = KeptConnectionPost()(server.url, timeout=5)
        assert answer.status == 302 and len(server.requests) == 1


def test_close_ends_a_post_stuck_on_a_silent_server() -> None:
    server = OneShotServer(silent=True)
    post = KeptConnectionPost()
    errors: list[BaseException] = []

    def send() -> None:
        try:
            post(server.url, timeout=60)
        except BaseException as exc:
            errors.append(exc)

    sender = threading.Thread(target=send)
    try:
        sender.start()
        assert server.accepted.wait(10)
        post.close()
        sender.join(10)
        assert not sender.is_alive()
        # Closed while waiting for the answer (OSError) or just before asking for it.
        assert len(errors) == 1 and isinstance(errors[0], OSError | http.client.HTTPException)
    finally:
        server.close()


def test_a_proxy_variable_picks_requests() -> None:
    assert isinstance(ping_post({"HTTPS_PROXY": "http://127.0.0.1:3128"}), RequestsPost)
    assert isinstance(ping_post({"all_proxy": "socks5://127.0.0.1:1080"}), RequestsPost)
    assert isinstance(ping_post({"HTTPS_PROXY": ""}), KeptConnectionPost)
    assert isinstance(ping_post({"PATH": "/usr/bin"}), KeptConnectionPost)

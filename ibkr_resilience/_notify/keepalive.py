"""The healthcheck's own :class:`~.http.HttpPost`: the standard library, one kept connection.

Every run with ``IBKR_HEALTHCHECK_URL`` sends two pings, so their client is on every
run's path, not only a failing run's like the alerts'. ``requests`` costs a cron run
about 0.1 s to import (urllib3, charset detection, idna, its adapters) and several
times ``http.client``'s work per request; a ping needs none of it. This client:

* keeps one connection per ``scheme://host:port``, so ``/start`` and the outcome share
  one TCP (and TLS) set-up, and opens a new one once if the kept one turned out closed;
* verifies TLS like ``requests`` does, against ``certifi``'s bundle when it is installed
  (it comes with ``requests``), else the system's;
* reads at most :data:`~.http.MAX_RESPONSE_BYTES` and follows no redirects.

It does not speak to proxies: when a proxy variable (``HTTPS_PROXY``, ``ALL_PROXY``...)
is set, :func:`ping_post` returns the ``requests`` client, which honours them and
``NO_PROXY``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from typing import TYPE_CHECKING, Any, Unpack
from urllib.parse import SplitResult, urlencode, urlsplit

from .http import MAX_RESPONSE_BYTES, HttpPost, HttpResponse, PostOptions, RequestsPost

if TYPE_CHECKING:
    import http.client

# A kept connection the server closed meanwhile (its keep-alive timeout) fails with
# one of these (http.client's RemoteDisconnected is a ConnectionResetError): the ping
# is sent once more on a new connection (a ping received twice is harmless).
_STALE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class KeptConnectionPost:
    """An :class:`~.http.HttpPost` on ``http.client`` keeping one idle connection.

    ``timeout`` (seconds) bounds the connect and each read. A connection is taken out
    while a request uses it, so a second call meanwhile (an outcome ping while a slow
    ``/start`` still waits) opens its own. :meth:`close` never waits for a request: it
    closes the idle connection and those in use, which ends a request stuck on a silent
    server. Raises what ``http.client`` raises (``OSError``, ``HTTPException``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: http.client.HTTPConnection | None = None
        self._origin: tuple[str, str, int | None] | None = None
        self._busy: set[http.client.HTTPConnection] = set()
        self._generation = 0

    def __call__(self, url: str, *, timeout: float, **options: Unpack[PostOptions]) -> HttpResponse:
        parts = urlsplit(url)
        target = (parts.path or "/") + _query(parts, options.get("params"))
        body, headers = _body(options)
        conn, generation = self._take(parts, timeout)
        kept = conn.sock is not None
        try:
            response = _exchange(conn, target, body, headers)
        except _STALE:
            self._drop(conn)
            if not kept:
                raise
            conn, generation = self._take(parts, timeout)
            try:
                response = _exchange(conn, target, body, headers)
            except BaseException:
                self._drop(conn)
                raise
        except BaseException:
            self._drop(conn)
            raise
        self._give_back(conn, _origin(parts), generation)
        return response

    def close(self) -> None:
        """Close the idle connection and any in use; a later call opens a new one."""
        with self._lock:
            conns = [c for c in (self._idle, *self._busy) if c is not None]
            self._idle, self._origin, self._busy = None, None, set()
            self._generation += 1
        for conn in conns:
            _hang_up(conn)

    def _take(self, parts: SplitResult, timeout: float) -> tuple[http.client.HTTPConnection, int]:
        with self._lock:
            conn, origin = self._idle, self._origin
            self._idle, self._origin = None, None
            if conn is None or origin != _origin(parts):
                stale, conn = conn, _new_connection(parts, timeout)
            else:
                stale = None
                conn.timeout = timeout
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
            self._busy.add(conn)
            generation = self._generation
        if stale is not None:
            stale.close()
        return conn, generation

    def _give_back(
        self,
        conn: http.client.HTTPConnection,
        origin: tuple[str, str, int | None],
        generation: int,
    ) -> None:
        with self._lock:
            self._busy.discard(conn)
            keep = generation == self._generation and self._idle is None
            if keep:
                self._idle, self._origin = conn, origin
        if not keep:
            conn.close()

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._busy.discard(conn)
        conn.close()


def ping_post(environ: Any = None) -> HttpPost:
    """The client for a check's pings: :class:`KeptConnectionPost`, or a pooled
    ``requests`` client when the environment names a proxy."""
    env = os.environ if environ is None else environ
    if any(key.lower() in ("http_proxy", "https_proxy", "all_proxy") and env[key] for key in env):
        return RequestsPost(pooled=True)
    return KeptConnectionPost()


def _exchange(
    conn: http.client.HTTPConnection, target: str, body: bytes, headers: dict[str, str]
) -> HttpResponse:
    conn.request("POST", target, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read(MAX_RESPONSE_BYTES)
    if not response.isclosed():
        # More than we read, or a body without a length: the connection cannot be reused.
        conn.close()
    return HttpResponse(response.status, response.reason or "", data)


def _hang_up(conn: http.client.HTTPConnection) -> None:
    # close() alone does not wake a thread blocked reading the socket (Linux): shut it
    # down first, so a request stuck on a silent server ends now.
    sock = conn.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    conn.close()


def _new_connection(parts: SplitResult, timeout: float) -> http.client.HTTPConnection:
    import http.client  # deferred: a run without a healthcheck URL never pays for it

    host = parts.hostname or ""
    if parts.scheme == "https":
        return http.client.HTTPSConnection(
            host, parts.port, timeout=timeout, context=_tls_context()
        )
    return http.client.HTTPConnection(host, parts.port, timeout=timeout)


def _origin(parts: SplitResult) -> tuple[str, str, int | None]:
    return (parts.scheme, parts.hostname or "", parts.port)


def _query(parts: SplitResult, params: Any) -> str:
    query = "&".join(q for q in (parts.query, urlencode(params) if params else "") if q)
    return f"?{query}" if query else ""


def _body(options: PostOptions) -> tuple[bytes, dict[str, str]]:
    headers = dict(options.get("headers") or {})
    payload = options.get("json")
    if payload is not None:
        headers.setdefault("Content-Type", "application/json")
        return json.dumps(payload).encode("utf-8"), headers
    return options.get("data") or b"", headers


def _tls_context() -> Any:
    import ssl

    try:
        import certifi  # what requests verifies against; present wherever requests is
    except ImportError:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())

"""The one seam for network I/O of side channels: an HTTP POST that returns a small response.

Alerts and healthcheck pings never talk to ``requests`` directly; they call an
:class:`HttpPost`, so a test (or a user with their own proxy or client) passes another
one, the way httpx takes a ``transport=``. The default, :func:`requests_post`:

* imports ``requests`` only when something is actually sent (it is a large import, and
  most cron runs send nothing);
* reads at most :data:`MAX_RESPONSE_BYTES` of any answer (streamed), so a hostile or
  broken endpoint cannot make an alert thread download gigabytes;
* follows no redirects (a Bot API or ping endpoint never redirects a POST; following one
  would re-send the secret-bearing request elsewhere).

``requests.post`` is looked up at call time, so an old caller's test that does
``mock.patch("requests.post")`` still sees the call.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol, TypedDict, Unpack

from .._core.redact import scrub_records_of

MAX_RESPONSE_BYTES = 64 * 1024
"""The most of any response body that is read; the Bot API's answers are under 2 kB."""


class HttpResponse(NamedTuple):
    """``status`` code, ``reason`` phrase and the first ``MAX_RESPONSE_BYTES`` of the body."""

    status: int
    reason: str = ""
    body: bytes = b""

    def json(self) -> Any:
        """The body parsed as JSON; ``None`` when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class PostOptions(TypedDict, total=False):
    """What a POST may carry besides its url and timeout (each optional)."""

    json: Mapping[str, Any] | None
    data: bytes | None
    params: Mapping[str, str] | None
    headers: Mapping[str, str] | None


class HttpPost(Protocol):
    """POST ``json`` or ``data`` to ``url`` within ``timeout`` seconds; raise on I/O errors."""

    def __call__(
        self, url: str, *, timeout: float, **options: Unpack[PostOptions]
    ) -> HttpResponse: ...


class RequestsPost:
    """The default :class:`HttpPost`, on ``requests`` (connect and read ``timeout`` each).

    ``pooled=False`` calls ``requests.post`` (looked up at call time); ``pooled=True``
    keeps one ``requests.Session``, so a session's two healthcheck pings to one host
    (``/start``, then the outcome) share a TCP (and TLS) connection.
    """

    def __init__(self, *, pooled: bool = False) -> None:
        self.pooled = pooled
        self._session: Any = None
        self._lock = threading.Lock()

    def __call__(self, url: str, *, timeout: float, **options: Unpack[PostOptions]) -> HttpResponse:
        import requests  # deferred: only a run that sends something pays for the import

        scrub_records_of()  # urllib3's DEBUG lines quote the Bot API URL with the token
        post: Any = requests.post
        if self.pooled:
            with self._lock:
                if self._session is None:
                    self._session = requests.Session()
                post = self._session.post
        return _send(post, url, timeout, options)

    def close(self) -> None:
        """Close the kept connection (``pooled=True``); a later call opens a new one."""
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            session.close()


requests_post: HttpPost = RequestsPost()
"""One request, one connection: what the alerts use."""


def PooledPost() -> RequestsPost:
    """A :class:`RequestsPost` that keeps its connection between calls."""
    return RequestsPost(pooled=True)


def _send(post: Any, url: str, timeout: float, options: PostOptions) -> HttpResponse:
    # Every option named, as before (a test patching ``requests.post`` sees all four).
    response = post(
        url,
        **{"json": None, "data": None, "params": None, "headers": None, **options},
        timeout=(timeout, timeout),
        stream=True,
        allow_redirects=False,
    )
    try:
        body = _read_at_most(response, MAX_RESPONSE_BYTES)
    finally:
        response.close()
    status = response.status_code
    return HttpResponse(status if isinstance(status, int) else 0, str(response.reason or ""), body)


def _read_at_most(response: Any, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(chunk_size=8192):
        if not isinstance(chunk, bytes):  # a mocked response: no body
            break
        chunks.append(chunk[: limit - size])
        size += len(chunks[-1])
        if size >= limit:
            break
    return b"".join(chunks)

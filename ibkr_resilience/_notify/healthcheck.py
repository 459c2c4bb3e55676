"""Optional cron monitoring: healthchecks.io-style pings around a session.

An alert says "it failed"; it cannot say "it did not run at all" (crontab broken, box
down, job hung before connecting). A dead man's switch can: the job pings
``<url>/start`` when it begins, ``<url>`` when it succeeds and ``<url>/fail`` (or
``<url>/<exit status>``, which healthchecks.io records and counts as a failure unless it
is 0) when it fails, and the monitoring service complains when the pings stop or a run
takes too long.

Pings are best-effort, exactly like alerts: each runs in a daemon thread behind the same
hard bound (``IBKR_ALERT_TIMEOUT``), errors are logged as warnings and swallowed; a
monitoring outage must never delay or fail a trading job. The URL carries a secret
(the check's UUID or ping key: anyone holding it can report on the check), so it is
registered with the log redactor and logs show only ``scheme://host/.../<suffix>``.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from .._core.config import check_setting
from .._core.log import get_logger
from .._core.redact import register_secret, scrub
from .bounded import Bounded, run_bounded, run_here
from .http import HttpPost, requests_post
from .keepalive import ping_post

log = get_logger("ibkr_resilience.healthcheck")

PingKind = Literal["start", "success", "fail"] | int
"""A named ping, or an exit status 0-255 (``<url>/<status>``)."""
PingOutcome = Literal["sent", "failed", "timed_out"]

_SUFFIX: dict[str, str] = {"start": "/start", "success": "", "fail": "/fail"}


def _suffix(kind: PingKind) -> str:
    if isinstance(kind, int):
        # healthchecks.io takes 0-255 (what a process can exit with); anything else is a
        # plain failure rather than a 404 that would lose the ping.
        return f"/{kind}" if 0 <= kind <= 255 else "/fail"
    return _SUFFIX[kind]


MAX_BODY_CHARS = 10_000
"""healthchecks.io keeps the first 100 kB of a ping body; ours are a few lines."""
REQUESTS_TIMEOUT_SHARE = 0.8
MIN_PING_WINDOW = 0.1
"""An outcome ping gets at least this long after waiting for a slow ``/start``."""
_SECRET_SEGMENT_MIN = 16
"""Path segments this long are keys (a UUID has 36 characters, a ping key 22)."""


class Healthcheck:
    """Ping one check URL; never raises, never takes longer than ``timeout``."""

    def __init__(self, url: str, timeout: float, *, post: HttpPost | None = None) -> None:
        # The alerts' default opens one connection per request; a check's pings all go to
        # one host, so they get their own kept connection (one TCP + TLS setup per run).
        self._kept: Any = None
        if post is None or post is requests_post:
            self._kept = post = ping_post()
        self._post: HttpPost = post
        self._start: threading.Thread | None = None
        self._url: str = check_setting("healthcheck_url", url)
        self.timeout = float(check_setting("alert_timeout", timeout))
        parts = urlsplit(self._url)
        self.endpoint = f"{parts.scheme}://{parts.hostname or ''}" + (
            f":{parts.port}" if parts.port else ""
        )
        # urllib3 logs "POST /<uuid>/start" at DEBUG and requests' errors quote the URL:
        # register the whole path and each key-like segment with the redactor.
        path = parts.path.strip("/")
        register_secret(self._url)
        register_secret(path)
        for segment in path.split("/"):
            if len(segment) >= _SECRET_SEGMENT_MIN:
                register_secret(segment)
        if parts.query:
            register_secret(parts.query)

    def __repr__(self) -> str:
        return f"Healthcheck({self.endpoint!r}, url=<hidden>)"

    def target(self, kind: PingKind) -> str:
        """What the logs show: ``https://hc-ping.com/.../fail``, never the secret path."""
        return f"{self.endpoint}/...{_suffix(kind)}"

    def start_in_background(self, run_id: str | None = None) -> None:
        """Send ``/start`` from a daemon thread: the connect never waits for monitoring.

        The thread sends it itself (a daemon thread can delay neither the job nor its
        exit, so it needs no second thread to bound it). The next :meth:`ping` waits for
        it first (within its own bound), so the service always sees ``/start`` before the
        outcome.
        """
        self._start = threading.Thread(
            target=self._send,
            args=("start", "", run_id, self.timeout, False),
            name="ibkr-healthcheck-start",
            daemon=True,
        )
        self._start.start()

    def ping(
        self,
        kind: PingKind,
        body: str = "",
        run_id: str | None = None,
        *,
        bound: float | None = None,
    ) -> PingOutcome:
        """Send one ping within ``bound`` seconds (default: the timeout); log the outcome.

        ``run_id`` (a UUID, healthchecks.io's ``rid``) ties a ``/start`` to its own
        outcome ping, so overlapping runs (a slow run still going when cron starts the
        next) get correct durations. An outcome ping first waits for a background
        ``/start`` still on its way; both waits together stay within the bound.
        """
        bound = self.timeout if bound is None else bound
        if kind != "start" and self._start is not None:
            start, self._start = self._start, None
            began = time.monotonic()
            start.join(bound)
            bound = max(MIN_PING_WINDOW, bound - (time.monotonic() - began))
        return self._send(kind, body, run_id, bound, True)

    def _send(
        self, kind: PingKind, body: str, run_id: str | None, bound: float, in_thread: bool
    ) -> PingOutcome:
        """One ping within ``bound`` seconds, in a thread of its own (``in_thread``) or in
        this one (the background ``/start``, whose lateness is judged when it ends)."""
        parts = urlsplit(self._url)
        url = urlunsplit(parts._replace(path=parts.path.rstrip("/") + _suffix(kind)))
        params = {"rid": run_id} if run_id else None
        data = body[:MAX_BODY_CHARS].encode("utf-8", "replace")
        # The client's own timeouts end a silent server just inside the hard bound (a
        # clean "failed"); the bound itself still catches what they do not cover (DNS).
        timeout = bound * REQUESTS_TIMEOUT_SHARE

        def post() -> int:
            response = self._post(
                url,
                data=data,
                params=params,
                headers={"Content-Type": "text/plain; charset=utf-8"},
                timeout=timeout,
            )
            return response.status

        result = (
            run_bounded(post, bound, "ibkr-healthcheck") if in_thread else run_here(post, bound)
        )
        if kind != "start" and self._kept is not None:
            self._kept.close()  # the outcome is the last ping: free the kept connection
        return _report(kind, self.target(kind), run_id, bound, result)


def _report(
    kind: PingKind, target: str, run_id: str | None, bound: float, result: Bounded
) -> PingOutcome:
    """Log how one ping went (one line) and say it."""
    fields: dict[str, object] = {
        "ping": kind,
        "target": target,
        "rid": run_id,
        "elapsed_ms": result.elapsed_ms,
    }
    if result.timed_out:
        log.warning("ibkr.healthcheck.timed_out", timeout_s=bound, **fields)
        return "timed_out"
    if result.error is not None:
        error = result.error
        log.warning(
            "ibkr.healthcheck.failed",
            error_type=type(error).__name__,
            error=scrub(str(error)),
            **fields,
        )
        return "failed"
    status = result.value
    if isinstance(status, int) and 200 <= status < 300:
        log.info("ibkr.healthcheck.sent", status=status, **fields)
        return "sent"
    log.warning("ibkr.healthcheck.failed", status=status, **fields)
    return "failed"

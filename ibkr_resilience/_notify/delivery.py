"""Deliver one alert through any hook, bounded and swallowed.

An alert fires exactly when things are already going wrong, often when the network is
too; so delivery is best-effort and hard-bounded: :func:`deliver_alert` runs the hook in
a daemon thread (:func:`.bounded.run_bounded`) and stops waiting at the deadline.
"""

from __future__ import annotations

import contextlib
from typing import Literal, Protocol

from .._core.log import get_logger
from .._core.redact import scrub

log = get_logger("ibkr_resilience.alerts")

AlertOutcome = Literal["sent", "failed", "timed_out", "disabled"]


class Alert(Protocol):
    """An alert hook: any callable taking the plain alert text.

    Returning ``False`` means "not delivered"; anything else (``None`` included) counts
    as sent. It may raise or hang: :func:`deliver_alert` bounds and swallows both. A hook
    with a false ``enabled`` attribute is a logged no-op (:class:`.telegram.DisabledAlert`).
    """

    def __call__(self, text: str, /) -> object: ...


def deliver_alert(alert: Alert, text: str, timeout: float) -> AlertOutcome:
    """Run ``alert(text)`` in a daemon thread and wait at most ``timeout`` seconds.

    Whatever the alert does (raise, hang in DNS, return ``False``), the caller gets an
    outcome back within the deadline and nothing propagates; the outcome is logged.
    """
    # The texts quote exception messages from the job, which may carry a secret (a failed
    # HTTP call's URL holds the Bot API token): every channel gets the scrubbed text.
    text = scrub(text)
    if not getattr(alert, "enabled", True):
        with contextlib.suppress(Exception):  # a disabled alert only logs
            alert(text)
        return "disabled"
    from .bounded import run_bounded  # a thread and a record: only when something is sent

    result = run_bounded(lambda: alert(text), timeout, "ibkr-alert")
    elapsed_ms = result.elapsed_ms
    if result.timed_out:
        log.error("ibkr.alert.timed_out", timeout_s=timeout, elapsed_ms=elapsed_ms)
        return "timed_out"
    if result.error is not None:
        error = result.error
        log.error(
            "ibkr.alert.failed",
            error_type=type(error).__name__,
            error=scrub(str(error)),
            elapsed_ms=elapsed_ms,
        )
        return "failed"
    if result.value is False:
        log.error("ibkr.alert.failed", error="alert reported failure", elapsed_ms=elapsed_ms)
        return "failed"
    log.info("ibkr.alert.sent", elapsed_ms=elapsed_ms)
    return "sent"

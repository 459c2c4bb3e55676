"""The one hard time bound shared by every side channel (alerts, healthcheck pings)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Bounded:
    """What :func:`run_bounded` saw: still running at the deadline, raised, or returned."""

    timed_out: bool
    value: object = None
    error: BaseException | None = None
    elapsed_ms: float = 0.0


def run_bounded(
    call: Callable[[], object],
    timeout: float,
    name: str,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> Bounded:
    """Run ``call()`` in a daemon thread and wait at most ``timeout`` seconds for it.

    ``requests`` timeouts do not cover DNS resolution, and a daemon thread (unlike a
    ``ThreadPoolExecutor`` worker) is not joined at interpreter exit, so a hung call can
    delay neither the job nor its exit. Nothing ``call`` raises propagates.

    Timed out means the call had not ended ``timeout`` seconds after the start, judged
    by when it ended, not by when this thread got the CPU back: a call cut by its own
    timer just after the deadline (``requests``' read timeout on a silent server) is a
    time-out whether or not a loaded machine woke this thread before that. ``clock``
    (monotonic seconds) is read at the start, when the call ends, and on return.
    """
    box: dict[str, object] = {}
    ended = threading.Event()

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:
            box["error"] = exc
        box["ended_at"] = clock()
        ended.set()

    started = clock()
    worker = threading.Thread(target=run, name=name, daemon=True)
    worker.start()
    finished = ended.wait(timeout)
    elapsed_ms = round((clock() - started) * 1000, 1)
    ended_at = box.get("ended_at")
    if not finished or not isinstance(ended_at, float) or ended_at - started > timeout:
        return Bounded(timed_out=True, elapsed_ms=elapsed_ms)
    error = box.get("error")
    return Bounded(
        timed_out=False,
        value=box.get("value"),
        error=error if isinstance(error, BaseException) else None,
        elapsed_ms=elapsed_ms,
    )


def run_here(
    call: Callable[[], object],
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> Bounded:
    """Run ``call()`` in this thread, for a caller that is itself a daemon thread.

    Nothing waits for such a thread beyond its own bound, so it needs no second thread;
    the result is judged as :func:`run_bounded` judges it: timed out when the call
    ended more than ``timeout`` seconds after the start. Nothing ``call`` raises
    propagates.
    """
    started = clock()
    value: object = None
    error: BaseException | None = None
    try:
        value = call()
    except BaseException as exc:
        error = exc
    elapsed = clock() - started
    elapsed_ms = round(elapsed * 1000, 1)
    if elapsed > timeout:
        return Bounded(timed_out=True, elapsed_ms=elapsed_ms)
    return Bounded(timed_out=False, value=value, error=error, elapsed_ms=elapsed_ms)

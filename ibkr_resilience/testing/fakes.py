"""Fake time and a recording alert: inject them instead of patching anything.

ft = FakeTime()
alert = RecordingAlert()
with ibkr_session(..., clock=ft.clock, sleep=ft.sleep, alert=alert):
    ...
assert ft.sleeps == [0.5, 0.5] and alert.texts == []
"""

from __future__ import annotations

import threading


class FakeTime:
    """A monotonic clock (seconds) and a sleep that advances it: no real waiting."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        """The current fake time, in seconds."""
        return self.now

    def sleep(self, seconds: float) -> None:
        """Record ``seconds`` and advance the clock by it, at once."""
        self.sleeps.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass (work done between sleeps)."""
        self.now += seconds


class RecordingAlert:
    """An alert hook (``alert=``) that records every text it is given, thread-safely.

    :meth:`wait` blocks until ``n`` texts have arrived: alerts are delivered from a
    daemon thread, so a test waits for the event instead of sleeping.
    """

    def __init__(self) -> None:
        self.texts: list[str] = []
        self._changed = threading.Condition()

    def __call__(self, text: str) -> None:
        with self._changed:
            self.texts.append(text)
            self._changed.notify_all()

    def wait(self, n: int = 1, timeout: float = 5.0) -> bool:
        """Whether at least ``n`` texts arrived within ``timeout`` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self.texts) >= n, timeout)

"""Alerts that do not spam: de-duplication of connection-failure alerts across cron runs.

A job run by cron every five minutes while the gateway is down all morning would page
twelve times an hour with the same news. Each run is a new process, so the memory of
"already told them" has to live in a small state file. The model is Alertmanager's:

* alert on the change to failing (the first failure of a key);
* while it keeps failing, log the repeats (``ibkr.alert.suppressed``) and send a
  reminder at most every ``repeat_interval`` seconds;
* on the first successful connect after an alerted failure, send one "recovered"
  message saying how long it was down, and forget the failure.

A key is ``host:port``, client id and failure class: a refused port and a gateway that
is up but not logged in need different actions, and two jobs with different client ids
fail (and recover) independently. A script's failed run (any non-zero exit the session
did not already alert) has a key of its own (:func:`run_key`: script and exit code), kept
apart from the connect keys and cleared by the next run of the script that exits 0.

The de-dup layer must never cost an alert. So it fails open: if the state cannot be
locked, read or written, the alert is sent anyway and the problem is logged; a failed
or timed-out delivery is not recorded as sent, so the next run tries again. Concurrent
runs are serialised with ``fcntl.flock`` on a separate lock file, held across
read-decide-send-write (so two runs failing at the same moment send one alert between
them); the wait for it is bounded. Writes go to a temporary file in the same directory,
fsynced, then ``os.replace``d over the state file, so a crash at any point leaves either
the old or the new file, never a torn one; lock-free readers rely on the same property.

Time is wall-clock (``time.time()``): it has to mean the same thing in every process of
the morning. The clock is injectable (``now``) for unit tests; freezegun also works.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from .._core.log import get_logger
from .._core.timefmt import iso_utc
from .alert_state import (
    AlertStateStore,
    Entry,
    FailureKey,
    StateUnavailable,
)

log = get_logger("ibkr_resilience.alerts")

Send = Callable[[str], str]
"""Deliver a text, return the outcome (``deliver_alert``'s ``sent``/``failed``/...)."""

OccurrenceKind = Literal["first", "reminder", "suppressed", "unguarded"]


@dataclass(frozen=True)
class Occurrence:
    """One failure as the de-dup layer sees it; the text builder words the alert from it."""

    kind: OccurrenceKind
    key: FailureKey
    failures: int
    """Failures of this key since the first one, this one included."""
    first_failure_at: float
    last_alert_at: float | None
    now: float
    repeat_interval: float

    @property
    def down_s(self) -> float:
        return max(0.0, self.now - self.first_failure_at)


@dataclass(frozen=True)
class Recovery:
    """A successful connect after alerted failures: what the "recovered" text says."""

    host: str
    port: int
    client_id: int
    since: float
    now: float
    failures: int
    failure_classes: tuple[str, ...]
    alerts_sent: int

    @property
    def down_s(self) -> float:
        return max(0.0, self.now - self.since)


class AlertDeduplicator:
    """Decides, per failure, whether to send, remind or suppress; sends "recovered".

    ``send`` is called with the lock held (bounded by the alert deadline) so that
    concurrent runs agree on who alerts; ``lock_timeout`` should exceed that deadline.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        repeat_interval: float,
        *,
        lock_timeout: float = 10.0,
        now: Callable[[], float] | None = None,
    ) -> None:
        self.store = AlertStateStore(path, lock_timeout=lock_timeout)
        self.repeat_interval = float(repeat_interval)
        self._now = now

    def __repr__(self) -> str:
        return f"AlertDeduplicator({str(self.store.path)!r}, {self.repeat_interval:g})"

    def now(self) -> float:
        # Read at call time (not bound as a default) so freezegun's patch applies.
        return self._now() if self._now is not None else time.time()

    def failure(
        self, key: FailureKey, build: Callable[[Occurrence], str], send: Send
    ) -> Occurrence:
        """Record one failure of ``key``; send, remind or suppress; return what happened.

        The time is read once the lock is held: read before, a run that waited for the
        lock would compare an older "now" with an alert another run just recorded, see a
        negative interval (a clock stepping back) and send a spurious reminder.
        """
        try:
            txn = self.store.begin()
        except StateUnavailable as exc:
            now = self.now()
            occurrence = Occurrence("unguarded", key, 1, now, None, now, self.repeat_interval)
            log.error(
                "ibkr.alert.state_unavailable",
                path=str(self.store.path),
                error=str(exc),
                key=key.id,
                action="sending the alert without de-duplication",
            )
            send(build(occurrence))
            return occurrence
        try:
            now = self.now()
            entry = txn.entries.get(key.id) or Entry(key, now, now)
            entry.failures += 1
            entry.last_failure_at = now
            txn.entries[key.id] = entry
            txn.dirty = True
            if entry.last_alert_at is None:
                kind: OccurrenceKind = "first"
            else:
                since_alert = now - entry.last_alert_at
                # A clock stepped backwards (negative) sends one reminder and re-anchors.
                due = since_alert >= self.repeat_interval or since_alert < 0
                kind = "reminder" if due else "suppressed"
            occurrence = Occurrence(
                kind,
                key,
                entry.failures,
                entry.first_failure_at,
                entry.last_alert_at,
                now,
                self.repeat_interval,
            )
            if kind == "suppressed":
                assert entry.last_alert_at is not None
                log.info(
                    "ibkr.alert.suppressed",
                    key=key.id,
                    failure_class=key.failure_class,
                    failures=entry.failures,
                    last_alert_at=iso_utc(entry.last_alert_at),
                    next_reminder_at=iso_utc(entry.last_alert_at + self.repeat_interval),
                    down_s=round(occurrence.down_s, 3),
                )
                return occurrence
            log.info(
                "ibkr.alert.firing",
                kind=kind,
                key=key.id,
                failure_class=key.failure_class,
                failures=entry.failures,
                down_s=round(occurrence.down_s, 3),
            )
            outcome = send(build(occurrence))
            if outcome == "sent":
                entry.last_alert_at = now
                entry.alerts_sent += 1
            # Not sent (failed, timed out, disabled): not recorded, the next run retries.
            return occurrence
        finally:
            txn.close()

    def success(
        self,
        host: str,
        port: int,
        client_id: int,
        build: Callable[[Recovery], str],
        send: Send,
    ) -> Recovery | None:
        """A connect succeeded: clear its failures; one "recovered" if any was alerted."""
        return self._clear(
            lambda key: key.same_session(host, port, client_id) and not is_run_key(key),
            (host, port, client_id),
            build,
            send,
        )

    def run_succeeded(
        self,
        script: str,
        gateway: tuple[str, int, int] | None,
        build: Callable[[Recovery], str],
        send: Send,
    ) -> Recovery | None:
        """A run of ``script`` exited 0: clear its run failures (:func:`run_key`) for this
        gateway and those recorded without one; one "recovered" if any was alerted."""

        def matches(key: FailureKey) -> bool:
            if not key.failure_class.startswith(f"{RUN_PREFIX}{script}:"):
                return False
            return not key.host or (gateway is not None and key.same_session(*gateway))

        return self._clear(matches, gateway or ("", 0, 0), build, send)

    def _clear(
        self,
        matches: Callable[[FailureKey], bool],
        gateway: tuple[str, int, int],
        build: Callable[[Recovery], str],
        send: Send,
    ) -> Recovery | None:
        entries, healthy = self.store.peek()
        if healthy and not _matching(entries.values(), matches):
            return None  # the common case: no lock, no write, no directory created
        try:
            txn = self.store.begin()
        except StateUnavailable as exc:
            log.error(
                "ibkr.alert.state_unavailable",
                path=str(self.store.path),
                error=str(exc),
                action="recovery not recorded",
            )
            return None
        try:
            matched = _matching(txn.entries.values(), matches)
            if not matched:
                return None
            for entry in matched:
                del txn.entries[entry.key.id]
            txn.dirty = True
            now = self.now()
            recovery = Recovery(
                *gateway,
                since=min(e.first_failure_at for e in matched),
                now=now,
                failures=sum(e.failures for e in matched),
                failure_classes=tuple(sorted({e.key.failure_class for e in matched})),
                alerts_sent=sum(e.alerts_sent for e in matched),
            )
            alerted = any(e.last_alert_at is not None for e in matched)
            log.info(
                "ibkr.alert.recovered" if alerted else "ibkr.alert.state_cleared",
                keys=[e.key.id for e in matched],
                failures=recovery.failures,
                down_s=round(recovery.down_s, 3),
                down_since=iso_utc(recovery.since),
                alerts_sent=recovery.alerts_sent,
            )
            if alerted:
                send(build(recovery))
                return recovery
            return None
        finally:
            txn.close()


RUN_PREFIX = "run:"
"""The failure class of a run-level key starts with this (:func:`run_key`)."""


def run_key(script: str, code: int, gateway: tuple[str, int, int] | None) -> FailureKey:
    """The de-dup key of a failed run: script and exit code, on its gateway when known.

    Kept apart from the connect keys (``same_session`` ignores them), so a successful
    connect in a run that then exits 3 neither clears that run's failure nor says
    "connection recovered"; only a run of the script that exits 0 clears it.
    """
    host, port, client_id = gateway or ("", 0, 0)
    return FailureKey(host, port, client_id, f"{RUN_PREFIX}{script}:exit {code}")


def is_run_key(key: FailureKey) -> bool:
    return key.failure_class.startswith(RUN_PREFIX)


def _matching(entries: Iterable[Entry], matches: Callable[[FailureKey], bool]) -> list[Entry]:
    return [e for e in entries if matches(e.key)]

"""The de-dup state file: what earlier cron runs alerted, shared safely between processes.

Each run is a new process, so "already told them" lives in a small JSON file. Concurrent
runs are serialised with ``fcntl.flock`` on a separate lock file, held across
read-decide-send-write; the wait for it is bounded. Writes go to a temporary file in the
same directory, fsynced, then ``os.replace``d over the state file, so a crash at any
point leaves either the old or the new file, never a torn one; lock-free readers rely on
the same property. Any problem surfaces as :class:`StateUnavailable`, and the caller
fails open (the alert is sent).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .._core.log import get_logger
from .._core.redact import scrub
from .._core.statedir import fsync_dir, open_regular, read_small_file, state_dir
from .._core.timefmt import iso_utc

log = get_logger("ibkr_resilience.alerts")

STATE_VERSION = 1
MAX_STATE_BYTES = 1024 * 1024
"""A state file larger than this is corrupt (a few hundred bytes per failing gateway)."""
LOCK_POLL_S = 0.02
"""How often a waiting run retries the lock (real sleeps: the wait spans processes)."""


def default_state_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/ibkr_resilience/alert_state.json``, else under ``~/.local/state``.

    The XDG spec says a relative ``XDG_STATE_HOME`` is invalid and must be ignored.
    """
    return state_dir(environ) / "alert_state.json"


def _parse_iso(value: object) -> float:
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 time, got {value!r}")
    stamp = datetime.fromisoformat(value)
    if stamp.tzinfo is None:
        raise ValueError(f"time without a time zone: {value!r}")
    return stamp.timestamp()


@dataclass(frozen=True)
class FailureKey:
    """What makes two failures "the same": gateway, client id and failure class."""

    host: str
    port: int
    client_id: int
    failure_class: str

    @property
    def id(self) -> str:
        return f"{self.host}:{self.port}|client_id={self.client_id}|{self.failure_class}"

    def same_session(self, host: str, port: int, client_id: int) -> bool:
        return (self.host, self.port, self.client_id) == (host, port, client_id)


@dataclass
class Entry:
    """One failing key: since when, how often, and when it was last alerted."""

    key: FailureKey
    first_failure_at: float
    last_failure_at: float
    failures: int = 0
    last_alert_at: float | None = None
    alerts_sent: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.key.host,
            "port": self.key.port,
            "client_id": self.key.client_id,
            "failure_class": self.key.failure_class,
            "first_failure_at": iso_utc(self.first_failure_at),
            "last_failure_at": iso_utc(self.last_failure_at),
            "failures": self.failures,
            "last_alert_at": None if self.last_alert_at is None else iso_utc(self.last_alert_at),
            "alerts_sent": self.alerts_sent,
        }

    @classmethod
    def from_json(cls, data: object) -> Entry:
        if not isinstance(data, dict):
            raise ValueError(f"entry is not an object: {data!r}")
        host, port, client_id = data.get("host"), data.get("port"), data.get("client_id")
        failure_class = data.get("failure_class")
        failures, alerts_sent = data.get("failures"), data.get("alerts_sent")
        if not isinstance(host, str) or not isinstance(failure_class, str):
            raise ValueError("host and failure_class must be strings")
        for name, number in (
            ("port", port),
            ("client_id", client_id),
            ("failures", failures),
            ("alerts_sent", alerts_sent),
        ):
            if isinstance(number, bool) or not isinstance(number, int) or number < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {number!r}")
        assert isinstance(port, int) and isinstance(client_id, int)  # for mypy
        assert isinstance(failures, int) and isinstance(alerts_sent, int)
        last_alert = data.get("last_alert_at")
        return cls(
            key=FailureKey(host, port, client_id, failure_class),
            first_failure_at=_parse_iso(data.get("first_failure_at")),
            last_failure_at=_parse_iso(data.get("last_failure_at")),
            failures=failures,
            last_alert_at=None if last_alert is None else _parse_iso(last_alert),
            alerts_sent=alerts_sent,
        )


class StateUnavailable(Exception):
    """The state could not be locked (unwritable directory, lock held too long)."""


def parse_state(text: str) -> dict[str, Entry]:
    """The entries of a state file's text; ``ValueError`` when it is not one we wrote."""
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        raise ValueError(f"not a version {STATE_VERSION} alert state object")
    raw = data.get("entries")
    if not isinstance(raw, dict):
        raise ValueError("'entries' is not an object")
    entries: dict[str, Entry] = {}
    for key_id, value in raw.items():
        entry = Entry.from_json(value)
        if entry.key.id != key_id:
            raise ValueError(f"entry {key_id!r} does not match its fields")
        entries[key_id] = entry
    return entries


def render_state(entries: Mapping[str, Entry]) -> str:
    body = {
        "version": STATE_VERSION,
        "entries": {key_id: entries[key_id].to_json() for key_id in sorted(entries)},
    }
    return json.dumps(body, indent=2, sort_keys=False) + "\n"


@dataclass
class Transaction:
    """The locked state: mutate ``entries``, set ``dirty``, and :meth:`close` writes it."""

    store: AlertStateStore
    lock_fd: int
    entries: dict[str, Entry]
    dirty: bool = False
    closed: bool = field(default=False, repr=False)

    def close(self) -> None:
        """Write the state if it changed (atomically), then release the lock. Never raises."""
        if self.closed:
            return
        self.closed = True
        try:
            if self.dirty:
                self.store.write(self.entries)
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(self.lock_fd, fcntl.LOCK_UN)
            with contextlib.suppress(OSError):
                os.close(self.lock_fd)


class AlertStateStore:
    """The state file: lock-free reads, locked read-modify-write, atomic replace.

    The lock is ``fcntl.flock`` on ``<state file>.lock``, a separate file that is never
    deleted or replaced (locking the state file itself would not survive
    ``os.replace``, and deleting a lock file lets two runs lock two different inodes).
    Waiting for it is bounded by ``lock_timeout``; the wait counts polls rather than
    reading a clock, so a frozen clock (freezegun) cannot make it wait forever.
    """

    def __init__(self, path: str | os.PathLike[str], *, lock_timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.lock_timeout = lock_timeout

    def __repr__(self) -> str:
        return f"AlertStateStore({str(self.path)!r})"

    # -- reading ----------------------------------------------------------------------
    def peek(self) -> tuple[dict[str, Entry], bool]:
        """Read without the lock (safe: writers replace atomically); ``(entries, healthy)``.

        ``healthy`` is false when the file exists but cannot be used: the caller then
        takes the lock so the damage is logged and repaired.
        """
        try:
            text = read_small_file(self.path, MAX_STATE_BYTES)
        except FileNotFoundError:
            return {}, True
        except (OSError, UnicodeDecodeError):
            return {}, False
        try:
            return parse_state(text), True
        except (ValueError, TypeError):
            return {}, False

    def _load_locked(self) -> tuple[dict[str, Entry], bool]:
        """Read under the lock; a damaged file is logged and marked for replacement."""
        try:
            text = read_small_file(self.path, MAX_STATE_BYTES)
        except FileNotFoundError:
            return {}, False
        except (OSError, UnicodeDecodeError) as exc:
            self._corrupt(f"unreadable: {type(exc).__name__}: {exc}")
            return {}, True
        try:
            return parse_state(text), False
        except (ValueError, TypeError) as exc:
            self._corrupt(f"{type(exc).__name__}: {exc}", size=len(text))
            return {}, True

    def _corrupt(self, reason: str, size: int | None = None) -> None:
        log.warning(
            "ibkr.alert.state_corrupt",
            path=str(self.path),
            reason=scrub(reason)[:300],
            size=size,
            action="starting from an empty state; the file is replaced",
        )

    # -- locking ----------------------------------------------------------------------
    def begin(self) -> Transaction:
        """Lock and load; raises :class:`StateUnavailable` (callers then fail open)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = open_regular(self.lock_path, os.O_RDWR | os.O_CREAT)
        except OSError as exc:
            raise StateUnavailable(f"{type(exc).__name__}: {exc}") from exc
        try:
            self._lock(fd)
            entries, damaged = self._load_locked()
        except BaseException:
            os.close(fd)
            raise
        return Transaction(self, fd, entries, dirty=damaged)

    def _lock(self, fd: int) -> None:
        polls = max(1, math.ceil(self.lock_timeout / LOCK_POLL_S))
        for poll in range(polls + 1):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise StateUnavailable(f"{type(exc).__name__}: {exc}") from exc
            if poll < polls:
                time.sleep(LOCK_POLL_S)
        raise StateUnavailable(f"lock {self.lock_path} still held after {self.lock_timeout:g} s")

    # -- writing ----------------------------------------------------------------------
    def write(self, entries: Mapping[str, Entry]) -> bool:
        """Replace the state file atomically (temp file + fsync + ``os.replace``).

        Only called with the lock held. A failure is logged, not raised: the alert has
        been decided (and sent) already, and losing one bookkeeping step can at worst
        repeat an alert, never swallow one.
        """
        directory = self.path.parent
        tmp: str | None = None
        try:
            self._remove_stale_temps()
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(render_state(entries))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
            tmp = None
            fsync_dir(directory)
            return True
        except OSError as exc:
            log.error(
                "ibkr.alert.state_write_failed",
                path=str(self.path),
                error_type=type(exc).__name__,
                error=str(exc),
            )
            return False
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def _remove_stale_temps(self) -> None:
        """Temp files left by a run that crashed mid-write (we hold the lock: none is live)."""
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()

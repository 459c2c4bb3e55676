"""What the simulated gateway saw: the messages clients sent and its own events.

Tests assert on these records and wait for them, so two costs matter. Memory: a
gateway that serves a soak run or a rehearsal for hours must not keep every message
forever, so both kinds live in a ring buffer (``DEFAULT_RECORD_LIMIT`` each, or the
``record_limit`` given to ``FakeGateway``); the oldest records are forgotten first.
Time: ``messages(name)`` and ``events(name)`` are called inside ``wait_for`` predicates,
once per new record, so they read a per-name index and cost what they return, not
what the history holds. ``wait_for`` sleeps on a condition variable that every new
record notifies; it never polls.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ._codec import Request

DEFAULT_RECORD_LIMIT = 10_000  # per kind (messages, events); a few MB at most

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")


@dataclass(frozen=True)
class Received:
    """One message a client sent, as recorded by the gateway.

    ``fields`` are the raw text fields (``fields[0]`` is the message id); ``request`` is
    the decoded record (``None`` if the message could not be decoded, in which case the
    connection was closed as malformed). ``at`` is ``time.monotonic()`` seconds.
    """

    conn_id: int
    client_id: int | None
    msg_id: int
    name: str
    fields: tuple[str, ...]
    at: float
    request: Request | None = field(default=None, compare=False)


class _IndexedRing(Generic[R]):
    """A bounded FIFO of records with per-key sub-lists kept in step.

    Each index deque is a subsequence of the ring in arrival order, so the record the
    ring drops is the oldest of every index it appears in: eviction is ``popleft`` on a
    few deques, O(1).
    """

    def __init__(self, limit: int, keys: Callable[[R], tuple[Hashable, ...]]) -> None:
        self.limit = limit
        self._keys = keys
        self._all: deque[R] = deque()
        self._index: dict[Hashable, deque[R]] = {}

    def append(self, record: R) -> None:
        if len(self._all) >= self.limit:
            old = self._all.popleft()
            for key in self._keys(old):
                bucket = self._index[key]
                bucket.popleft()
                if not bucket:
                    del self._index[key]
        self._all.append(record)
        for key in self._keys(record):
            self._index.setdefault(key, deque()).append(record)

    def select(self, key: Hashable | None) -> deque[R] | tuple[()]:
        if key is None:
            return self._all
        return self._index.get(key, ())

    def clear(self) -> None:
        self._all.clear()
        self._index.clear()

    def __len__(self) -> int:
        return len(self._all)


def _message_keys(r: Received) -> tuple[Hashable, ...]:
    return (r.name, (r.name, r.client_id))


def _event_keys(e: dict[str, Any]) -> tuple[Hashable, ...]:
    return (e["event"],)


class Recorder:
    """Thread-safe, bounded, indexed store of received messages and gateway events.

    The gateway's thread appends; any thread queries. ``limit`` applies to messages and
    to events separately (``ValueError`` if below 1).
    """

    def __init__(self, limit: int = DEFAULT_RECORD_LIMIT) -> None:
        if limit < 1:
            raise ValueError(f"record_limit must be >= 1, got {limit}")
        self.limit = limit
        self._messages: _IndexedRing[Received] = _IndexedRing(limit, _message_keys)
        self._events: _IndexedRing[dict[str, Any]] = _IndexedRing(limit, _event_keys)
        self._cond = threading.Condition()
        self._version = 0  # bumped by every record and by clear(): what wait_for waits on

    # --- writing (the gateway's thread) -------------------------------------------
    def message(self, record: Received) -> None:
        with self._cond:
            self._messages.append(record)
            self._changed()

    def event(self, event: str, **data: Any) -> None:
        with self._cond:
            self._events.append({"event": event, "at": time.monotonic(), **data})
            self._changed()

    def clear(self) -> None:
        """Forget every message and event recorded so far."""
        with self._cond:
            self._messages.clear()
            self._events.clear()
            self._changed()

    def _changed(self) -> None:
        self._version += 1
        self._cond.notify_all()

    # --- reading (any thread) -------------------------------------------------------
    def messages(self, name: str | None = None, client_id: int | None = None) -> list[Received]:
        with self._cond:
            if name is not None and client_id is not None:
                return list(self._messages.select((name, client_id)))
            found = self._messages.select(name)
            if client_id is None:
                return list(found)
            return [r for r in found if r.client_id == client_id]

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        with self._cond:
            return [dict(e) for e in self._events.select(name)]

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until ``predicate()`` holds, re-checking it after each new record.

        The predicate runs without the lock held, so it may call anything (even a
        gateway method that waits for the gateway's thread, which records meanwhile).
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                seen = self._version
            if predicate():
                return True
            with self._cond:
                while self._version == seen:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._cond.wait(remaining)

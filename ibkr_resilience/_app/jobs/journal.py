"""The trade journal: one JSON object per line, durable before the call returns.

The team's trade records used to miss whole days when a script died, so every record
is written with one ``os.write`` on an ``O_APPEND`` descriptor (concurrent writers never
interleave inside a line) and ``os.fsync``-ed before :meth:`Journal.append` returns: once
the script logs "placed", the journal has it even if the process is killed next.
A run proves the journal writable before it connects (:meth:`Journal.start_run`), and
every order is announced by an ``order.sending`` record before it is handed to the client
(:meth:`Journal.sending`), so an order can reach the gateway only after the journal holds
it; the journal remembers which sent orders still lack an outcome (:meth:`Journal.unrecorded`)
for the run to report them if a later write fails.
The format and default path are documented in ``docs/order-plan.md``.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..._core.config import env_value
from ..._core.identity import script_name
from ..._core.statedir import fsync_dir, state_dir

RUN_START = "run.start"
SENDING = "order.sending"
SUBMITTED = "order.submitted"
SKIPPED = "order.skipped"
REJECTED = "order.rejected"
UNCONFIRMED = "order.unconfirmed"
DRY_RUN = "order.dry_run"
CANCELLED = "order.cancelled"
CANCEL_FAILED = "order.cancel_failed"
NOT_PLACED = "order.not_placed"
EVENTS = frozenset(
    {SUBMITTED, SKIPPED, REJECTED, UNCONFIRMED, DRY_RUN, CANCELLED, CANCEL_FAILED, NOT_PLACED}
)
"""The outcome events of one order (``order.sending`` announces one, ``run.start`` a run)."""

# Read access only so that _ends_torn can look at the last byte; writes always append.
_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


class JournalError(OSError):
    """The journal cannot be opened, written or read.

    The message is one line naming the path and the reason. It is an ``OSError`` so a
    caller's existing ``except OSError`` still applies; ``errno`` is kept.
    """

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno

    def __str__(self) -> str:
        return str(self.args[0])


def journal_path(configured: str | None, env: Mapping[str, str]) -> Path:
    """``configured`` (``$IBKR_JOURNAL`` as read by the settings), else the default file
    ``journal.jsonl`` in the state directory of ``env``."""
    if configured:
        return Path(configured).expanduser()
    return state_dir(env) / "journal.jsonl"


def utc_now() -> str:
    """RFC 3339 UTC with milliseconds and ``Z``, the form log viewers sort correctly."""
    now = datetime.now(UTC)
    return f"{now:%Y-%m-%dT%H:%M:%S}.{now.microsecond // 1000:03d}Z"


class Journal:
    """An append-only JSON-lines file, opened (and created) at construction.

    Opening eagerly makes an unwritable journal fail the run before any order is sent,
    not after the first fill.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        script: str | None = None,
        run_id: str | None = None,
    ) -> None:
        self.path = Path(path).expanduser()
        self.script = script or script_name()
        self.run_id = run_id or uuid.uuid4().hex
        self._in_flight: dict[str, list[tuple[str, int | None]]] = {}
        self._batched: list[tuple[bytes, str]] | None = None
        self._announced: list[tuple[bytes, dict[str, Any]]] | None = None
        self._fd: int | None = self._open()

    @staticmethod
    def default_path(env: Mapping[str, str] | None = None) -> Path:
        """``$IBKR_JOURNAL``, else ``$XDG_STATE_HOME/ibkr_resilience/journal.jsonl``,
        else ``~/.local/state/ibkr_resilience/journal.jsonl``.

        A journal is state that must outlive caches and temp-dir cleaners, hence the XDG
        state directory; a relative ``XDG_STATE_HOME`` is ignored, as the spec requires.
        """
        environ = os.environ if env is None else env
        return journal_path(env_value("IBKR_JOURNAL", environ), environ)

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Write one record and fsync it; return the record as written.

        ``time``, ``event``, ``script`` and ``run_id`` come first; ``fields`` follow
        (usually ``PlannedOrder.journal_fields()`` plus order id, perm id, status and
        message). Values JSON cannot encode are written as their ``str()``, because
        losing a record over an odd type is worse than a less structured field.
        """
        record: dict[str, Any] = {
            "time": utc_now(),
            "event": event,
            "script": self.script,
            "run_id": self.run_id,
        }
        record.update(fields)
        line = json.dumps(record, ensure_ascii=False, default=str).encode("utf-8") + b"\n"
        if event == SENDING:
            if self._announced is not None:
                self._announced.append((line, fields))
            else:
                self._write(line)
                self._register(fields)
            return record
        done = str(fields.get("order_ref"))
        if self._batched is not None:
            self._batched.append((line, done))
            return record
        self._write(line)
        self._in_flight.pop(done, None)
        return record

    @contextlib.contextmanager
    def announcing(self) -> Iterator[None]:
        """Within it, ``order.sending`` records are held and written together when the
        block ends: one write, one fsync for a burst of orders sent back to back.

        The caller hands the orders to the client only after the block ended without an
        exception: then every record is on disk. If the block raises, or the write
        fails (:class:`JournalError`), nothing of the block counts as written and none of
        its orders may be sent. Outcome records held by an enclosing :meth:`batch` go
        first in the same write (the batch stays open, with nothing left to write); if
        that write fails they stay held, and still count as unrecorded.
        """
        if self._announced is not None:  # nested: the outer block writes
            yield
            return
        self._announced = []
        try:
            yield
            held = self._announced
        finally:
            self._announced = None
        if not held:
            return
        outcomes = self._batched or []
        self._write(b"".join([*(line for line, _ in outcomes), *(line for line, _ in held)]))
        if self._batched is not None:
            self._batched = []
        for _, done in outcomes:
            self._in_flight.pop(done, None)
        for _, fields in held:
            self._register(fields)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Within it, outcome records are written together on the way out: one write, one
        fsync (a burst of acknowledgements costs one disk flush, not one each).

        ``order.sending`` is not held back here: it must be on disk before its order is
        sent (:meth:`announcing` holds those until the orders may go). The batch is
        written also when an exception ends the block (then a :class:`JournalError` from
        it is dropped, so it does not hide the exception); :meth:`unrecorded` counts a
        batched outcome as written only once it is.
        """
        if self._batched is not None:  # nested: the outer batch writes
            yield
            return
        self._batched = []
        try:
            yield
        except BaseException:
            with contextlib.suppress(JournalError):
                self._flush()
            raise
        self._flush()

    def _flush(self) -> None:
        batched, self._batched = self._batched or [], None
        if not batched:
            return
        self._write(b"".join(line for line, _ in batched))
        for _, done in batched:
            self._in_flight.pop(done, None)

    def start_run(self, **fields: Any) -> dict[str, Any]:
        """Write and fsync the run's ``run.start`` record (``fields``: where it connects).

        Called before connecting: a journal that opens but cannot take a record
        (``/dev/full``, a full disk, a quota) fails the run here, with nothing sent,
        rather than after the first order. Raises :class:`JournalError`.
        """
        return self.append(RUN_START, pid=os.getpid(), **fields)

    def sending(self, **fields: Any) -> dict[str, Any]:
        """Write and fsync ``order.sending`` right before an order is handed to the client
        (within :meth:`announcing`: when that block ends).

        ``fields`` must hold ``order_ref`` and ``order_id`` (the ids are assigned before
        sending), and ``legs`` (``[{"order_ref", "order_id"}, ...]``) for a bracket. Once
        written, and until a later record with the same ``order_ref`` is, the order is
        listed by :meth:`unrecorded`. Raises :class:`JournalError`: then nothing may be sent.
        """
        return self.append(SENDING, **fields)

    def _register(self, fields: Mapping[str, Any]) -> None:
        """An ``order.sending`` record is on disk: its orders now lack an outcome."""
        legs = fields.get("legs") or [fields]
        self._in_flight[str(fields["order_ref"])] = [
            (str(leg["order_ref"]), leg.get("order_id")) for leg in legs
        ]

    def unrecorded(self) -> list[tuple[str, int | None]]:
        """``(orderRef, order id)`` of every order announced by :meth:`sending` whose
        outcome record has not been written (yet), oldest first, a bracket's legs each."""
        return [order for orders in self._in_flight.values() for order in orders]

    def close(self) -> None:
        """Write the outcome records a :meth:`batch` still holds, then close.

        A batch normally writes when its block ends; but a signal turned into an
        exception (SIGTERM, SIGHUP, Ctrl-C) can land between a batch's start and its
        owner's bookkeeping, leaving it open with no one to end it, and every later
        outcome record (the ``order.unconfirmed`` of the interrupted run) held in it.
        Raises :class:`JournalError` if that last write fails (the file is closed anyway).
        """
        if self._fd is None:
            return
        try:
            if self._batched:
                self._flush()
        finally:
            fd, self._fd, self._batched = self._fd, None, None
            os.close(fd)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, _type: object, exc: BaseException | None, _tb: object) -> None:
        if exc is None:
            self.close()
            return
        # The run is already ending with an exception (its exit code and report): a last
        # write that fails must not replace it.
        with contextlib.suppress(JournalError):
            self.close()

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            fd = os.open(self.path, _FLAGS, 0o644)
        except OSError as exc:
            raise _error("cannot open journal", self.path, exc) from None
        try:
            if created:
                fsync_dir(self.path.parent)  # so the new file's name survives a crash too
            elif _ends_torn(fd):
                # A writer died mid-line: end that line so our record starts on its own.
                os.write(fd, b"\n")
        except OSError as exc:
            os.close(fd)
            raise _error("cannot open journal", self.path, exc) from None
        return fd

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            raise JournalError(f"journal {self.path} is closed")
        try:
            view = memoryview(data)
            while view:  # a regular file takes it whole; loop only on a short write
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except OSError as exc:
            raise _error("cannot write journal", self.path, exc) from None


@dataclass
class JournalContents:
    """Records read back, plus how many lines could not be parsed.

    A torn last line is what a writer killed mid-``write`` leaves; it is counted in
    ``skipped`` rather than raised, since every complete record is still good.
    """

    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)


def read_journal(path: str | os.PathLike[str]) -> JournalContents:
    """Every complete record in ``path``; unparseable lines are skipped and counted."""
    p = Path(path).expanduser()
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise _error("cannot read journal", p, exc) from None
    contents = JournalContents()
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            record = None
        if isinstance(record, dict):
            contents.records.append(record)
        else:
            contents.skipped += 1
    return contents


def _ends_torn(fd: int) -> bool:
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


def _error(action: str, path: Path, exc: OSError) -> JournalError:
    reason = exc.strerror or str(exc)
    return JournalError(f"{action} {path}: {reason}", exc.errno)

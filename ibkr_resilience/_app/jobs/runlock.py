"""One trading run per gateway at a time, on one machine: an ``flock`` on a state file.

Two overlapping runs of a plan under different client ids both see the account before
either has placed anything, so both place every row: the orderRef check cannot protect
against a run that has not sent its orders yet. So a run takes an exclusive lock keyed
by the gateway's ``host:port`` before it connects and holds it until it has
disconnected; a second run waits up to ``IBKR_LOCK_WAIT`` seconds for it, then gives up
(exit 6) naming the holder. The kernel drops an ``flock`` when its holder dies, however
it dies, so a killed run never leaves a stale lock. The file is never deleted (deleting
a lock file lets two runs lock two different files); it holds the current holder's pid,
script and run id, for the message of the run that waits.

Runs on other machines against the same gateway are not covered: see docs/operations.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from ..._core.log import get_logger
from ..._core.statedir import UnusableStateFile, open_regular, state_dir
from .exits import ExitCode

__all__ = ["POLL_INTERVAL", "RunLockError", "RunLocked", "lock_path", "run_lock"]

log = get_logger("ibkr_resilience.script")

POLL_INTERVAL = 0.1
"""Seconds between two tries while another run holds the lock."""
_MAX_HOLDER_BYTES = 4096


class RunLocked(Exception):
    """Another run held the gateway's lock for longer than the wait (exit 6)."""

    code = ExitCode.LOCKED


class RunLockError(OSError):
    """The lock file cannot be used (not a regular file, no state directory): exit 2."""


def lock_path(host: str, port: int, env: Mapping[str, str]) -> Path:
    """``<state dir>/lock-<host>-<port>``; characters a file name should not carry
    (an IPv6 address's ``:``, a ``/``) become ``_``."""
    safe_host = re.sub(r"[^A-Za-z0-9._-]", "_", host)
    return state_dir(env) / f"lock-{safe_host}-{port}"


@contextlib.contextmanager
def run_lock(
    path: Path,
    *,
    wait: float,
    holder: Mapping[str, object],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[None]:
    """Hold the exclusive lock on ``path`` for the block.

    Tries at once, then every :data:`POLL_INTERVAL` seconds until ``wait`` seconds (on
    ``clock``) have passed; then raises :class:`RunLocked` with the holder's details as
    the file states them. ``holder`` (pid, script, run id) is written into the file while
    the lock is held and cleared before it is released. A SIGTERM while waiting ends the
    wait as the caller's signal handling does (the scripts: ``SystemExit(143)``).
    Raises :class:`RunLockError` when ``path`` is a FIFO, a device or a directory, or
    cannot be created.
    """
    fd = _open(path)
    try:
        _acquire(fd, path, wait, clock, sleep)
        try:
            _write_holder(fd, holder)
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # so a later reader never names a run that has ended
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _open(path: Path) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open_regular(path, os.O_RDWR | os.O_CREAT, 0o600)
    except UnusableStateFile as exc:
        raise RunLockError(f"run lock {exc}: remove it (it is recreated as a file)") from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise RunLockError(f"cannot open run lock {path}: {reason}") from None


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _acquire(
    fd: int, path: Path, wait: float, clock: Callable[[], float], sleep: Callable[[float], None]
) -> None:
    if _try_lock(fd):
        return
    started = clock()
    held_by = _holder_text(fd)
    log.warning("script.lock.waiting", lock=str(path), held_by=held_by, wait_s=wait)
    # SIGTERM/SIGHUP during a long wait end the run through the script's own guard
    # (kit.script_main): SystemExit(143/129), mapped, alerted and pinged as anywhere else.
    while True:
        remaining = wait - (clock() - started)
        if remaining <= 0:
            held_by = _holder_text(fd) or held_by
            raise RunLocked(
                f"another run holds the lock for this gateway ({path}) "
                f"{'(' + held_by + ') ' if held_by else ''}and did not release it within "
                f"{wait:g} s (IBKR_LOCK_WAIT); nothing was sent"
            )
        sleep(min(POLL_INTERVAL, remaining))
        if _try_lock(fd):
            break
    log.info("script.lock.acquired", lock=str(path), waited_s=round(clock() - started, 3))


def _write_holder(fd: int, holder: Mapping[str, object]) -> None:
    data = json.dumps(dict(holder), default=str).encode("utf-8")[:_MAX_HOLDER_BYTES]
    with contextlib.suppress(OSError):  # the lock holds without the note
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)


def _holder_text(fd: int) -> str:
    """``pid 123, submit_orders.py, run 5f0c…`` from the file, or ``""`` if unknown."""
    try:
        data = json.loads(os.pread(fd, _MAX_HOLDER_BYTES, 0).decode("utf-8"))
    except (OSError, ValueError):
        return ""
    if not isinstance(data, dict):
        return ""
    parts = [f"{key} {data[key]}" for key in ("pid", "script", "run_id") if data.get(key)]
    return ", ".join(parts)

"""Where the package keeps state that must outlive a run, and how it reads it back safely.

The journal and the alert de-dup state are both small files that a later cron run reads
back, so they share one directory rule (the XDG state directory, which caches and
temp-dir cleaners leave alone) and one way of making a newly created or renamed file
survive a crash (fsync of its directory).

A state path comes from the environment, so it may name anything: a FIFO (opening it
for reading blocks until a writer appears), a device (``/dev/zero`` reads forever), a
directory, or a huge file. State files are therefore opened non-blocking, checked to be
regular files with ``fstat`` on the open descriptor, and read only up to a size cap.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

from .log import get_logger

log = get_logger("ibkr_resilience.state")


class UnusableStateFile(OSError):
    """A state path that is not a regular file, or is larger than the cap."""


def open_regular(path: str | os.PathLike[str], flags: int, mode: int = 0o600) -> int:
    """``os.open`` that never blocks on a FIFO and refuses anything but a regular file.

    Returns the descriptor (``O_NONBLOCK`` is cleared again, so reads and ``flock``
    behave as usual). Raises :class:`UnusableStateFile` for a FIFO, device, socket or
    directory, and ``OSError`` for the usual reasons.
    """
    fd = os.open(path, flags | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnusableStateFile(f"{os.fspath(path)!r} is not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_small_bytes(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` bytes (same rules and errors
    as :func:`read_small_file`, without the decoding)."""
    fd = open_regular(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size > max_bytes:
            raise UnusableStateFile(f"{os.fspath(path)!r} is {size} bytes (cap {max_bytes})")
        data = os.read(fd, max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise UnusableStateFile(f"{os.fspath(path)!r} is over {max_bytes} bytes")
    return data


def read_small_file(path: str | os.PathLike[str], max_bytes: int) -> str:
    """The UTF-8 text of a regular file of at most ``max_bytes`` bytes.

    Raises ``FileNotFoundError`` when it does not exist, :class:`UnusableStateFile` when
    it is not a regular file or is larger than ``max_bytes`` (nothing beyond the cap is
    read), ``UnicodeDecodeError`` / ``OSError`` otherwise.
    """
    return read_small_bytes(path, max_bytes).decode("utf-8")


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/ibkr_resilience``, else ``<home>/.local/state/ibkr_resilience``.

    The XDG spec says a relative ``XDG_STATE_HOME`` is invalid and must be ignored; an
    empty or relative ``HOME`` is ignored the same way (``~`` would expand to ``/`` or
    to a path under whatever directory cron started in), and the home directory is then
    the passwd entry's. With no usable ``HOME`` and no passwd entry for the user (a
    bare container), the fallback is ``<temp dir>/ibkr_resilience-<uid>/state``, with a
    warning: state there may not survive a reboot, so set ``XDG_STATE_HOME`` (or the
    file's own variable).
    """
    environ = os.environ if env is None else env
    xdg = environ.get("XDG_STATE_HOME", "").strip()
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "ibkr_resilience"
    home = _home(environ)
    if not home:
        fallback = Path(tempfile.gettempdir()) / f"ibkr_resilience-{os.getuid()}" / "state"
        log.warning(
            "ibkr.state_dir.fallback",
            path=str(fallback),
            reason="no HOME and no passwd entry for this user; set XDG_STATE_HOME",
        )
        return fallback
    return Path(home) / ".local" / "state" / "ibkr_resilience"


def _home(environ: Mapping[str, str]) -> str:
    """An absolute home directory: ``HOME`` (``environ``'s, else the process's own, as
    ``~`` would), else the passwd entry's; ``""`` when there is none."""
    for candidate in (environ.get("HOME", ""), os.environ.get("HOME", "")):
        if os.path.isabs(candidate.strip()):
            return candidate.strip()
    try:
        home = pwd.getpwuid(os.getuid()).pw_dir
    except (KeyError, OSError):  # no passwd entry for this uid
        return ""
    return home if os.path.isabs(home) else ""


def fsync_dir(directory: Path) -> None:
    """Make a file's creation or rename in ``directory`` durable; best effort.

    Not every platform or filesystem can open or sync a directory; the file's own data
    is synced by the caller either way.
    """
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

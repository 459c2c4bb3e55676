"""Where the package keeps state that must outlive a run, and how it makes it durable.

The journal and the alert de-dup state are both small files that a later cron run reads
back, so they share one directory rule (the XDG state directory, which caches and
temp-dir cleaners leave alone) and one way of making a newly created or renamed file
survive a crash (fsync of its directory).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/ibkr_resilience``, else ``$HOME/.local/state/ibkr_resilience``.

    The XDG spec says a relative ``XDG_STATE_HOME`` is invalid and must be ignored.
    """
    environ = os.environ if env is None else env
    xdg = environ.get("XDG_STATE_HOME", "").strip()
    if xdg and os.path.isabs(xdg):
        base = Path(xdg)
    else:
        home = environ.get("HOME", "").strip()
        base = (Path(home) if home else Path.home()) / ".local" / "state"
    return base / "ibkr_resilience"


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

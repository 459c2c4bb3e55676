"""Which machine and which script: the two facts every alert and log line carries."""

from __future__ import annotations

import os
import socket
import sys


def machine_name() -> str:
    """The host name, so an alert says which box's cron job failed."""
    try:
        return socket.gethostname() or "unknown"
    except OSError:
        return "unknown"


def script_name() -> str:
    """The running script's file name (``submit_orders.py``), ``python`` when there is none."""
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"

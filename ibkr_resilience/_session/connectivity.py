"""Whether the gateway can reach IB's servers, while the session's socket stays up.

IB resets its servers every night (roughly 23:45-00:45 US/Eastern for North American
servers; "you are very likely to lose connectivity to our servers at least once a day"),
and the gateway keeps the API socket open throughout: it only sends TWS 1100
"Connectivity between IB and Trader Workstation has been lost", later 1101 (restored,
data lost: market data must be re-requested) or 1102 (restored, data maintained). Orders
sent meanwhile are not acknowledged until it is restored. 2110 ("Connectivity between TWS
and server is broken. It will be restored automatically.") is the same news from TWS.

:class:`Connectivity` follows those messages on a connected ``IB`` and logs one line per
change (``ibkr.session.ib_connectivity``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from .._core.log import get_logger

log = get_logger("ibkr_resilience.session")

LOST = frozenset({1100, 2110})
RESTORED = {1101: "data lost: re-request market data", 1102: "data maintained"}


class Connectivity:
    """Tracks TWS 1100/2110 (lost) and 1101/1102 (restored) on ``ib.errorEvent``."""

    def __init__(self, ib: Any, bound_log: Any = None) -> None:
        self.ib_connected = True
        """False from a 1100/2110 until the next 1101/1102."""
        self.changes: list[tuple[int, bool]] = []
        """``(code, ib_connected)`` for every change, in order."""
        self._log = bound_log if bound_log is not None else log
        self._undo: Callable[[], None] | None = None
        event = getattr(ib, "errorEvent", None)
        if event is not None and hasattr(event, "connect"):
            event.connect(self._on_error)
            self._undo = lambda: event.disconnect(self._on_error)

    def close(self) -> None:
        """Stop listening (the session is ending)."""
        if self._undo is not None:
            with contextlib.suppress(Exception):
                self._undo()
            self._undo = None

    def _on_error(self, req_id: Any, code: Any, message: Any, *rest: Any) -> None:
        if code in LOST and self.ib_connected:
            self.ib_connected = False
            self.changes.append((code, False))
            self._log.warning(
                "ibkr.session.ib_connectivity", ib_connected=False, code=code, message=str(message)
            )
        elif code in RESTORED and not self.ib_connected:
            self.ib_connected = True
            self.changes.append((code, True))
            self._log.info(
                "ibkr.session.ib_connectivity",
                ib_connected=True,
                code=code,
                message=str(message),
                note=RESTORED[code],
            )

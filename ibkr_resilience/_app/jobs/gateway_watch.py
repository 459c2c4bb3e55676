"""What the gateway says about itself while a job runs, and when to stop sending orders.

Three things real gateways do with the socket still up (FACTS.md, "What real gateways
do"), each of which would otherwise leave a cron run feeding orders into a gateway that
cannot take them:

* **IB outage**: error 1100 "Connectivity between IB and Trader Workstation has been
  lost", later 1101 (restored, data lost) or 1102 (restored, data maintained). IB:
  orders sent during 1100 are not acknowledged until it is restored, and "you are very
  likely to lose connectivity to our servers at least once a day" (the nightly reset).
  So no order is sent while 1100 is in force; the job waits up to ``IBKR_OUTAGE_WAIT``.
  2110 ("Connectivity between TWS and server is broken. It will be restored
  automatically.") is recorded but does not stop orders: nothing reliable clears it.
* **Read-Only API**: error 321 "... The API interface is currently in Read-Only mode."
  on each order request (gateway setting, IBC ``ReadOnlyApi=yes``): no later order can
  succeed, so the first one stops the run (exit 5).
* **Silence**: a frozen gateway or a dropped NAT path sends no FIN/RST, so no disconnect
  event fires; only an application-level probe tells (``reqCurrentTime`` with a
  deadline). Codes: https://interactivebrokers.github.io/tws-api/message_codes.html
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..._connect.compat import ensure_event_loop
from ..._connect.failures import is_read_only_error
from ..._core.log import get_logger
from .exits import ExitCode, RunStopped
from .journal import REJECTED, UNCONFIRMED, Journal
from .kit import Outcome, RunState
from .orders import trade_errors, wait_for_update

log = get_logger("ibkr_resilience.gateway")

IB_LOST = 1100
IB_RESTORED_DATA_LOST = 1101
IB_RESTORED = 1102
TWS_SERVER_BROKEN = 2110
CONNECTIVITY_CODES = frozenset({IB_LOST, IB_RESTORED_DATA_LOST, IB_RESTORED, TWS_SERVER_BROKEN})
"""The codes the journal and the summary record as ``gateway.connectivity`` events."""
PROBE_TIMEOUT = 2.0
"""Upper bound on the liveness probe's deadline (seconds; never above the ack timeout)."""

READ_ONLY_HINT = (
    'untick "Read-Only API" in TWS / IB Gateway (Configure > API > Settings), or set '
    "ReadOnlyApi=no in IBC's config.ini, and restart the gateway"
)


class ReadOnlyApiError(RunStopped):
    """Error 321 "The API interface is currently in Read-Only mode" on an order."""

    code = ExitCode.READ_ONLY_API


class IbOutageError(RunStopped):
    """Error 1100 still in force after ``IBKR_OUTAGE_WAIT``: IB is unreachable."""

    code = ExitCode.CONNECT_FAILED


class GatewayNotAnsweringError(RunStopped):
    """A request went unanswered past its deadline and so did the liveness probe."""

    code = ExitCode.CONNECT_FAILED


@dataclass
class GatewayWatch:
    """Follows the gateway's connectivity messages for one run (``errorEvent``).

    ``on_change(code, text)`` is called for each connectivity message, so the job can
    journal it and put it in the summary.
    """

    ib: Any
    on_change: Callable[[int, str], None]
    outage_wait: float
    lost_at: float | None = field(default=None, init=False)
    """Monotonic time of the 1100 still in force, else ``None``."""
    lost_text: str = field(default="", init=False)

    def __post_init__(self) -> None:
        self.ib.errorEvent += self._on_error

    def close(self) -> None:
        self.ib.errorEvent -= self._on_error

    @property
    def in_outage(self) -> bool:
        return self.lost_at is not None

    def _on_error(self, req_id: int, code: int, message: str, *_: Any) -> None:
        if code not in CONNECTIVITY_CODES:
            return
        if code == IB_LOST:
            if self.lost_at is None:
                self.lost_at = time.monotonic()
            self.lost_text = message
        elif code in (IB_RESTORED, IB_RESTORED_DATA_LOST):
            self.lost_at = None
        log.warning("gateway.connectivity", code=code, message=message, in_outage=self.in_outage)
        self.on_change(code, message)

    def wait_out_outage(self) -> None:
        """Return at once unless 1100 is in force; then wait up to ``outage_wait`` for
        1101/1102, else raise :class:`IbOutageError` (exit 1, the alert names 1100)."""
        if self.lost_at is None:
            return
        log.info("gateway.outage.waiting", wait_s=self.outage_wait)
        restored = wait_for_update(self.ib, lambda: not self.in_outage, self.outage_wait)
        if restored:
            return
        if not self.ib.isConnected():
            raise ConnectionError("the gateway went away during the IB outage (error 1100)")
        raise IbOutageError(
            f"IB unreachable: error {IB_LOST} ({self.lost_text.rstrip('.')}) still in force "
            f"after {self.outage_wait:g} s (IBKR_OUTAGE_WAIT); no order was sent during the "
            "outage: check TWS and IB's system status"
        )


CONNECTIVITY_EVENT = "gateway.connectivity"


def record_connectivity(
    journal: Journal, state: RunState, account: str, code: int, message: str
) -> None:
    """One journal record and one summary line per connectivity change (1100/1101/1102,
    2110), so the record of either script shows when IB was unreachable during the run."""
    journal.append(CONNECTIVITY_EVENT, code=code, message=message, account=account)
    state.outcomes.append(Outcome(CONNECTIVITY_EVENT, f"error {code}: {message}", ""))


def gateway_answers(ib: Any, timeout: float) -> bool:
    """The liveness probe: does ``reqCurrentTime`` come back within ``timeout`` seconds?

    A silent gateway keeps the socket open, so ``isConnected()`` stays true; only a
    round trip tells. ``False`` when the connection is gone, too.
    """
    if not ib.isConnected():
        return False
    # The loop itself, not the library's util.run, which re-raises any socket loss
    # (Python 3.12+) where a lost connection should just be a "no".
    probe = asyncio.ensure_future(ib.reqCurrentTimeAsync(), loop=ensure_event_loop())
    done, _ = ensure_event_loop().run_until_complete(asyncio.wait({probe}, timeout=timeout))
    if not done:
        probe.cancel()
        return False
    return not probe.cancelled() and probe.exception() is None


def probe_timeout(ack_timeout: float) -> float:
    """A short deadline for the probe: ``PROBE_TIMEOUT``, never above the ack timeout."""
    return min(PROBE_TIMEOUT, ack_timeout)


def stop_after(ib: Any, trades: Sequence[Any], event: str, timeout: float) -> RunStopped | None:
    """Whether this answer means no later order can succeed.

    Read-Only API (error 321, TWS "API interface is currently in Read-Only mode"):
    every order would be refused (:class:`ReadOnlyApiError`, exit 5). No
    acknowledgement and no answer to the liveness probe either: the gateway is silent
    (frozen, or a dead NAT path with no FIN), and feeding it more orders would only
    pile up unconfirmed ones (:class:`GatewayNotAnsweringError`, exit 1).
    """
    if event == REJECTED:
        for t in trades:
            for code, message in trade_errors(t):
                if is_read_only_error(code, message):
                    return ReadOnlyApiError(
                        f"the gateway's API is read-only (error {code}: "
                        f"{message.strip()}): {READ_ONLY_HINT}; no further order was sent"
                    )
    if event == UNCONFIRMED and ib.isConnected():  # a closed socket is the session's
        probe = probe_timeout(timeout)
        if not gateway_answers(ib, probe):
            return GatewayNotAnsweringError(
                f"the gateway stopped answering: no acknowledgement within "
                f"{timeout:g} s (IBKR_ACK_TIMEOUT) and no reply to reqCurrentTime "
                f"within {probe:g} s; the order may or may not have reached it, nothing "
                "more was sent: check TWS and the network path"
            )
    return None

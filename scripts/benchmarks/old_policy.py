"""The connection policy this project replaces, kept as the benchmarks' baseline.

A faithful copy of the old paper-trading helper's behaviour: a fresh ``IB()`` per
attempt, ``ib.connect`` with ib_insync's own per-phase timeout, a fixed delay between
attempts, and a fixed ``ib.sleep(2)`` after connecting "to let the sync finish" (which
``IB.connect`` had already waited for). The old code then called ``sys.exit(1)``; here
it raises, so that a benchmark can time it.
"""

from __future__ import annotations

import contextlib
import time

from ibkr_resilience._connect.compat import IB


class OldPolicyGaveUp(Exception):
    """The old helper's ``sys.exit(1)`` after its last attempt."""


def old_connect(
    host: str = "127.0.0.1",
    port: int = 7497,
    client_id: int = 10,
    max_retries: int = 3,
    retry_delay: float = 5.0,
    timeout: float = 15.0,
) -> IB:
    last: BaseException | None = None
    for attempt in range(1, max_retries + 1):
        ib = IB()
        try:
            ib.connect(host, port, clientId=client_id, timeout=timeout)
            ib.sleep(2)
            return ib
        except Exception as exc:
            last = exc
            with contextlib.suppress(Exception):
                ib.disconnect()
            if attempt < max_retries:
                time.sleep(retry_delay)
    raise OldPolicyGaveUp(f"IBKR CONNECTION FAILED after {max_retries} attempts: {last!r}")

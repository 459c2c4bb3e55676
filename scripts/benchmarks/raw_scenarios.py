"""What raw ib_insync's ``IB.connect(timeout=T)`` sees in each simulator scenario.

Usage: python scripts/benchmarks/raw_scenarios.py [--timeout 2]

One connect per scenario; prints the outcome (exception type or "connected") and how
long it took. This is the baseline behaviour that ibkr_session classifies and bounds.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ibkr_resilience._connect.compat import IB
from ibkr_resilience.simulator import FakeGateway

SCENARIOS = (
    "down",
    "hang",
    "close_on_accept",
    "not_logged_in",
    "client_id_in_use",
    "stall_sync",
    "slow:0.2",
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=2.0)
    args = ap.parse_args()
    logging.disable(logging.CRITICAL)  # ib_insync's own error lines are expected here
    for scenario in SCENARIOS:
        with FakeGateway() as gw:
            gw.set_scenario(scenario)
            ib = IB()
            t0 = time.monotonic()
            try:
                ib.connect("127.0.0.1", gw.port, clientId=10, timeout=args.timeout)
                outcome = "connected"
            except Exception as exc:
                outcome = type(exc).__name__
            print(f"{scenario:<18} {outcome:<22} {time.monotonic() - t0:6.3f} s")
            ib.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main())

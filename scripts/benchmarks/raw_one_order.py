"""The raw baseline of a cron run: a minimal ib_insync script that places one order.

Usage: python scripts/benchmarks/raw_one_order.py PORT

Connect, place one market order, wait for the gateway's acknowledgement, disconnect;
no retries, no logging setup, no journal: what a hand-written cron script does.
"""

from __future__ import annotations

import sys

from ib_insync import IB, MarketOrder, Stock


def main() -> int:
    ib = IB()
    ib.connect("127.0.0.1", int(sys.argv[1]), clientId=10, timeout=60)
    trade = ib.placeOrder(Stock("AAPL", "SMART", "USD"), MarketOrder("BUY", 10))
    # A short timeout, not 60 s: an update processed just before waitOnUpdate starts
    # waiting (seen under valgrind) would otherwise leave it waiting for the next one.
    while trade.orderStatus.status not in ("PreSubmitted", "Submitted", "Filled"):
        ib.waitOnUpdate(timeout=0.05)
    ib.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Connect time on loopback against the simulated gateway.

Usage: python scripts/benchmarks/connect_bench.py [--runs 200]

Prints the median and 95th percentile of raw ``IB.connect`` + ``disconnect``
(the real ib_insync client, a real socket, the simulated gateway in-process).
Numbers are for comparing within one run, not across machines.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ibkr_resilience._ibcompat import IB
from ibkr_resilience.simulator import FakeGateway


def raw_cycle(port: int) -> tuple[float, float]:
    ib = IB()
    t0 = time.perf_counter()
    ib.connect("127.0.0.1", port, clientId=10, timeout=5)
    t1 = time.perf_counter()
    ib.disconnect()
    t2 = time.perf_counter()
    return t1 - t0, t2 - t0


def summarize(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    median = statistics.median(ordered)
    return f"{name:<28} median {median * 1000:7.2f} ms   p95 {p95 * 1000:7.2f} ms"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    with FakeGateway() as gw:
        for _ in range(10):  # warm-up
            raw_cycle(gw.port)
        connects, cycles = [], []
        for _ in range(args.runs):
            c, total = raw_cycle(gw.port)
            connects.append(c)
            cycles.append(total)
    print(f"runs: {args.runs}, python {sys.version.split()[0]}")
    print(summarize("raw IB.connect", connects))
    print(summarize("raw connect + disconnect", cycles))
    return 0


if __name__ == "__main__":
    sys.exit(main())

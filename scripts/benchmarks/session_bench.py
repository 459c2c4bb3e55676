"""ibkr_session against raw ib_insync on the simulated gateway, measured side by side.

Usage: python scripts/benchmarks/session_bench.py [--runs 200] [--restarts 1,3] [--timeout 2]

1. Happy path: enter + exit of ``ibkr_session`` vs raw ``IB().connect()`` +
   ``disconnect()``, interleaved run by run; medians and their ratio.
2. Recovery lag: the gateway restarts (closed for D s) just as the session starts;
   lag = session ready minus port reopened.
3. Time to give up against ``client_id_in_use`` and ``hang`` with the same settings
   (per-attempt timeout T, 3 attempts, budget 20 s), next to one raw ``IB.connect``.

Logging goes through the real ``configure_logging`` JSON pipeline into /dev/null, so its
cost is included. Numbers compare within one run on one machine.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import contextlib

from ibkr_resilience import ConnectionFailed, configure_logging, ibkr_session
from ibkr_resilience._ibcompat import IB
from ibkr_resilience.simulator import FakeGateway

QUIET: dict[str, str] = {}


def no_alert(text: str) -> None:
    pass


def raw_cycle(port: int) -> float:
    t0 = time.perf_counter()
    ib = IB()
    ib.connect("127.0.0.1", port, clientId=10, timeout=5)
    ib.disconnect()
    return time.perf_counter() - t0


def session_cycle(port: int) -> float:
    t0 = time.perf_counter()
    with ibkr_session(10, "127.0.0.1", port, timeout=5, alert=no_alert, env=QUIET):
        pass
    return time.perf_counter() - t0


def happy_path(runs: int) -> None:
    with FakeGateway() as gw:
        for _ in range(10):
            raw_cycle(gw.port)
            session_cycle(gw.port)
        raw, sess = [], []
        for _ in range(runs):
            raw.append(raw_cycle(gw.port))
            sess.append(session_cycle(gw.port))
    r, s = statistics.median(raw), statistics.median(sess)
    print(f"happy path, {runs} runs each, interleaved (median enter+exit):")
    print(f"  raw IB.connect + disconnect   {r * 1000:7.2f} ms")
    print(f"  ibkr_session enter + exit     {s * 1000:7.2f} ms")
    print(f"  ratio session / raw           {s / r:7.2f}")


def recovery(restart_s: float) -> float:
    with FakeGateway() as gw:
        # a random phase, so the retry interval does not line up with the reopening
        gw.restart(restart_s + random.uniform(0.0, 0.5))
        with ibkr_session(10, "127.0.0.1", gw.port, timeout=2, max_time=restart_s + 30,
                          alert=no_alert, env=QUIET):
            ready = time.monotonic()
        reopened = float(gw.events("sim.restarted")[0]["at"])
    return ready - reopened


def give_up(scenario: str, timeout: float) -> tuple[float, float, str]:
    with FakeGateway() as gw:
        gw.set_scenario(scenario)
        t0 = time.monotonic()
        ib = IB()
        with contextlib.suppress(Exception):
            ib.connect("127.0.0.1", gw.port, clientId=10, timeout=timeout)
        raw = time.monotonic() - t0
        t0 = time.monotonic()
        try:
            with ibkr_session(10, "127.0.0.1", gw.port, timeout=timeout, max_attempts=3,
                              max_time=20, alert=no_alert, env=QUIET):
                pass
            failure = "connected?!"
        except ConnectionFailed as exc:
            failure = exc.failure_class
        return raw, time.monotonic() - t0, failure


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--restarts", default="1,3", help="restart lengths in seconds, comma list")
    ap.add_argument("--repeat", type=int, default=5, help="runs per restart length")
    ap.add_argument("--timeout", type=float, default=2.0, help="per-attempt timeout T")
    args = ap.parse_args()
    devnull = open(os.devnull, "w")  # noqa: SIM115  (kept open for the whole run)
    configure_logging(format="json", level="INFO", stream=devnull, script="bench", env={})
    print(f"python {sys.version.split()[0]}")
    happy_path(args.runs)
    print(f"recovery lag after a restart (session ready - port reopened), "
          f"{args.repeat} runs each:")
    for d in (float(x) for x in args.restarts.split(",")):
        lags = [recovery(d) for _ in range(args.repeat)]
        print(f"  restart {d:4.0f} s: median {statistics.median(lags) * 1000:6.1f} ms, "
              f"max {max(lags) * 1000:6.1f} ms")
    print(f"time to give up (T = {args.timeout:g} s; session: 3 attempts, 20 s budget):")
    for scenario in ("client_id_in_use", "hang"):
        raw, sess, failure = give_up(scenario, args.timeout)
        print(f"  {scenario:<17} raw one IB.connect {raw:6.2f} s | "
              f"ibkr_session {sess:6.2f} s ({failure})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

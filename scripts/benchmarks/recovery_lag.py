"""Recovery lag behind a socat relay vs. the direct port, and time to give up per new class.

Usage:
    python scripts/benchmarks/recovery_lag.py [--quick] [--runs N] [--restarts 1,3,10,60]
                                              [--json results.json]

1. **Recovery lag** after a gateway restart of D s, two ways, interleaved run by run:
   *direct*: the port is closed for D s (``gw.restart``: connections refused);
   *relay*: a socat relay keeps the port open and accepts and closes every connection
   before any handshake byte for D s (``relay_restart``, what ib-gateway-docker does).
   Each restart starts as the job starts and lasts D s plus a random phase of up to
   0.5 s (so the 0.5 s retry interval cannot line up with the end). Lag = the session
   connected and synced, minus the gateway serving again (``sim.restarted``). Median
   and max of ``--runs`` runs each; the target is a max under 1 s.
2. **Time to give up** for each class added for real gateways, with the bound the
   settings give it: a relay that never comes back (``closed``: the budget B), a
   permanent holder of the client id (``rejected``, error 326: the grace period G), the
   Read-Only API (``read_only``: at once, one attempt), IB unreachable at connect
   (``ib_offline``, TWS 1100: waited on for the rest of B) and a sync that never
   finishes (``incomplete_sync``: B).

``bench.py`` can run both as a section: ``section(quick=...)`` returns the results and
``report(results)`` the lines to print. Logging goes through the real JSON pipeline into
``/dev/null``, as in ``bench.py``. The full series (60 s restarts, 5 runs each way) takes
about 13 minutes; ``--quick`` (restarts 1 and 3 s, 3 runs, B = 4 s) under a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ibkr_resilience import ConnectionFailed, SessionConfig, configure_logging, ibkr_session
from ibkr_resilience.simulator import FakeGateway

TIMEOUT = 5.0
"""Per-attempt bound T (s), as in bench.py."""
BUDGET = 20.0
"""Connect budget B (s), as in bench.py."""
GRACE = 5.0
"""IBKR_CLIENT_ID_GRACE G (s) for the 326 row: a short grace, to show it ends the wait."""
TARGET_S = 1.0
"""Recovery-lag target: connected within 1 s of the gateway serving again."""


def no_alert(text: str) -> None:
    """The session's alert hook: the alert path is not what is measured here."""


# --------------------------------------------------------------------------- 1. recovery lag
def recovery_lag(restart_s: float, front: str) -> float | None:
    """Seconds from the gateway serving again to the session being connected (``front``:
    ``direct`` or ``relay``); ``None`` if the session gave up."""
    with FakeGateway() as gw:
        length = restart_s + random.uniform(0.0, 0.5)
        if front == "relay":
            gw.relay_restart(length)
        else:
            gw.restart(length)
        config = SessionConfig(timeout=TIMEOUT, max_time=restart_s + 30)
        try:
            with ibkr_session(10, "127.0.0.1", gw.port, config=config, alert=no_alert):
                ready = time.monotonic()  # the clock of the gateway's events
        except ConnectionFailed:
            return None
        return ready - float(gw.events("sim.restarted")[0]["at"])


def lag_series(restarts: list[float], runs: int) -> list[dict[str, Any]]:
    """``runs`` lags per restart length and front, direct and relay alternating."""
    rows = []
    for d in restarts:
        lags: dict[str, list[float | None]] = {"direct": [], "relay": []}
        for _ in range(runs):
            for front in ("direct", "relay"):
                lags[front].append(recovery_lag(d, front))
        row: dict[str, Any] = {"restart_s": d, "runs": runs}
        for front, values in lags.items():
            ok = [v for v in values if v is not None]
            row[front] = {
                "lags_s": values,
                "median_s": statistics.median(ok) if ok else None,
                "max_s": max(ok) if ok else None,
                "gave_up": len(values) - len(ok),
            }
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- 2. give up
def _give_up(setup: Callable[[FakeGateway], None], config: SessionConfig) -> dict[str, Any]:
    with FakeGateway() as gw:
        setup(gw)
        t0 = time.monotonic()
        try:
            with ibkr_session(10, "127.0.0.1", gw.port, config=config, alert=no_alert):
                pass
        except ConnectionFailed as failed:
            took = time.monotonic() - t0
            return {"s": took, "class": failed.failure_class, "attempts": failed.attempts}
        raise RuntimeError("connected, but the scenario should make every attempt fail")


def give_up_rows(timeout: float, budget: float, grace: float) -> list[dict[str, Any]]:
    """One give-up per new class, with the bound its settings give it (seconds)."""
    base = SessionConfig(timeout=timeout, max_time=budget, client_id_grace=grace)
    cases: list[tuple[str, Callable[[FakeGateway], None], float, str]] = [
        ("relay closing for good", lambda gw: gw.relay_restart(3600), budget, "B"),
        ("326 held for good", lambda gw: gw.client_id_in_use(10), grace, "G"),
        ("Read-Only API", lambda gw: gw.set_scenario("read_only"), timeout, "one attempt (T)"),
        ("IB unreachable (1100)", lambda gw: gw.ib_offline(3600), budget, "B"),
        ("sync never finishes", lambda gw: gw.stall_sync(), budget, "B"),
    ]
    rows = []
    for name, setup, bound, bound_name in cases:
        row = _give_up(setup, base)
        row.update(case=name, bound_s=bound, bound=bound_name)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- section
def section(
    *,
    quick: bool = False,
    runs: int | None = None,
    restarts: list[float] | None = None,
) -> dict[str, Any]:
    """Both measurements, for ``bench.py`` or :func:`main`; JSON-ready."""
    runs = runs if runs is not None else (3 if quick else 5)
    restarts = restarts if restarts is not None else ([1.0, 3.0] if quick else [1, 3, 10, 60])
    timeout, budget, grace = (1.0, 4.0, 1.0) if quick else (TIMEOUT, BUDGET, GRACE)
    load_before = os.getloadavg()
    started = time.monotonic()
    lag = lag_series([float(d) for d in restarts], runs)
    give_up = give_up_rows(timeout, budget, grace)
    return {
        "python": sys.version.split()[0],
        "timeout_s": timeout,
        "budget_s": budget,
        "grace_s": grace,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "wall_s": time.monotonic() - started,
        "recovery": lag,
        "give_up": give_up,
    }


def _ms(value: float | None) -> str:
    return "gave up" if value is None else f"{value * 1000:.0f} ms"


def report(results: dict[str, Any]) -> list[str]:
    """The results as Markdown tables (what docs/performance.md shows)."""
    lines = [
        f"python {results['python']}; T={results['timeout_s']:g} s, "
        f"B={results['budget_s']:g} s, G={results['grace_s']:g} s; load average "
        f"{' '.join(f'{x:.2f}' for x in results['load_before'])} before, "
        f"{' '.join(f'{x:.2f}' for x in results['load_after'])} after; "
        f"{results['wall_s']:.0f} s",
        "",
        "| restart D | runs | direct port: median | max | behind a relay: median | max |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["recovery"]:
        d, r = row["direct"], row["relay"]
        gave_up = " ({} gave up)".format(r["gave_up"]) if r["gave_up"] else ""
        lines.append(
            f"| {row['restart_s']:g} s | {row['runs']} | {_ms(d['median_s'])} | "
            f"{_ms(d['max_s'])} | {_ms(r['median_s'])} | {_ms(r['max_s'])}{gave_up} |"
        )
    lines += [
        "",
        "| gateway behaviour | class | attempts | time to give up | configured bound |",
        "|---|---|---:|---:|---:|",
    ]
    for row in results["give_up"]:
        lines.append(
            f"| {row['case']} | `{row['class']}` | {row['attempts']} | {row['s']:.2f} s | "
            f"{row['bound']} = {row['bound_s']:g} s |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="restarts 1,3 s, 3 runs, T=1, B=4, G=1")
    ap.add_argument("--runs", type=int, help="runs per restart length and front (default 5)")
    ap.add_argument("--restarts", help="restart lengths in seconds (default 1,3,10,60)")
    ap.add_argument("--json", help="also write the results as JSON here")
    args = ap.parse_args(argv)
    devnull = open(os.devnull, "w")  # noqa: SIM115  (kept open for the whole run)
    configure_logging(format="json", level="INFO", stream=devnull, script="bench", env={})
    restarts = [float(x) for x in args.restarts.split(",")] if args.restarts else None
    results = section(quick=args.quick, runs=args.runs, restarts=restarts)
    print("\n".join(report(results)))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Order throughput under gateway latency: ``submit_orders`` vs a raw send-all script.

Usage:
    python scripts/benchmarks/throughput.py [--runs 7] [--rows 120] [--delay 0.05]
        [--windows 1,8] [--raw-windows 8] [--baseline REF [--baseline-windows 8]]
        [--json results.json]

The simulated gateway runs in its own process with every reply delayed ``--delay`` s
(scenario ``slow:S``), so its work stays out of the timings; a fresh one for every run
(started before the clock starts), so every run meets an account with no open orders:
with one gateway for all runs, each run's ``reqAllOpenOrders`` (the idempotency check)
returned every order the runs before it had left, and the later runs of ``submit_orders``
paid for them (hundreds of ``openOrder`` messages to decode and log). Each contender is a
whole process, as cron runs it, placing a ``--rows``-row plan of limit orders (no fills):

- **raw**: a minimal ib_insync script (this file, ``--raw PORT ROWS TAG 0``): connect, hand
  every order to ``placeOrder``, then wait until the gateway acknowledged them all; no
  qualification, no idempotency check, no journal;
- **submit_orders, window W**: ``scripts/paper_trading/submit_orders.py`` with
  ``IBKR_ORDER_WINDOW=W`` (1 = one row at a time, the behaviour before issue 13 item 4),
  JSON logs to ``/dev/null``, the journal in a temporary directory;
- **submit_orders @REF** (``--baseline REF``): the same, from the git revision ``REF`` of
  this repository (exported to a temporary directory, put first on ``PYTHONPATH``), with
  each window of ``--baseline-windows`` (default 8): before/after figures from one run;
- **raw, window W** (``--raw-windows W``): the raw script keeping at most W orders
  unacknowledged: what the window itself costs under the message-rate limit, without
  anything else ``submit_orders`` does.

Runs are interleaved (one of each contender per round, the order rotated each round),
each with its own plan id so that every run places fresh orders. Reported: median, min
and max wall seconds, each median's ratio to raw, and the median CPU seconds (user +
system of the child, which other load on the machine disturbs less than wall time).
Both contenders go through the client library's own throttle (45 requests/s,
``Client.MaxRequests``), which for 120 orders is most of the raw script's time.

``section()`` runs the measurement and returns the figures, for ``bench.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gateway_process import ROOT, gateway_process

SUBMIT = ROOT / "scripts" / "paper_trading" / "submit_orders.py"
SYMBOLS = ("AAPL", "MSFT", "IBM", "SPY")
PRICE = 100.0  # a limit far from every simulated price: the orders rest, nothing fills


def write_plan(path: Path, rows: int) -> None:
    lines = ["id,symbol,side,quantity,order_type,limit_price,stop_price,tif,take_profit,stop_loss"]
    lines += [f"r{i},{SYMBOLS[i % len(SYMBOLS)]},BUY,1,LMT,{PRICE:g},,DAY,," for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")


CPU: dict[str, list[float]] = {}
"""CPU seconds (user + system) of each contender's runs, filled by :func:`run_timed`."""


def run_timed(cmd: Sequence[str], env: dict[str, str], name: str = "") -> float:
    """Wall seconds of one child process run to completion (its CPU seconds go to
    ``CPU[name]``: less disturbed than wall time by other work on the machine); raises
    if it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} exited {done.returncode}: {done.stderr[-500:]}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    CPU.setdefault(name, []).append(cpu)
    return elapsed


Contender = Callable[[int, str], float]
"""``contender(port, tag)``: wall seconds of one run against the gateway on ``port``."""


def _contenders(
    rows: int,
    windows: Sequence[int],
    tmp: Path,
    baseline: str | None = None,
    raw_windows: Sequence[int] = (),
    baseline_windows: Sequence[int] = (8,),
) -> dict[str, Contender]:
    plan = tmp / "plan.csv"
    write_plan(plan, rows)
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp)}

    def raw(window: int, name: str) -> Contender:
        def run(port: int, tag: str) -> float:
            cmd = [sys.executable, __file__, "--raw", str(port), str(rows), tag, str(window)]
            return run_timed(cmd, base, name)

        return run

    def submit(window: int, name: str, root: Path = ROOT) -> Contender:
        def run(port: int, tag: str) -> float:
            env = {
                **base,
                "XDG_STATE_HOME": str(tmp / "state"),
                "IBKR_JOURNAL": str(tmp / f"journal-{tag}.jsonl"),
                "IBKR_LOG_FORMAT": "json",
                "IBKR_LOG_FILE": "/dev/null",
                "IBKR_ORDER_WINDOW": str(window),
            }
            if root != ROOT:
                env["PYTHONPATH"] = str(root)
            script = root / SUBMIT.relative_to(ROOT)
            cmd = [sys.executable, str(script), "--plan", str(plan), "--port", str(port)]
            return run_timed([*cmd, "--plan-id", tag], env, name)

        return run

    found: dict[str, Contender] = {"raw": raw(0, "raw")}
    for window in raw_windows:
        found[f"raw, window {window}"] = raw(window, f"raw, window {window}")
    for window in windows:
        name = f"submit_orders, window {window}"
        found[name] = submit(window, name)
    if baseline:
        old = tmp / "baseline"
        old.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", baseline], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
        for window in baseline_windows:
            name = f"submit_orders @{baseline}, window {window}"
            found[name] = submit(window, name, old)
    return found


def section(
    runs: int = 7,
    rows: int = 120,
    delay: float = 0.05,
    windows: Sequence[int] = (1, 8),
    out: Callable[[str], None] = print,
    baseline: str | None = None,
    raw_windows: Sequence[int] = (),
    baseline_windows: Sequence[int] = (8,),
) -> dict[str, Any]:
    """Measure and print the throughput section; return ``{contender: {median_s, min_s,
    max_s, ratio, runs_s}}`` plus the parameters."""
    times: dict[str, list[float]] = {}
    CPU.clear()
    with tempfile.TemporaryDirectory() as tmp:
        contenders = _contenders(rows, windows, Path(tmp), baseline, raw_windows, baseline_windows)
        names = list(contenders)
        for i in range(runs):
            turn = names[i % len(names) :] + names[: i % len(names)]  # rotate each round
            for name in turn:
                tag = f"b{i}{names.index(name)}"
                with gateway_process("--scenario", f"slow:{delay:g}") as port:
                    times.setdefault(name, []).append(contenders[name](port, tag))
    raw_median = statistics.median(times["raw"])
    results: dict[str, Any] = {"rows": rows, "delay_s": delay, "runs": runs}
    out(f"## Order throughput: {rows} rows, {delay * 1000:g} ms per reply, {runs} runs each")
    raw_cpu = statistics.median(CPU["raw"])
    width = max(28, *map(len, times))
    head = f"{'contender':<{width}} {'median':>8} {'min':>8} {'max':>8} {'ratio':>7}"
    out(f"{head} {'CPU':>7} {'ratio':>7}")
    for name, values in times.items():
        median = statistics.median(values)
        cpu = statistics.median(CPU[name])
        results[name] = {
            "median_s": median,
            "min_s": min(values),
            "max_s": max(values),
            "ratio": median / raw_median,
            "runs_s": values,
            "cpu_median_s": cpu,
            "cpu_ratio": cpu / raw_cpu,
        }
        out(
            f"{name:<{width}} {median:>7.2f}s {min(values):>7.2f}s {max(values):>7.2f}s "
            f"{median / raw_median:>6.2f}x {cpu:>6.2f}s {cpu / raw_cpu:>6.2f}x"
        )
    return results


def raw_client(port: int, rows: int, tag: str, window: int = 0) -> int:
    """The raw contender: send every order, then wait for every acknowledgement; with
    ``window`` > 0, keep at most that many unacknowledged (send, wait for answers, refill):
    what the window costs by itself, without anything else ``submit_orders`` does."""
    from ib_insync import IB, LimitOrder, Stock

    ib = IB()
    ib.connect("127.0.0.1", port, clientId=10, timeout=60)
    done = ("PreSubmitted", "Submitted", "Filled")
    trades: list[Any] = []
    deadline = time.monotonic() + 120
    while len(trades) < rows or any(t.orderStatus.status not in done for t in trades):
        waiting = sum(t.orderStatus.status not in done for t in trades)
        room = rows - len(trades) if window <= 0 else min(window - waiting, rows - len(trades))
        for i in range(len(trades), len(trades) + room):
            order = LimitOrder("BUY", 1, PRICE, orderRef=f"{tag}:r{i}", tif="DAY")
            trades.append(ib.placeOrder(Stock(SYMBOLS[i % len(SYMBOLS)], "SMART", "USD"), order))
        if time.monotonic() > deadline:
            return 1
        ib.waitOnUpdate(timeout=0.05)
    ib.disconnect()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--rows", type=int, default=120)
    ap.add_argument("--delay", type=float, default=0.05, help="seconds per gateway reply")
    ap.add_argument("--windows", default="1,8", help="IBKR_ORDER_WINDOW values to compare")
    ap.add_argument(
        "--baseline",
        metavar="REF",
        help="also run submit_orders from this git revision (e.g. main), largest window",
    )
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    ap.add_argument(
        "--raw-windows",
        default="",
        help="also run the raw script keeping at most W orders unacknowledged (e.g. 8)",
    )
    ap.add_argument(
        "--baseline-windows", default="8", help="IBKR_ORDER_WINDOW values for --baseline"
    )
    ap.add_argument(
        "--raw", nargs=4, metavar=("PORT", "ROWS", "TAG", "WINDOW"), help=argparse.SUPPRESS
    )
    args = ap.parse_args(argv)
    if args.raw:
        return raw_client(int(args.raw[0]), int(args.raw[1]), args.raw[2], int(args.raw[3]))
    windows = [int(w) for w in args.windows.split(",")]
    results = section(
        args.runs,
        args.rows,
        args.delay,
        windows,
        baseline=args.baseline,
        raw_windows=[int(w) for w in args.raw_windows.split(",") if w],
        baseline_windows=[int(w) for w in args.baseline_windows.split(",") if w],
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

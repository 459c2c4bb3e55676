"""ibkr_session vs raw ib_insync vs the old policy, on the simulated gateway, side by side.

Usage:
    python scripts/benchmarks/bench.py [--quick] [--sections 1,5,6] [--json results.json]
        [--plot lag.png]

Sections (every number of one section is measured in the same run, interleaved where
it matters, so the ratios compare like with like):

1. Happy path (issue 13 items 2 and 3): enter + exit of ``ibkr_session`` vs raw
   ``IB().connect()`` + ``disconnect()``, and the session with ``IBKR_HEALTHCHECK_URL``
   set (a keep-alive HTTP server on loopback), the gateway in its own process, JSON
   lines to a file: alternating blocks of 20 in one child process (median, min, max),
   instructions per cycle from callgrind when valgrind is installed; the old policy
   (which sleeps 2 s after connecting) a few runs.
2. Recovery lag after restarts of 1, 3, 10 and 60 s: the gateway closes just as the
   job starts and reopens D s later (plus a random phase of up to 0.5 s, so the retry
   interval cannot line up with the reopening); lag = session ready - port reopened.
   The old policy (3 attempts, 5 s apart) gives up after ~10 s.
3. Time to give up for hang, not_logged_in, client_id_in_use and close_on_accept: the
   session with per-attempt timeout T and total budget B (defaults 5 s and 20 s); the
   old policy with the same T (3 attempts, 5 s apart). Goal: session <= B + alert
   deadline, fail-fast cases far under B.
4. Alert path: the extra time a give-up takes when the Bot API endpoint black-holes
   (accepts TCP, never answers) or refuses, vs no alert; goal <= the alert deadline.
5. Whole process (item 1): ``submit_orders.py`` with a 1-row plan vs a minimal raw
   ib_insync script placing one order (``raw_one_order.py``), each a fresh process
   against a fresh gateway process, in rounds of rotating order; instructions: the
   median of ``--instr-runs`` callgrind runs each. ``--baseline DIR`` adds the same
   script from an earlier checkout ("before"), measured in the same rounds.
6. Simulator records (item 5): query time, ``wait_for`` wake-up and memory after 1k,
   10k and 100k recorded messages, next to an unbounded list scanned per query.

More sections plug into ``SECTIONS`` (a number -> a ``report(args, results)`` function).
Logging goes through the real ``configure_logging`` JSON pipeline (into /dev/null in
this process, into a file in the child processes), so its cost is included. Numbers are
for comparing within one run on one machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway_process import gateway_process, have_valgrind
from old_policy import OldPolicyGaveUp, old_connect
from process_sections import happy_path, whole_process
from recovery_lag import report as relay_report
from recovery_lag import section as relay_section
from simulator_records import simulator_records

from ibkr_resilience import (
    ConnectionFailed,
    TelegramAlert,
    configure_logging,
    ibkr_session,
)
from ibkr_resilience.simulator import FakeGateway

QUIET: dict[str, str] = {}
GIVE_UP_SCENARIOS = ("hang", "not_logged_in", "client_id_in_use", "close_on_accept")


def no_alert(text: str) -> None:
    """The session's alert hook when the alert path is not what is measured."""


# --------------------------------------------------------------------------- 1. happy path
def old_cycle(port: int) -> float:
    t0 = time.perf_counter()
    old_connect("127.0.0.1", port, 10, timeout=5).disconnect()
    return time.perf_counter() - t0


def old_policy_happy(old_runs: int) -> float:
    """Median seconds of the old policy's connect + disconnect (its 2 s sleep included)."""
    with gateway_process() as port:
        return statistics.median(old_cycle(port) for _ in range(max(1, old_runs)))


# --------------------------------------------------------------------------- 2. recovery
def recovery_lag(restart_s: float, policy: str) -> float | None:
    """Seconds from the port reopening to the job being connected; None if it gave up."""
    with FakeGateway() as gw:
        gw.restart(restart_s + random.uniform(0.0, 0.5))
        try:
            if policy == "session":
                with ibkr_session(
                    10,
                    "127.0.0.1",
                    gw.port,
                    timeout=5,
                    max_time=restart_s + 30,
                    alert=no_alert,
                    env=QUIET,
                ):
                    ready = time.monotonic()
            else:
                ib = old_connect("127.0.0.1", gw.port, 10, timeout=5)
                ready = time.monotonic()
                ib.disconnect()
        except (ConnectionFailed, OldPolicyGaveUp):
            return None
        return ready - float(gw.events("sim.restarted")[0]["at"])


# --------------------------------------------------------------------------- 3. give up
def time_to_give_up(scenario: str, policy: str, timeout: float, budget: float) -> float:
    with FakeGateway() as gw:
        gw.set_scenario(scenario)
        t0 = time.monotonic()
        try:
            if policy == "session":
                with ibkr_session(
                    10,
                    "127.0.0.1",
                    gw.port,
                    timeout=timeout,
                    max_time=budget,
                    alert=no_alert,
                    env=QUIET,
                ):
                    pass
            else:
                old_connect("127.0.0.1", gw.port, 10, timeout=timeout).disconnect()
        except (ConnectionFailed, OldPolicyGaveUp):
            return time.monotonic() - t0
        raise RuntimeError(f"{policy} connected in scenario {scenario}")


# --------------------------------------------------------------------------- 4. alert path
@contextlib.contextmanager
def black_hole() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (a hung Bot API)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(srv.accept()[0])

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        srv.close()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


def give_up_with_alert(alert: Callable[[str], object], alert_timeout: float) -> float:
    port = closed_port()
    t0 = time.monotonic()
    with (
        contextlib.suppress(ConnectionFailed),
        ibkr_session(
            10,
            "127.0.0.1",
            port,
            timeout=1,
            max_attempts=1,
            alert=alert,
            env={"IBKR_ALERT_TIMEOUT": str(alert_timeout)},
        ),
    ):
        pass
    return time.monotonic() - t0


def alert_path(alert_timeout: float) -> dict[str, float]:
    def telegram(port: int) -> TelegramAlert:
        return TelegramAlert(
            "123:bench-token", "42", api_url=f"http://127.0.0.1:{port}", timeout=alert_timeout
        )

    base = statistics.median(give_up_with_alert(no_alert, alert_timeout) for _ in range(5))
    with black_hole() as port:
        hung = give_up_with_alert(telegram(port), alert_timeout)
    refused = give_up_with_alert(telegram(closed_port()), alert_timeout)
    return {"none_s": base, "black_hole_s": hung, "refused_s": refused}


# --------------------------------------------------------------------------- report
def fmt_lag(lag: float | None) -> str:
    return "gave up" if lag is None else f"{lag * 1000:8.0f} ms"


def plot(results: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    restarts = [r["restart_s"] for r in results["recovery"]]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    new = [r["session_lag_s"] for r in results["recovery"]]
    old = [r["old_lag_s"] for r in results["recovery"]]
    ax.plot(restarts, new, "o-", label="ibkr_session")
    old_ok = [(d, v) for d, v in zip(restarts, old, strict=True) if v is not None]
    if old_ok:
        ax.plot([d for d, _ in old_ok], [v for _, v in old_ok], "s-", label="old policy")
    gave_up = [d for d, v in zip(restarts, old, strict=True) if v is None]
    if gave_up:
        top = max([v for v in new + old if v is not None] + [1.0]) * 1.1
        ax.plot(
            gave_up,
            [top] * len(gave_up),
            "rx",
            markersize=10,
            label="old policy gave up (no connection)",
        )
    ax.set_xscale("log")
    ax.set_xticks(restarts, [f"{d:g}" for d in restarts])
    ax.set_xlabel("gateway restart length (s)")
    ax.set_ylabel("port reopened -> connected (s)")
    ax.set_title("Recovery lag after a gateway restart")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=10, help="happy path: blocks of 20 each")
    ap.add_argument(
        "--instr-cycles",
        type=int,
        default=50,
        help="happy path: cycles per callgrind run (0: no instruction counts)",
    )
    ap.add_argument("--old-runs", type=int, default=3, help="happy-path runs of the old policy")
    ap.add_argument("--pairs", type=int, default=20, help="whole process: raw/job rounds")
    ap.add_argument(
        "--baseline",
        help="whole process: a copy of earlier code (git worktree add DIR COMMIT, compiled) "
        "whose submit_orders.py runs as a third contender, 'before'",
    )
    ap.add_argument(
        "--instr-runs", type=int, default=3, help="whole process: callgrind runs per contender"
    )
    ap.add_argument("--restarts", default="1,3,10,60", help="restart lengths, seconds")
    ap.add_argument("--timeout", type=float, default=5.0, help="per-attempt timeout T")
    ap.add_argument("--budget", type=float, default=20.0, help="session budget B")
    ap.add_argument("--alert-timeout", type=float, default=5.0, help="alert deadline")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="small version: 3 blocks, 10 pairs, restarts 1,3, T=1, B=4, deadline 1",
    )
    ap.add_argument("--sections", default=",".join(map(str, SECTIONS)), help="e.g. 1,5,6")
    ap.add_argument("--json", help="also write the results as JSON here")
    ap.add_argument("--plot", help="write the recovery-lag plot (PNG; needs matplotlib)")
    args = ap.parse_args()
    if args.quick:
        args.blocks, args.pairs, args.old_runs, args.restarts = 3, 10, 1, "1,3"
        args.timeout, args.budget, args.alert_timeout = 1.0, 4.0, 1.0

    devnull = open(os.devnull, "w")  # noqa: SIM115  (kept open for the whole run)
    configure_logging(format="json", level="INFO", stream=devnull, script="bench", env={})
    results: dict[str, Any] = {"python": sys.version.split()[0], "args": vars(args)}
    print(
        f"python {results['python']}; T={args.timeout:g} s, B={args.budget:g} s, "
        f"alert deadline {args.alert_timeout:g} s; valgrind: "
        f"{'yes' if have_valgrind() else 'no (no instruction counts)'}"
    )
    for number in (int(x) for x in args.sections.split(",")):
        SECTIONS[number](args, results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if args.plot and "recovery" in results:
        plot(results, args.plot)
        print(f"\nplot: {args.plot}")
    return 0


def ratio_line(name: str, s: dict[str, float], base: dict[str, float], goal: str) -> str:
    return (
        f"   {name:<24} {s['median_ms']:8.2f} ms  (min {s['min_ms']:7.2f}, max "
        f"{s['max_ms']:8.2f}, n {s['n']:g})  ratio {s['median_ms'] / base['median_ms']:.2f}"
        f"{goal}"
    )


def report_happy_path(args: argparse.Namespace, results: dict[str, Any]) -> None:
    h = happy_path(args.blocks, args.instr_cycles)
    h["old_ms"] = old_policy_happy(args.old_runs) * 1000
    results["happy"] = h
    w = h["wall"]
    print(
        "\n1. happy path enter+exit, gateway in its own process, JSON to a file "
        f"(wall: {args.blocks} alternating blocks of 20)"
    )
    print(ratio_line("raw ib_insync", w["raw"], w["raw"], ""))
    print(ratio_line("ibkr_session", w["session"], w["raw"], " (goal <= 1.10)"))
    print(ratio_line("ibkr_session+healthcheck", w["session_hc"], w["raw"], " (goal <= 1.15)"))
    old_ratio = h["old_ms"] / w["raw"]["median_ms"]
    print(f"   old policy               {h['old_ms']:8.0f} ms  ratio {old_ratio:.0f}")
    if "instructions" in h:
        i = h["instructions"]
        n = args.instr_cycles
        print(f"   instructions per cycle (callgrind, {n} vs {2 * n} cycles):")
        for name, goal in (("raw", ""), ("session", " (goal <= 1.25)"), ("session_hc", "")):
            print(f"   {name:<24} {i[name] / 1e6:8.2f} M  ratio {i[name] / i['raw']:.2f}{goal}")


def report_whole_process(args: argparse.Namespace, results: dict[str, Any]) -> None:
    baseline = Path(args.baseline).resolve() if args.baseline else None
    p = whole_process(args.pairs, baseline, args.instr_runs)
    results["whole_process"] = p
    w = p["wall"]
    print(f"\n5. whole process, 1-row plan ({args.pairs} rounds, fresh gateway process each)")
    print(ratio_line("raw one-order script", w["raw"], w["raw"], ""))
    print(ratio_line("submit_orders.py", w["job"], w["raw"], " (goal <= 1.15)"))
    if "before" in w:
        print(ratio_line(f"before ({args.baseline})", w["before"], w["raw"], ""))
    if "instructions" in p:
        i = p["instructions"]
        print(f"   instructions (callgrind, median of {args.instr_runs} runs each):")
        for name, goal in (("raw", ""), ("job", " (goal <= 1.15)"), ("before", "")):
            if name in i:
                print(f"   {name:<24} {i[name] / 1e6:8.0f} M  ratio {i[name] / i['raw']:.2f}{goal}")


def report_simulator(args: argparse.Namespace, results: dict[str, Any]) -> None:
    rows = simulator_records()
    results["simulator"] = rows
    print("\n6. simulator records: ring of the last 10,000 (default) vs an unbounded list")
    print("   recorded   kept   query(rare)  old query   wait_for wake   memory   old memory")
    for r in rows:
        mb, old_mb = r["memory_kb"] / 1024, r["old_memory_kb"] / 1024
        print(
            f"   {r['recorded']:>8} {r['kept']:>6} {r['query_us']:9.1f} us "
            f"{r['old_query_us']:8.0f} us {r['wait_for_us']:10.0f} us {mb:7.1f} MB {old_mb:8.1f} MB"
        )


def report_recovery(args: argparse.Namespace, results: dict[str, Any]) -> None:
    print("\n2. recovery lag: port reopened -> connected (goal < 1 s)")
    results["recovery"] = []
    for d in (float(x) for x in args.restarts.split(",")):
        new_lag = recovery_lag(d, "session")
        old_lag = recovery_lag(d, "old")
        results["recovery"].append({"restart_s": d, "session_lag_s": new_lag, "old_lag_s": old_lag})
        print(
            f"   restart {d:4g} s: ibkr_session {fmt_lag(new_lag)} | old policy {fmt_lag(old_lag)}"
        )


def report_give_up(args: argparse.Namespace, results: dict[str, Any]) -> None:
    print(
        f"\n3. time to give up (session: T={args.timeout:g} s, B={args.budget:g} s; "
        f"old: T={args.timeout:g} s, 3 attempts 5 s apart)"
    )
    results["give_up"] = []
    for scenario in GIVE_UP_SCENARIOS:
        new_s = time_to_give_up(scenario, "session", args.timeout, args.budget)
        old_s = time_to_give_up(scenario, "old", args.timeout, args.budget)
        results["give_up"].append({"scenario": scenario, "session_s": new_s, "old_s": old_s})
        print(
            f"   {scenario:<17} ibkr_session {new_s:6.2f} s ({new_s / args.budget:4.2f} B) "
            f"| old policy {old_s:6.2f} s"
        )


def report_alert_path(args: argparse.Namespace, results: dict[str, Any]) -> None:
    a = alert_path(args.alert_timeout)
    results["alert"] = a
    print(f"\n4. alert path: give-up time with the alert (deadline {args.alert_timeout:g} s)")
    print(f"   {'no alert':<18} {a['none_s']:6.2f} s")
    for name, key in (("Bot API black hole", "black_hole_s"), ("Bot API refused", "refused_s")):
        print(f"   {name:<18} {a[key]:6.2f} s  (+{a[key] - a['none_s']:.2f} s)")


def report_relay_lag(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """Section 7: recovery lag direct vs behind a relay, and time to give up per new class
    (``recovery_lag.py``; the full series takes about fourteen minutes)."""
    print("\n7. real gateways: recovery lag behind a relay, time to give up per class")
    results["relay"] = relay_section(quick=args.quick)
    for line in relay_report(results["relay"]):
        print(f"   {line}")


SECTIONS: dict[int, Callable[[argparse.Namespace, dict[str, Any]], None]] = {
    1: report_happy_path,
    2: report_recovery,
    3: report_give_up,
    4: report_alert_path,
    5: report_whole_process,
    6: report_simulator,
    7: report_relay_lag,
}
"""Section number -> its report; a later section (throughput, relay lag) adds a line."""


if __name__ == "__main__":
    sys.exit(main())

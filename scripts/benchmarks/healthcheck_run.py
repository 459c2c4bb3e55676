"""A whole cron run with and without ``IBKR_HEALTHCHECK_URL``: what the pings cost a run.

Usage:
    python scripts/benchmarks/healthcheck_run.py [--runs 3] [--baseline DIR]

A 1-row ``submit_orders.py`` run against a fresh simulated gateway process, with and
without a healthcheck URL (a keep-alive HTTP server on loopback, in this process),
counted in instructions (valgrind callgrind ``Ir``, median of ``--runs``; a loaded
machine does not change them). ``--baseline DIR``: the same measurement on another
checkout of the project (``git worktree add DIR <rev>``), run by the same interpreter
with ``PYTHONPATH=DIR``, in the same rounds (the contenders' order rotates).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from gateway_process import ROOT, gateway_process, have_valgrind, instructions
from process_sections import ONE_ROW, PING_PATH, job_env

from ibkr_resilience.testing import HttpServer


def one_run(tree: Path, plan: str, tmp: str, url: str | None) -> int:
    run_dir = tempfile.mkdtemp(dir=tmp)
    env = {
        **job_env(run_dir),
        # Under valgrind a run is ~50x slower: the pings must not time out and be cut
        # (the default 5 s bound would end them before their instructions are counted).
        "IBKR_ALERT_TIMEOUT": "120",
        "PYTHONPATH": str(tree),
    }
    if url is not None:
        env["IBKR_HEALTHCHECK_URL"] = url
    script = tree / "scripts" / "paper_trading" / "submit_orders.py"
    with gateway_process() as port:
        return int(
            instructions([sys.executable, str(script), "--plan", plan, "--port", str(port)], env)
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--baseline", type=Path, help="another checkout, measured alongside")
    args = ap.parse_args()
    if not have_valgrind():
        print("needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2
    trees = {"this tree": ROOT}
    if args.baseline is not None:
        trees["baseline"] = args.baseline.resolve()
    counts: dict[tuple[str, bool], list[int]] = {(t, hc): [] for t in trees for hc in (False, True)}
    keys = list(counts)
    with (
        tempfile.TemporaryDirectory() as tmp,
        HttpServer([(200, b"OK")], path=PING_PATH, keep_alive=True) as server,
    ):
        plan = os.path.join(tmp, "plan.csv")
        Path(plan).write_text(ONE_ROW)
        # Each checkout's bytecode written once, so no counted run compiles.
        for tree in trees.values():
            one_run(tree, plan, tmp, None)
        for round_ in range(args.runs):
            for tree_name, hc in keys[round_ % len(keys) :] + keys[: round_ % len(keys)]:
                url = server.url if hc else None
                before = len(server.requests)
                counts[(tree_name, hc)].append(one_run(trees[tree_name], plan, tmp, url))
                got = len(server.requests) - before
                if got != (2 if hc else 0):
                    print(f"warning: {tree_name} healthcheck={hc}: {got} pings", file=sys.stderr)
        pings = len(server.requests)
    print(f"1-row submit_orders, instructions (median of {args.runs} callgrind runs)")
    for tree_name in trees:
        plain = statistics.median(counts[(tree_name, False)])
        with_hc = statistics.median(counts[(tree_name, True)])
        spread = [
            f"{min(c) / 1e6:.0f}-{max(c) / 1e6:.0f}"
            for c in (counts[(tree_name, False)], counts[(tree_name, True)])
        ]
        print(
            f"  {tree_name:10s} no healthcheck {plain / 1e6:7.0f} M ({spread[0]})"
            f"   healthcheck URL {with_hc / 1e6:7.0f} M ({spread[1]})   ratio {with_hc / plain:.3f}"
        )
    print(f"  pings received: {pings} (2 per run with the URL)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The offline demo: the real scripts against the simulated gateway during a restart.

It shows, in under half a minute and with nothing configured, the three promises a
cron job relies on: a restarting gateway is waited out (refused attempts, then the
connect as soon as the port opens), a re-run places nothing twice, and every outcome
is in the journal and the JSON log.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from ..simulator import FakeGateway
from .jobs import close, submit

DEMO_ACCOUNT = "DU1234567"


def example_plan() -> Path:
    """The example plan shipped inside the package (also in docs/examples/plan.csv)."""
    ref = resources.files("ibkr_resilience") / "data" / "example_plan.csv"
    with resources.as_file(ref) as path:
        return Path(path)


def new_workdir() -> Path:
    """A fresh temporary directory for the demo's journal and JSON log."""
    return Path(tempfile.mkdtemp(prefix="ibkr-demo-"))


def _step(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def run_demo(
    restart_s: float = 4.0, workdir: Path | None = None, env: Mapping[str, str] | None = None
) -> int:
    """Run the demo; return 0 when every step ended as it should, else 1."""
    workdir = workdir if workdir is not None else new_workdir()
    workdir.mkdir(parents=True, exist_ok=True)
    journal = workdir / "journal.jsonl"
    log_file = workdir / "log.jsonl"
    plan = example_plan()
    environ = dict(os.environ if env is None else env)
    # The demo needs no configuration and must not reach a real gateway or Telegram.
    script_env = {k: v for k, v in environ.items() if not k.startswith(("IBKR_", "IFDS_"))}
    script_env.update(
        IBKR_LOG_FILE=str(log_file),
        IBKR_LOG_FORMAT=environ.get("IBKR_LOG_FORMAT", "console"),
        # The demo is watched, not mailed: show every attempt on the console too.
        IBKR_LOG_STDERR_LEVEL="INFO",
        IBKR_CONNECT_TIMEOUT="2",
        IBKR_CONNECT_MAX_TIME=str(restart_s + 20),
        # The run lock (a file kept on purpose: removing a lock file races) goes with the
        # journal and the log, not into the user's real state directory.
        XDG_STATE_HOME=str(workdir.resolve() / "state"),
    )
    started = time.monotonic()
    with FakeGateway(accounts=[DEMO_ACCOUNT]) as gw:
        common = ["--host", "127.0.0.1", "--port", str(gw.port), "--journal", str(journal)]
        print(f"simulated IB Gateway on 127.0.0.1:{gw.port}, paper account {DEMO_ACCOUNT}")
        print(f"plan: {plan}")
        print(f"journal: {journal}\nJSON log: {log_file}", flush=True)

        _step(f"1/3 submit_orders while the gateway restarts (port closed for {restart_s:g} s)")
        gw.restart(restart_s)
        rc1 = submit.main(["--plan", str(plan), *common], env=script_env)
        placed_first = len(gw.messages("placeOrder"))

        _step("2/3 submit_orders again, same plan: nothing may be placed twice")
        rc2 = submit.main(["--plan", str(plan), *common], env=script_env)
        placed_second = len(gw.messages("placeOrder")) - placed_first

        _step("3/3 close_positions: cancel open orders, flatten every position")
        before_close = len(gw.messages("placeOrder"))
        rc3 = close.main(common, env=script_env)
        closing_orders = len(gw.messages("placeOrder")) - before_close

        reopened = gw.events("sim.restarted")
        open_left = len(gw.state.open_orders())
        positions_left = [p for p in gw.state.position_list() if p.quantity]

    records = _read_jsonl(log_file)
    refused = [
        r
        for r in records
        if r.get("event") == "ibkr.connect.failed" and r.get("failure_class") == "refused"
    ]
    connected = [r for r in records if r.get("event") == "ibkr.connect.success"]
    journal_lines = _read_jsonl(journal)
    elapsed = time.monotonic() - started

    ok = (
        rc1 == 0
        and rc2 == 0
        and rc3 == 0
        and placed_first > 0
        and placed_second == 0
        and open_left == 0
        and not positions_left
    )
    _step("summary")
    print(
        f"run 1: exit {rc1}; {len(refused)} refused attempt(s) while the port was closed, "
        f"{'connected after the restart' if reopened and connected else 'NOT connected'}; "
        f"{placed_first} order message(s) placed"
    )
    print(f"run 2: exit {rc2}; {placed_second} order(s) placed (idempotent re-run)")
    print(
        f"close: exit {rc3}; {closing_orders} closing order(s); "
        f"{open_left} open order(s) and {len(positions_left)} position(s) left"
    )
    print(f"journal: {journal} ({len(journal_lines)} records)")
    print(f"JSON log: {log_file} ({len(records)} lines)")
    print(f"{'OK' if ok else 'FAILED'}: demo finished in {elapsed:.1f} s")
    sys.stdout.flush()
    return 0 if ok else 1

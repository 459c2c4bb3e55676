"""Bench sections measured across processes: the happy path and the whole cron run.

Both put the simulated gateway in its own process and measure the client from outside:
wall time in interleaved blocks or pairs (median, min, max), and, where ``valgrind`` is
installed, instructions (callgrind ``Ir``), which a loaded machine does not disturb.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from gateway_process import ROOT, gateway_process, have_valgrind, instructions, run_timed

from ibkr_resilience.testing import HttpServer

HERE = Path(__file__).resolve().parent
HAPPY = HERE / "happy_cycles.py"
RAW_ONE_ORDER = HERE / "raw_one_order.py"
SUBMIT = ROOT / "scripts" / "paper_trading" / "submit_orders.py"
PING_PATH = "/0b8e4f7a-5f1c-4e10-9c6a-3b7d2a9e1c13"
ONE_ROW = "id,symbol,side,quantity,order_type,limit_price,stop_price,tif,take_profit,stop_loss\n"
ONE_ROW += "bench-1,AAPL,BUY,10,MKT,,,DAY,,\n"


def stats(samples: list[float]) -> dict[str, float]:
    """Median, min and max, in milliseconds."""
    return {
        "median_ms": statistics.median(samples) * 1000,
        "min_ms": min(samples) * 1000,
        "max_ms": max(samples) * 1000,
        "n": len(samples),
    }


def base_env(tmp: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": tmp,
        "XDG_STATE_HOME": tmp,
        "PYTHONHASHSEED": "0",
    }


def job_env(run_dir: str) -> dict[str, str]:
    """A cron job's environment for one whole-process run: JSON log and journal in
    ``run_dir``, bounds long enough for callgrind's slowdown."""
    return {
        **base_env(run_dir),
        "IBKR_LOG_FORMAT": "json",
        "IBKR_LOG_FILE": os.path.join(run_dir, "job.jsonl"),
        "IBKR_JOURNAL": os.path.join(run_dir, "journal.jsonl"),
        "IBKR_CONNECT_TIMEOUT": "60",
        "IBKR_ACK_TIMEOUT": "60",
    }


# --------------------------------------------------------------------------- happy path
def happy_cmd(port: int, tmp: str, url: str, contenders: str, *opts: str) -> list[str]:
    log = os.path.join(tmp, "happy.jsonl")
    return [
        *(sys.executable, str(HAPPY), str(port), log, tmp),
        *("--healthcheck-url", url, "--contenders", contenders, *opts),
    ]


def happy_path(blocks: int, instr_cycles: int) -> dict[str, Any]:
    """Wall: raw / session / session with a healthcheck URL in alternating blocks of 20
    in one child process. Instructions: per cycle, from two callgrind runs of each
    contender (``instr_cycles`` and twice that; the difference removes start-up)."""
    out: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        gateway_process() as port,
        HttpServer([(200, b"OK")], path=PING_PATH, keep_alive=True) as hc,
    ):
        env = base_env(tmp)
        cmd = happy_cmd(port, tmp, hc.url, "raw,session,session_hc", "--blocks", str(blocks))
        done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=True)
        times: dict[str, list[float]] = json.loads(done.stdout)
        out["wall"] = {name: stats(samples) for name, samples in times.items()}
        if have_valgrind() and instr_cycles > 0:
            per_cycle: dict[str, float] = {}
            for name in ("raw", "session", "session_hc"):
                counts = []
                for n in (instr_cycles, 2 * instr_cycles):
                    opts = ("--blocks", "1", "--block", str(n), "--warmup", "3")
                    counts.append(instructions(happy_cmd(port, tmp, hc.url, name, *opts), env))
                per_cycle[name] = (counts[1] - counts[0]) / instr_cycles
            out["instructions"] = per_cycle
    return out


# --------------------------------------------------------------------------- whole process
def whole_process(pairs: int, baseline: Path | None = None, instr_runs: int = 3) -> dict[str, Any]:
    """``submit_orders.py`` with a 1-row plan vs ``raw_one_order.py``, each a fresh
    process against a fresh gateway process (an order placed once stays in the gateway's
    executions), in rounds whose order rotates. Instructions: the median of
    ``instr_runs`` callgrind runs of each (one run varies by about +-20 M).

    ``baseline``: another checkout of this repository (``git worktree add DIR COMMIT``,
    bytecode compiled), whose ``submit_orders.py`` runs as a third contender ("before")
    with its own package first on ``PYTHONPATH``: before and after in the same run."""
    contenders: dict[str, tuple[list[str], dict[str, str]]] = {}
    samples: dict[str, list[float]] = {}
    counts: dict[str, list[int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        plan = Path(tmp, "plan.csv")
        plan.write_text(ONE_ROW)
        rounds = pairs + (instr_runs if have_valgrind() else 0)
        for i in range(rounds):
            run_dir = tempfile.mkdtemp(dir=tmp)
            env = job_env(run_dir)
            with gateway_process() as port:
                job_args = ["--plan", str(plan), "--port", str(port)]
                contenders = {
                    "raw": ([sys.executable, str(RAW_ONE_ORDER), str(port)], env),
                    "job": ([sys.executable, str(SUBMIT), *job_args], env),
                }
                if baseline is not None:
                    before = baseline / "scripts" / "paper_trading" / "submit_orders.py"
                    before_env = {**env, "PYTHONPATH": str(baseline)}
                    contenders["before"] = ([sys.executable, str(before), *job_args], before_env)
                names = list(contenders)
                shift = i % len(names)
                for name in names[shift:] + names[:shift]:
                    cmd, cmd_env = contenders[name]
                    if i >= pairs:  # the last rounds: instruction counts instead of wall time
                        counts.setdefault(name, []).append(instructions(cmd, cmd_env))
                    else:
                        samples.setdefault(name, []).append(run_timed(cmd, cmd_env))
    result: dict[str, Any] = {"wall": {name: stats(s) for name, s in samples.items()}}
    if counts:
        result["instructions"] = {name: statistics.median(c) for name, c in counts.items()}
        result["instruction_runs"] = counts
    return result

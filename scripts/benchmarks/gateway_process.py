"""A simulated gateway in its own process, and a child process measured from outside.

The whole-process and happy-path sections measure the client only: with the gateway in
the measuring process, its work (and its GIL) would land in the contender's timing.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def gateway_process(*extra: str) -> Iterator[int]:
    """``python -m ibkr_resilience.simulator`` on a free port; yields the port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ibkr_resilience.simulator", "--port", str(port), *extra],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:  # a benchmark helper, not a test: polling the port is fine here
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the simulated gateway did not start")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def run_timed(cmd: Sequence[str], env: Mapping[str, str]) -> float:
    """Wall seconds of one child process run to completion; raises if it fails."""
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=dict(env), cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} exited {done.returncode}: {done.stderr[-500:]}")
    return elapsed


def have_valgrind() -> bool:
    return shutil.which("valgrind") is not None


def instructions(cmd: Sequence[str], env: Mapping[str, str]) -> int:
    """Instructions the child executes (valgrind callgrind ``Ir``, all threads)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *cmd],
            env={**env, "PYTHONHASHSEED": "0"},
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"callgrind {cmd[:3]} exited {done.returncode}: {done.stderr[-500:]}"
            )
        match = re.search(r"^summary: (\d+)", Path(out).read_text(), re.MULTILINE)
        if match is None:
            raise RuntimeError("no summary line in the callgrind output")
        return int(match.group(1))

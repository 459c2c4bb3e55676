"""``python -m ibkr_resilience.simulator``: serves until Ctrl-C, logs JSON, rejects bad input."""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ibkr_resilience._connect.compat import IB

REPO = Path(__file__).resolve().parents[1]


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ibkr_resilience.simulator", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": "/usr/bin:/bin", "IBKR_LOG_FORMAT": "json"},
    )


def _lines(stream: object) -> tuple[queue.Queue[str], threading.Thread]:
    """Lines of ``stream`` as they come; the thread ends at the end of the stream."""
    q: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:  # type: ignore[attr-defined]
            q.put(line)

    pumper = threading.Thread(target=pump, daemon=True)
    pumper.start()
    return q, pumper


def test_cli_serves_positions_logs_json_and_stops_on_ctrl_c(
    tmp_path: Path, ctrl_c_reaches_children: None
) -> None:
    positions = tmp_path / "positions.csv"
    positions.write_text("symbol,quantity,avg_cost\nAAPL,100,150\nMSFT,-5,400\n")
    proc = _spawn("--port", "0", "--accounts", "DU7654321", "--positions", str(positions))
    err, pumper = _lines(proc.stderr)
    try:
        _serve_and_stop(proc, err, pumper)
    finally:
        if proc.poll() is None:  # a failed test must not leave a gateway running
            proc.kill()
            proc.wait()


def _serve_and_stop(
    proc: subprocess.Popen[str], err: queue.Queue[str], pumper: threading.Thread
) -> None:
    try:
        port = None
        seen: list[str] = []
        while port is None:
            line = err.get(timeout=60)  # a hard stop: start-up on a loaded machine
            seen.append(line)
            match = re.search(r"simulated IB Gateway on 127\.0\.0\.1:(\d+)", line)
            if match:
                port = int(match.group(1))
        ib = IB().connect("127.0.0.1", port, clientId=5, timeout=2)
        try:
            assert ib.managedAccounts() == ["DU7654321"]
            assert sorted((p.contract.symbol, p.position) for p in ib.positions()) == [
                ("AAPL", 100.0),
                ("MSFT", -5.0),
            ]
        finally:
            ib.disconnect()
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
    assert rc == 0
    pumper.join(30)  # the end of stderr, not a quiet second, says everything was read
    assert not pumper.is_alive()
    rest = _drain(err)
    records = [json.loads(line) for line in seen + rest if line.startswith("{")]
    events = [r["event"] for r in records]
    assert "sim.started" in events and "sim.connection.open" in events
    opened = next(r for r in records if r["event"] == "sim.connection.open")
    assert opened["conn"] == 1 and opened["peer"].startswith("127.0.0.1:")
    messages = [r["request"] for r in records if r["event"] == "sim.message"]
    assert messages[:2] == ["startApi", "reqPositions"]
    assert all(r["timestamp"].endswith("Z") and "level" in r for r in records)


def _drain(q: queue.Queue[str]) -> list[str]:
    lines = []
    while not q.empty():
        lines.append(q.get_nowait())
    return lines


@pytest.mark.parametrize(
    "args, message",
    [
        (["--scenario", "nope"], "unknown scenario 'nope'"),
        (["--scenario", "restart"], "needs seconds"),
        (["--positions", "/nonexistent/positions.csv"], "No such file"),
        (["--port", "70000"], "not a port number"),
        (["--accounts", " , "], "at least one account"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    proc = _spawn("--port", "0", *args)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_cli_bad_positions_row_names_the_row(tmp_path: Path) -> None:
    positions = tmp_path / "p.csv"
    positions.write_text("symbol,quantity\nAAPL,ten\n")
    proc = _spawn("--port", "0", "--positions", str(positions))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert f"{positions}:2:" in err and "Traceback" not in err

"""Noise vs failure in the logs: a quiet library, quiet retries, and TWS codes by weight.

* Used without ``configure_logging()``, the package writes nothing to stdout: records
  go through stdlib logging, so an unconfigured program shows at most WARNING+ on
  stderr (``logging.lastResort``);
* the client library's ERROR records during a retried connect attempt, and our own
  ``ibkr.connect.failed`` for a retried attempt, are INFO: a gateway restart does not
  look like a failure; ``ibkr.connect.gave_up`` is the ERROR to alert on;
* TWS codes get their weight: broken links (1100, 2103, 2105, 2110) WARNING, data-farm
  OK notices INFO.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from ibkr_resilience._connect import compat
from ibkr_resilience._core.twslevels import TwsLevels
from ibkr_resilience.simulator import FakeGateway
from ibkr_resilience.testing import closed_port_url

ROOT = Path(__file__).resolve().parents[1]

USER_SCRIPT = textwrap.dedent(
    """
    import sys
    from ibkr_resilience import ConnectionFailed, ibkr_session
    port, dead = int(sys.argv[1]), int(sys.argv[2])
    with ibkr_session(10, "127.0.0.1", port, env={}, alert=lambda text: None) as ib:
        positions = ib.positions()
    try:
        with ibkr_session(10, "127.0.0.1", dead, env={}, alert=lambda text: None,
                          max_attempts=2, timeout=0.5):
            pass
    except ConnectionFailed:
        pass
    print("DATA", len(positions))
    """
)


def test_a_library_users_stdout_is_exactly_what_the_user_printed(
    fake_gateway: FakeGateway,
) -> None:
    dead = int(closed_port_url().rsplit(":", 1)[1])
    result = subprocess.run(
        [sys.executable, "-c", USER_SCRIPT, str(fake_gateway.port), str(dead)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "DATA 0\n"
    # logging.lastResort: WARNING and above only, one line each; no INFO chatter.
    lines = result.stderr.splitlines()
    assert lines and all("ibkr.connect.attempt" not in line for line in lines), lines
    assert any("ibkr.connect.gave_up" in line for line in lines), lines
    assert len(lines) <= 4, lines


def test_a_restart_with_a_log_file_leaves_a_handful_of_stderr_lines_and_no_error(
    fake_gateway: FakeGateway, tmp_path: Path
) -> None:
    """The job rides out a closed port: stderr (cron mail) holds no ERROR and few lines;
    the log file has every attempt, ib_insync's connection errors at INFO, marked."""
    log = tmp_path / "job.jsonl"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "IBKR_LOG_FILE": str(log),
        "IBKR_CONNECT_TIMEOUT": "1",
        "IBKR_CONNECT_MAX_TIME": "30",
    }
    script = textwrap.dedent(
        """
        import sys
        from ibkr_resilience import configure_logging, ibkr_session
        configure_logging()
        with ibkr_session(10, "127.0.0.1", int(sys.argv[1]), alert=lambda text: None):
            pass
        """
    )
    fake_gateway.down()
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(fake_gateway.port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def refused_twice() -> bool:
            text = log.read_text() if log.exists() else ""
            return text.count('"ibkr.connect.failed"') >= 2

        deadline_ok = _wait(refused_twice, 30)
        fake_gateway.up()
        _out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert deadline_ok and proc.returncode == 0, err
    stderr_lines = err.splitlines()
    assert len(stderr_lines) <= 3, stderr_lines
    assert all('"level": "error"' not in line for line in stderr_lines), stderr_lines
    records = [json.loads(x) for x in log.read_text().splitlines()]
    failed = [r for r in records if r["event"] == "ibkr.connect.failed"]
    assert len(failed) >= 2 and {r["level"] for r in failed} == {"info"}
    foreign = [
        r for r in records if r["logger"].startswith(compat.LOGGER_PREFIX) and r.get("expected")
    ]
    assert foreign and {r["level"] for r in foreign} == {"info"}
    assert not [r for r in records if r["level"] == "error"]


def _wait(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)  # polling a file another process writes (hard deadline above)
    return False


def record(msg: str, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("ib_insync.wrapper", level, __file__, 1, msg, None, None)


def test_tws_codes_get_their_weight() -> None:
    levels = TwsLevels()
    cases = {
        "Error 1100, reqId -1: Connectivity between IB and TWS has been lost.": "WARNING",
        "Error 1102, reqId -1: Connectivity restored - data maintained.": "INFO",
        "Warning 2103, reqId -1: Market data farm connection is broken:usfarm": "WARNING",
        "Warning 2104, reqId -1: Market data farm connection is OK:usfarm": "INFO",
        "Warning 2110, reqId -1: Connectivity between TWS and server is broken.": "WARNING",
        "Error 201, reqId 7: Order rejected - reason: ...": "ERROR",
    }
    for msg, expected in cases.items():
        rec = record(msg, logging.INFO if msg.startswith("Warning") else logging.ERROR)
        assert levels.filter(rec) and rec.levelname == expected, (msg, rec.levelname)

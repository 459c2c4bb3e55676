"""Fault-matrix rows for the order window's bursts (issue 13, item 4): the rows sent back to
back are announced by one journal write and one fsync, then sent.

Same rules as ``tests/test_fault_matrix.py`` (whose helpers this uses): the script runs as
cron runs it, a subprocess with the real client against the simulated gateway. With the
default window of 8, the example plan's five rows (four single orders, then a bracket) go
out as one burst: five ``order.sending`` records in one write, then seven ``placeOrder``.
The point of failure is exact, not timing: ``RLIMIT_FSIZE`` makes the burst's write fail,
and ``strace`` delivers SIGKILL on entry to the burst's fsync (the records are written,
no order is sent yet). ``EXPECTED`` holds each row's exit code and
:func:`test_the_burst_rows_state_what_the_tests_assert` checks docs/reliability.md.
"""

from __future__ import annotations

import shutil
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import test_fault_matrix
from test_fault_matrix import (
    Running,
    check_table,
    defined_tests,
    job_env,
    run_job,
    submit_cmd,
    wire_alert,
)
from test_fault_matrix_records import PREFILL, human_lines, journal, limited, no_token
from test_fault_matrix_window import BIG_PLAN_HEADER, ROWS, assert_placed_once, placed

from ibkr_resilience.simulator import FakeGateway
from ibkr_resilience.testing import BotApi

EXPECTED: dict[str, int] = {
    "burst_write_fails": 7,
    "burst_killed_before_sending": -signal.SIGKILL,
    "burst_killed_in_the_throttle": -signal.SIGKILL,
}

running = test_fault_matrix.running  # the fixture: jobs started in the background


def sending_refs(records: list[dict[str, Any]]) -> list[str]:
    return [r["order_ref"] for r in records if r["event"] == "order.sending"]


def nothing_reached(gw: FakeGateway) -> None:
    """The job is gone: once the gateway saw its connection close, it has read every byte
    the job wrote, and no ``placeOrder`` was among them."""
    assert gw.wait_for(lambda: gw.connection_count() == 0, timeout=10)
    assert placed(gw) == []


def rerun_places_each_row_once(gw: FakeGateway, tmp_path: Path, bot_api: BotApi) -> None:
    rerun = run_job(submit_cmd(gw), job_env(tmp_path, bot_api.url), tmp_path)
    assert rerun.code == 0, rerun.stderr
    assert "result: 5 submitted; exit 0" in rerun.stdout, rerun.stdout
    assert_placed_once(gw)


def test_burst_write_fails(bot_api: BotApi, tmp_path: Path) -> None:
    """The disk fills on the burst's ``order.sending`` write: none of the burst is sent;
    exit 7, saying no order sent is missing from the journal; a re-run places each row
    once. ``RLIMIT_FSIZE`` sits 100 bytes past the end of ``run.start`` (measured by a
    first run over a fresh gateway; the five records of the burst are ~2 kB)."""
    measure_dir, real_dir = tmp_path / "measure", tmp_path / "real"
    measure_dir.mkdir()
    real_dir.mkdir()
    with FakeGateway() as gw:
        run = run_job(submit_cmd(gw), job_env(measure_dir, bot_api.url), measure_dir)
        assert run.code == 0, run.stderr
    first = (measure_dir / "journal.jsonl").read_bytes().splitlines(keepends=True)[0]
    env = job_env(real_dir, bot_api.url)
    journal_path = Path(env["IBKR_JOURNAL"])
    journal_path.write_bytes(b"\n" * PREFILL)  # so the log file stays far under the limit
    with FakeGateway() as gw:
        run = run_job(limited(submit_cmd(gw), PREFILL + len(first) + 100), env, real_dir)
        assert run.code == EXPECTED["burst_write_fails"], run.stderr
        nothing_reached(gw)
        [line] = human_lines(run)
        assert line.startswith("submit_orders.py: error: the journal failed during the run")
        assert "File too large" in line and "no order sent is missing from it" in line, line
        assert [r["event"] for r in journal(journal_path)] == ["run.start"]  # + a torn line
        assert run.one("script.end")["exit_code"] == 7
        wire_alert(bot_api, "IBKR SESSION FAILED", "UnrecordedOrders")
        no_token(run)
        bot_api.requests.clear()
        rerun_places_each_row_once(gw, real_dir, bot_api)


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace to kill at the fsync")
def test_burst_killed_before_sending(
    fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path
) -> None:
    """SIGKILL on entry to the burst's fsync (``strace -e inject``; the 1st fsync of the
    journal is ``run.start``'s): the five records are written, no order was handed to the
    client. The gateway received nothing; the re-run places each row once."""
    gw = fake_gateway
    env = job_env(tmp_path, bot_api.url)
    journal_path = env["IBKR_JOURNAL"]
    kill_at_fsync = [
        *("strace", "-f", "-qq", "-o", "/dev/null", "-P", journal_path),
        *("-e", "trace=fsync", "-e", "inject=fsync:signal=SIGKILL:when=2"),
    ]
    run = run_job([*kill_at_fsync, *submit_cmd(gw)], env, tmp_path)
    assert run.code == EXPECTED["burst_killed_before_sending"], run.stderr
    nothing_reached(gw)
    records = journal(Path(journal_path))
    assert [r["event"] for r in records] == ["run.start"] + ["order.sending"] * len(ROWS)
    assert sending_refs(records) == [row.order_ref for row in ROWS]
    assert [leg["order_ref"] for leg in records[-1]["legs"]] == list(ROWS[-1].order_refs)
    rerun_places_each_row_once(gw, tmp_path, bot_api)


def test_burst_killed_in_the_throttle(
    fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path, running: Callable[..., Running]
) -> None:
    """Without strace: 100 rows in one burst (window 100) are announced, then handed to
    the client, whose throttle (45 requests/s) holds most of them for a second; SIGKILL
    once the first reaches the gateway. Every order the gateway received was announced,
    rows announced and never received exist, and the re-run places each of those once."""
    gw = fake_gateway
    plan = tmp_path / "big.csv"
    rows = [f"r{i},{('AAPL', 'MSFT', 'IBM')[i % 3]},BUY,1,LMT,100,,DAY,," for i in range(100)]
    plan.write_text("\n".join([BIG_PLAN_HEADER, *rows]) + "\n")
    cmd = [*submit_cmd(gw)[:2], "--plan", str(plan), "--port", str(gw.port)]
    env = job_env(tmp_path, bot_api.url, IBKR_ORDER_WINDOW="100", IBKR_ACK_TIMEOUT="60")
    job = running(cmd, env, tmp_path)
    assert gw.wait_for(lambda: len(placed(gw)) > 0, timeout=60)
    run, _ = job.signal_and_wait(signal.SIGKILL)
    assert run.code == EXPECTED["burst_killed_in_the_throttle"]
    assert gw.wait_for(lambda: gw.connection_count() == 0, timeout=10)
    announced = sending_refs(journal(tmp_path / "journal.jsonl"))
    received = [p.order_ref for p in placed(gw)]
    assert len(announced) == 100 and set(received) <= set(announced)
    assert 0 < len(received) < 100, len(received)  # the kill fell inside the burst
    rerun = run_job(cmd, job_env(tmp_path, bot_api.url), tmp_path)
    assert rerun.code == 0, rerun.stderr
    expected = f"result: {len(received)} skipped, {100 - len(received)} submitted; exit 0"
    assert expected in rerun.stdout, rerun.stdout
    assert Counter(p.order_ref for p in placed(gw)) == Counter(announced)


def test_the_burst_rows_state_what_the_tests_assert() -> None:
    """docs/reliability.md has a row per entry of ``EXPECTED``, naming its test here
    and stating the exit code that test asserts."""
    check_table(EXPECTED, defined_tests(__file__))

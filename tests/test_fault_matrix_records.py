"""Fault-matrix rows for records and concurrent runs (issue 11, items 2 and 4).

Same rules as ``tests/test_fault_matrix.py`` (whose helpers this uses): the script runs
as cron runs it, a subprocess with the real client against the simulated gateway and a
loopback Bot API; overlapping runs are synchronised on the jobs' own log lines and the
gateway's events, never on sleeps. ``EXPECTED`` holds each row's exit code, and
:func:`test_the_records_rows_state_what_the_tests_assert` checks docs/reliability.md.

The alert of a run that ends before or outside its session (exit 6, exit 2) is the
run-level alert every non-zero exit sends (issue 11 item 1); these rows assert the exit
code, stderr and what the gateway saw, and leave the Bot API to that feature's tests.
"""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import test_fault_matrix
from loadslack import Load
from test_fault_matrix import (
    SLACK,
    Run,
    Running,
    check_table,
    defined_tests,
    job_env,
    run_job,
    submit_cmd,
)
from token_audit import TOKEN

from ibkr_resilience.simulator import FakeGateway, PlaceOrder
from ibkr_resilience.testing import BotApi, parse_json_lines

EXPECTED: dict[str, int] = {
    "lock_wait_expires": 6,
    "lock_holder_finishes": 0,
    "journal_dev_full": 2,
    "disk_fills_mid_run": 7,
    "lock_fifo": 2,
    "lock_directory": 2,
    "crash_between_send_and_ack": -signal.SIGKILL,
    "sigterm_waiting_for_lock": 143,
}

SECOND_CLIENT_ID = 20
LOCK_WAIT_SHORT = 0.5
PREFILL = 4 * 1024 * 1024  # journal bytes before the run: more than any other file grows


running = test_fault_matrix.running  # the fixture: jobs started in the background


def placed(gw: FakeGateway, client_id: int | None = None) -> list[PlaceOrder]:
    return [
        m.request for m in gw.messages("placeOrder", client_id) if isinstance(m.request, PlaceOrder)
    ]


def plan_ref_count(gw: FakeGateway) -> Counter[str]:
    return Counter(p.order_ref for p in placed(gw))


def journal(path: Path) -> list[dict[str, Any]]:
    return parse_json_lines(path.read_text()) if path.exists() else []


def second_run_env(
    tmp_path: Path, first: dict[str, str], bot_url: str, **extra: str
) -> dict[str, str]:
    """Another run on the same machine: same state directory (so the same lock) and
    journal, its own log file."""
    own = tmp_path / "second"
    own.mkdir()
    env = job_env(own, bot_url, **extra)
    env["XDG_STATE_HOME"] = first["XDG_STATE_HOME"]
    env["IBKR_JOURNAL"] = first["IBKR_JOURNAL"]
    return env


def human_lines(run: Run) -> list[str]:
    return [line for line in run.human_stderr() if line.strip()]


def no_token(run: Run) -> None:
    assert TOKEN not in run.log_text and TOKEN not in run.stderr and TOKEN not in run.stdout


# --------------------------------------------------------------------------- the run lock
def start_holder(
    gw: FakeGateway, tmp_path: Path, bot_url: str, running: Callable[..., Running]
) -> tuple[Running, dict[str, str]]:
    """Run A: holds the lock while its 2nd order waits at the gateway (held)."""
    gw.hold_orders(after=1)
    first_dir = tmp_path / "first"
    first_dir.mkdir()
    env = job_env(first_dir, bot_url, IBKR_ACK_TIMEOUT="60", IBKR_ORDER_WINDOW="1")
    job = running(submit_cmd(gw), env, first_dir)
    assert gw.wait_for(lambda: len(gw.events("sim.order_held")) == 1, timeout=60)
    return job, env


def overlapping(
    gw: FakeGateway, tmp_path: Path, bot_url: str, running: Callable[..., Running], lock_wait: str
) -> tuple[Running, list[str], dict[str, str]]:
    """Run A holding the lock (:func:`start_holder`), and run B's command (its own client
    id) and environment (A's state directory and journal, ``IBKR_LOCK_WAIT=lock_wait``)."""
    first, first_env = start_holder(gw, tmp_path, bot_url, running)
    env = second_run_env(tmp_path, first_env, bot_url, IBKR_LOCK_WAIT=lock_wait)
    return first, [*submit_cmd(gw), "--client-id", str(SECOND_CLIENT_ID)], env


def second_waiting(
    gw: FakeGateway, tmp_path: Path, bot_url: str, running: Callable[..., Running]
) -> tuple[Running, Running]:
    """Run A holding the lock and run B started with a 60 s wait for it, once B has
    logged that it waits."""
    first, cmd, env = overlapping(gw, tmp_path, bot_url, running, "60")
    second = running(cmd, env, tmp_path / "second")
    second.wait_for_log(lambda r: r.get("event") == "script.lock.waiting")
    return first, second


def placed_once_by_the_first(gw: FakeGateway) -> None:
    """Every orderRef of the plan reached the gateway once, all from run A."""
    assert placed(gw, SECOND_CLIENT_ID) == []
    counts = plan_ref_count(gw)
    assert len(counts) == 7 and set(counts.values()) == {1}, counts


def test_overlapping_runs_lock_wait_expires(
    fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path, running: Callable[..., Running]
) -> None:
    """A second run (another client id) while the first holds the gateway: it waits
    IBKR_LOCK_WAIT, exits 6 naming the holder, never connects; the first run finishes and
    every orderRef reaches the gateway once."""
    gw = fake_gateway
    first, cmd, env = overlapping(gw, tmp_path, bot_api.url, running, str(LOCK_WAIT_SHORT))
    load = Load()
    second = run_job(cmd, env, tmp_path / "second")
    assert second.code == EXPECTED["lock_wait_expires"], second.stderr
    [line] = human_lines(second)
    assert line.startswith("submit_orders.py: error: another run holds the lock"), line
    assert f"pid {first.proc.pid}" in line and "script submit_orders.py" in line
    assert "IBKR_LOCK_WAIT" in line and "nothing was sent" in line
    waiting = second.one("script.lock.waiting")
    assert f"pid {first.proc.pid}" in waiting["held_by"]
    waited = second.at("script.end") - second.at("script.lock.waiting")
    assert LOCK_WAIT_SHORT - 0.05 <= waited < LOCK_WAIT_SHORT + load.slack(SLACK), (waited, load)
    assert second.events("ibkr.connect.attempt") == []
    assert len(gw.events("sim.connection.open")) == 1  # the first run's only
    assert gw.release_orders() == 1
    first_run = first.wait()
    assert first_run.code == 0, first_run.stderr
    placed_once_by_the_first(gw)
    no_token(second)


def test_overlapping_runs_lock_holder_finishes(
    fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path, running: Callable[..., Running]
) -> None:
    """The first run finishes within the second's wait: the second connects only after
    the first disconnected, finds every row placed and places nothing (exit 0)."""
    gw = fake_gateway
    first, second = second_waiting(gw, tmp_path, bot_api.url, running)
    assert len(gw.events("sim.connection.open")) == 1  # the second run has not connected
    assert gw.release_orders() == 1
    first_run = first.wait()
    second_run = second.wait()
    assert first_run.code == 0, first_run.stderr
    assert second_run.code == EXPECTED["lock_holder_finishes"], second_run.stderr
    assert "result: 5 skipped; exit 0" in second_run.stdout
    # Held until the first run had disconnected: its session ended before the lock passed.
    assert first_run.at("ibkr.session.end") <= second_run.at("script.lock.acquired")
    placed_once_by_the_first(gw)
    no_token(second_run)


def test_sigterm_waiting_for_lock(
    fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path, running: Callable[..., Running]
) -> None:
    """SIGTERM while the second run waits for the lock: exit 143 at once (not at the end of
    the wait), one line, no traceback; the first run is untouched and finishes."""
    gw = fake_gateway
    first, second = second_waiting(gw, tmp_path, bot_api.url, running)
    run, sent = second.signal_and_wait(signal.SIGTERM)
    assert run.code == EXPECTED["sigterm_waiting_for_lock"], run.stderr
    assert human_lines(run) == ["submit_orders.py: error: terminated (SIGTERM)"]
    assert run.at("script.end") - sent < 1  # a poll interval, not the 60 s wait
    assert len(gw.events("sim.connection.open")) == 1
    assert gw.release_orders() == 1
    assert first.wait().code == 0
    assert placed(gw, SECOND_CLIENT_ID) == []


@pytest.mark.parametrize("kind", ["lock_fifo", "lock_directory"])
def test_lock_file_unusable(
    kind: str, fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path
) -> None:
    """The lock path is a FIFO or a directory: one line, exit 2, at once, no connection."""
    gw = fake_gateway
    env = job_env(tmp_path, bot_api.url)
    lock = Path(env["XDG_STATE_HOME"]) / "ibkr_resilience" / f"lock-127.0.0.1-{gw.port}"
    lock.parent.mkdir(parents=True)
    if kind == "lock_fifo":
        os.mkfifo(lock)
    else:
        lock.mkdir()
    run = run_job(submit_cmd(gw), env, tmp_path, timeout=30)
    assert run.code == EXPECTED[kind], run.stderr
    [line] = human_lines(run)
    expected = "is not a regular file" if kind == "lock_fifo" else "Is a directory"
    assert line.startswith("submit_orders.py: error: ") and expected in line, line
    assert str(lock) in line
    assert run.at("script.end") - run.at("submit.start") < 1  # bounded: no wait, no block
    assert gw.events("sim.connection.open") == []
    assert "Traceback" not in run.stderr


# --------------------------------------------------------------------------- the journal
def test_journal_dev_full(fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path) -> None:
    """``--journal /dev/full`` opens but takes no byte: the run.start record fails before
    connecting; exit 2, the gateway never saw a connection."""
    gw = fake_gateway
    run = run_job(
        [*submit_cmd(gw), "--journal", "/dev/full"], job_env(tmp_path, bot_api.url), tmp_path
    )
    assert run.code == EXPECTED["journal_dev_full"], run.stderr
    [line] = human_lines(run)
    assert (
        line == "submit_orders.py: error: cannot write journal /dev/full: No space left on device"
    )
    assert gw.events("sim.connection.open") == []
    assert run.events("ibkr.connect.attempt") == []
    no_token(run)


def journal_offsets(path: Path) -> list[tuple[str, int]]:
    """``(event, byte offset of the record's end)`` for each line of a journal."""
    offsets, end = [], 0
    for raw in path.read_bytes().splitlines(keepends=True):
        end += len(raw)
        offsets.append((parse_json_lines(raw.decode())[0]["event"], end))
    return offsets


def limited(cmd: list[str], max_file_bytes: int) -> list[str]:
    """``cmd`` with RLIMIT_FSIZE set for it: a write past the limit fails with EFBIG (the
    interpreter ignores SIGXFSZ), like a disk that is full. Set by a wrapper that execs,
    not by ``preexec_fn``: this process runs the gateway's threads."""
    wrapper = (
        "import os, resource, signal, sys; "
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({max_file_bytes}, {max_file_bytes})); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    return [sys.executable, "-c", wrapper, *cmd]


def test_disk_fills_mid_run(bot_api: BotApi, tmp_path: Path) -> None:
    """The journal's disk fills after the 2nd row was sent: placing stops at once, exit 7,
    stderr and the alert list the sent order whose outcome could not be recorded.

    A measuring run over a fresh gateway gives where the 2nd row's ``order.sending``
    record ends; the real run's file-size limit sits 100 bytes past it (a fresh gateway
    gives the same order ids; the records' lengths differ by a few bytes at most), so
    the 2nd row is announced and sent and its outcome record is cut short."""
    measure_dir, real_dir = tmp_path / "measure", tmp_path / "real"
    measure_dir.mkdir()
    real_dir.mkdir()
    with FakeGateway() as gw:
        measure_env = job_env(measure_dir, bot_api.url, IBKR_ORDER_WINDOW="1")
        run = run_job(submit_cmd(gw), measure_env, measure_dir)
        assert run.code == 0, run.stderr
    sending = [
        end
        for event, end in journal_offsets(measure_dir / "journal.jsonl")
        if event == "order.sending"
    ]
    env = job_env(real_dir, bot_api.url, IBKR_ORDER_WINDOW="1")  # one order in flight
    journal_path = Path(env["IBKR_JOURNAL"])
    journal_path.write_bytes(b"\n" * PREFILL)  # so the log file stays far under the limit
    with FakeGateway() as gw:
        run = run_job(limited(submit_cmd(gw), PREFILL + sending[1] + 100), env, real_dir)
        sent = placed(gw)
    assert run.code == EXPECTED["disk_fills_mid_run"], run.stderr
    assert [p.order_ref.rsplit(":", 1)[1] for p in sent] == ["aapl-mkt", "msft-lmt"]
    unrecorded = sent[1]
    [line] = human_lines(run)
    assert line.startswith("submit_orders.py: error: the journal failed during the run"), line
    assert "File too large" in line and "placing stopped at once" in line
    listed = f"{unrecorded.order_ref} (order id {unrecorded.order_id})"
    assert f"orders may be live and unrecorded: {listed}" in line
    assert sent[0].order_ref not in line  # recorded: not listed
    records = journal(journal_path)
    assert [r["event"] for r in records] == [
        "run.start",
        "order.sending",
        "order.submitted",
        "order.sending",
    ]
    assert records[-1]["order_ref"] == unrecorded.order_ref
    assert records[-1]["order_id"] == unrecorded.order_id
    error = run.one("ibkr.session.error")
    assert error["error_type"] == "UnrecordedOrders"
    assert run.one("script.end")["exit_code"] == 7
    texts = [r.json["text"] for r in bot_api.requests]
    assert any(unrecorded.order_ref in t and "unrecorded" in t for t in texts), texts
    no_token(run)


def test_crash_between_send_and_ack(
    fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path, running: Callable[..., Running]
) -> None:
    """SIGKILL (no handler runs) while an order waits at the gateway for its ack: the
    journal already holds its ``order.sending`` with the id the gateway received."""
    gw = fake_gateway
    gw.hold_orders(after=0)
    env = job_env(tmp_path, bot_api.url, IBKR_ACK_TIMEOUT="60", IBKR_ORDER_WINDOW="1")
    job = running(submit_cmd(gw), env, tmp_path)
    assert gw.wait_for(lambda: len(gw.events("sim.order_held")) == 1, timeout=60)
    run, _ = job.signal_and_wait(signal.SIGKILL)
    assert run.code == EXPECTED["crash_between_send_and_ack"]
    [held] = placed(gw)
    records = journal(Path(env["IBKR_JOURNAL"]))
    assert [r["event"] for r in records] == ["run.start", "order.sending"]
    assert records[1]["order_ref"] == held.order_ref and records[1]["order_id"] == held.order_id


# --------------------------------------------------------------------------- the table
def test_the_records_rows_state_what_the_tests_assert() -> None:
    """docs/reliability.md has a row per entry of ``EXPECTED``, naming its test here
    and stating the exit code that test asserts."""
    check_table(EXPECTED, defined_tests(__file__), prefixes=("test_", "overlapping_runs_"))

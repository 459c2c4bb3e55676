"""Fault-matrix rows for "every failing run is loud" (issue 11, items 1 and 5).

Same rules as ``test_fault_matrix.py`` (whose helpers these rows use): the job runs as
cron runs it, a subprocess of ``submit_orders.py`` with the real client library against
the simulated gateway, a loopback Bot API and, here, a loopback healthchecks.io
(``IBKR_HEALTHCHECK_URL``). Each row asserts the exit code, the alert the Bot API received
(none, the session's, or the run-level ``IBKR JOB FAILED``), the pings (``/start`` first,
then ``<url>`` for exit 0, ``<url>/<exit code>`` for a failure, ``<url>/fail`` for a
signal, the run summary as the body) and the log. ``EXPECTED`` is checked against
``docs/reliability.md`` like the main matrix.

The last test of the session, :func:`test_no_output_of_any_row_holds_the_token`, greps
every output of every fault-matrix row for the bot token (see ``token_audit.py``).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import test_fault_matrix
from test_fault_matrix import (
    PLAN,
    Running,
    check_table,
    defined_tests,
    job_env,
    journal_records,
    read_log,
    run_job,
    submit_cmd,
    wire_alert,
)
from token_audit import AUDIT, AUDIT_TEST

from ibkr_resilience.simulator import FakeGateway
from ibkr_resilience.testing import BlackHole, BotApi, HttpServer

running = test_fault_matrix.running  # the fixtures, shared (pytest finds them by name)
black_hole = test_fault_matrix.black_hole

UUID = "0b8e4c1d-7a2f-4e93-b6d5-3c9f1a2e8d47"

# Row id -> (exit code, alert title or None). docs/reliability.md states exactly these.
EXPECTED: dict[str, tuple[int, str | None]] = {
    "all_rejected": (3, "IBKR JOB FAILED"),
    "missing_plan": (2, "IBKR JOB FAILED"),
    "sighup_in_block": (129, "IBKR JOB FAILED"),
    "closed_stdout": (0, None),
    "success_pings": (0, None),
    "lost_on_last_row": (1, "IBKR CONNECTION LOST"),
    "sigterm_while_reporting": (3, None),
    "closed_stdout_and_stderr": (2, "IBKR JOB FAILED"),
    "stdout_on_full_disk": (0, None),
    "stderr_on_full_disk": (2, "IBKR JOB FAILED"),
}


class Healthchecks(HttpServer):
    """A healthchecks.io stand-in: ``200 OK`` to every ping, under a secret UUID path."""

    def __init__(self) -> None:
        super().__init__([(200, b"OK")], path=f"/{UUID}")

    def pings(self) -> list[tuple[str, str]]:
        """``(suffix, body)`` of each ping in order: ``("/start", "")``, ``("", ...)``..."""
        return [(r.route.removeprefix(f"/{UUID}"), r.text) for r in self.requests]

    def run_ids(self) -> set[str]:
        return {rid for r in self.requests for rid in r.query.get("rid", [])}


@pytest.fixture
def healthchecks() -> Iterator[Healthchecks]:
    with Healthchecks() as server:
        yield server


def loud_env(tmp_path: Path, bot: BotApi, hc: Healthchecks, **extra: str) -> dict[str, str]:
    return job_env(tmp_path, bot.url, IBKR_HEALTHCHECK_URL=hc.url, **extra)


def assert_pinged(hc: Healthchecks, suffix: str, *needles: str) -> str:
    """``/start`` then one outcome ping ``suffix``, tied by one run id; return its body."""
    assert hc.wait_for_requests(2)
    pings = hc.pings()
    assert [p[0] for p in pings] == ["/start", suffix], pings
    assert len(hc.run_ids()) == 1
    body = pings[1][1]
    for needle in needles:
        assert needle in body, (needle, body)
    return body


def alert_text(bot: BotApi) -> str:
    assert len(bot.texts) == 1, bot.texts
    return bot.texts[0]


# --------------------------------------------------------------------------- the rows
def test_all_rejected(
    fake_gateway: FakeGateway, bot_api: BotApi, healthchecks: Healthchecks, tmp_path: Path
) -> None:
    """Every order rejected: exit 3, one run-level alert naming the script, the code and
    the reason, a ``/3`` ping whose body is the summary; script.end is an ERROR line."""
    gw = fake_gateway
    gw.reject_orders()
    run = run_job(submit_cmd(gw), loud_env(tmp_path, bot_api, healthchecks), tmp_path)
    code, title = EXPECTED["all_rejected"]
    assert run.code == code, run.stderr
    wire_alert(
        bot_api,
        f"{title}: submit_orders.py exit 3",
        "Script: submit_orders.py",
        "Exit code: 3 (orders rejected",
        "Reason: orders not all placed: 5 rejected",
        "Summary:",
    )
    assert_pinged(healthchecks, "/3", "5 rejected; exit 3", "journal:")
    end = run.one("script.end")
    assert end["level"] == "error" and end["exit_code"] == 3
    assert end["reason"].startswith("orders not all placed: 5 rejected")
    assert [r["level"] for r in run.log if r.get("event", "").startswith("script.")] == ["error"]
    # The session connected fine: the one alert is the run's, under the run's de-dup key.
    assert run.one("ibkr.alert.firing")["key"].endswith("|run:submit_orders.py:exit 3")
    run.assert_in_order("ibkr.session.end", "script.end", "ibkr.alert.sent")


def test_failing_cron_alerts_once_then_recovers(
    fake_gateway: FakeGateway, bot_api: BotApi, healthchecks: Healthchecks, tmp_path: Path
) -> None:
    """The all-rejected run repeated as cron repeats it: the 2nd run's alert is
    suppressed by the de-dup state (pinged ``/3`` all the same); once the orders go
    through (exit 0), one "IBKR JOB RECOVERED" message, and the state is cleared."""
    gw = fake_gateway
    gw.reject_orders()
    env = loud_env(tmp_path, bot_api, healthchecks)
    first = run_job(submit_cmd(gw), env, tmp_path)
    second = run_job(submit_cmd(gw), env, tmp_path)
    assert (first.code, second.code) == (3, 3)
    assert len(bot_api.texts) == 1  # the 2nd failure is suppressed, not re-sent
    suppressed = [r for r in second.log[len(first.log) :] if r["event"] == "ibkr.alert.suppressed"]
    assert len(suppressed) == 1 and suppressed[0]["failures"] == 2, suppressed
    gw.normal()
    third = run_job(submit_cmd(gw), env, tmp_path)
    assert third.code == 0, third.stderr
    assert len(bot_api.texts) == 2
    recovered = bot_api.texts[1]
    assert recovered.startswith("IBKR JOB RECOVERED: submit_orders.py"), recovered
    assert "Failed runs: 2" in recovered and "exit 3" in recovered
    routes = [p[0] for p in healthchecks.pings()]
    assert routes == ["/start", "/3", "/start", "/3", "/start", ""], routes
    state = (tmp_path / "alert_state.json").read_text()
    assert '"entries": {}' in state, state


def test_missing_plan(
    fake_gateway: FakeGateway, bot_api: BotApi, healthchecks: Healthchecks, tmp_path: Path
) -> None:
    """Cron runs ``--plan plans/$(date +%F).csv`` and nobody generated it: exit 2, one
    stderr line, nothing sent, and still loud: /start (sent before the plan is read),
    then ``/2`` with the error as the body, and a run-level alert."""
    plan = tmp_path / "plans" / "2026-11-30.csv"
    cmd = [*submit_cmd(fake_gateway)]
    cmd[cmd.index(str(PLAN))] = str(plan)
    run = run_job(cmd, loud_env(tmp_path, bot_api, healthchecks), tmp_path)
    code, title = EXPECTED["missing_plan"]
    assert run.code == code, run.stderr
    assert len(run.human_stderr()) == 1 and "2026-11-30.csv" in run.human_stderr()[0]
    wire_alert(bot_api, f"{title}: submit_orders.py exit 2", "Reason: ", "2026-11-30.csv")
    assert_pinged(healthchecks, "/2", "error: ", "2026-11-30.csv")
    assert fake_gateway.events("sim.connection.open") == []
    end = run.one("script.end")
    assert end["level"] == "error" and "2026-11-30.csv" in end["reason"]


def test_sighup_in_block(
    fake_gateway: FakeGateway,
    bot_api: BotApi,
    healthchecks: Healthchecks,
    tmp_path: Path,
    running: Callable[..., Running],
) -> None:
    """The terminal goes away (SIGHUP) while the 1st order waits for its ack: handled
    like SIGTERM (order journaled unconfirmed, session end logged, disconnected), 129,
    a ``/fail`` ping (a signal) and a run-level alert."""
    gw = fake_gateway
    gw.hold_orders(after=0)
    env = loud_env(tmp_path, bot_api, healthchecks, IBKR_ACK_TIMEOUT="20", IBKR_ORDER_WINDOW="1")
    job = running(submit_cmd(gw), env, tmp_path)
    assert gw.wait_for(lambda: len(gw.events("sim.order_held")) == 1, timeout=60)
    run, sent = job.signal_and_wait(signal.SIGHUP)
    code, title = EXPECTED["sighup_in_block"]
    assert run.code == code, run.stderr
    assert run.at("ibkr.session.end") - sent < 2.0
    assert "submit_orders.py: error: hung up (SIGHUP)" in run.human_stderr()
    assert "Traceback" not in run.stderr
    wire_alert(bot_api, f"{title}: submit_orders.py exit 129", "hung up (SIGHUP)")
    assert_pinged(healthchecks, "/fail", "1 unconfirmed; exit 129")
    terminated = run.one("ibkr.session.terminated")
    assert (terminated["phase"], terminated["signal"]) == ("block", "SIGHUP")
    assert run.one("ibkr.session.end")["outcome"] == "terminated"
    unconfirmed = [r for r in journal_records(tmp_path) if r["event"] == "order.unconfirmed"]
    assert len(unconfirmed) == 1 and "hung up (SIGHUP)" in unconfirmed[0]["message"]
    assert gw.wait_for(lambda: gw.connection_count() == 0, timeout=5)


def assert_one_script_end(tmp_path: Path, code: int) -> None:
    """The job's log has exactly one ``script.end``, with exit code ``code``."""
    log, _ = read_log(tmp_path / "job.jsonl")
    end = [r for r in log if r.get("event") == "script.end"]
    assert len(end) == 1 and end[0]["exit_code"] == code, end


def run_into_closed_pipe(
    cmd: list[str], env: dict[str, str], cwd: Path, *, stderr_too: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` with stdout (and with ``stderr_too`` stderr as well) on a pipe whose
    reader is already gone, as ``| head -0`` leaves it; stderr otherwise captured."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            cmd,
            cwd=cwd,
            env=env,
            stdout=write_end,
            stderr=write_end if stderr_too else subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)


def test_closed_stdout(
    fake_gateway: FakeGateway, bot_api: BotApi, healthchecks: Healthchecks, tmp_path: Path
) -> None:
    """``submit_orders.py ... | head -0``: stdout is a pipe whose reader is gone, so the
    summary's write fails with EPIPE. The run still exits 0, with no traceback and no
    "Exception ignored" at interpreter shutdown; the orders and the pings are unaffected."""
    result = run_into_closed_pipe(
        submit_cmd(fake_gateway), loud_env(tmp_path, bot_api, healthchecks), tmp_path
    )
    AUDIT.process("", result.stderr)
    code, title = EXPECTED["closed_stdout"]
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr
    assert "Exception ignored" not in result.stderr
    assert_one_script_end(tmp_path, 0)
    outcomes = {r["event"] for r in journal_records(tmp_path)} - {"run.start", "order.sending"}
    assert outcomes == {"order.submitted"}
    wire_alert(bot_api, title)
    assert_pinged(healthchecks, "", "5 submitted; exit 0")


def test_closed_stdout_and_stderr(
    fake_gateway: FakeGateway, bot_api: BotApi, healthchecks: Healthchecks, tmp_path: Path
) -> None:
    """A missing plan with both stdout and stderr on pipes whose readers are gone (``2>&1
    | head -1`` after the reader left): the error line cannot be written, yet the run
    still exits 2, alerts and pings ``/2`` (before: a BrokenPipeError escaped, exit 1,
    and the alert and the ping said "could not connect")."""
    cmd = submit_cmd(fake_gateway)
    cmd[cmd.index("--plan") + 1] = str(tmp_path / "no-such-plan.csv")
    env = loud_env(tmp_path, bot_api, healthchecks)
    result = run_into_closed_pipe(cmd, env, tmp_path, stderr_too=True)
    AUDIT.process("", "")  # its outputs went nowhere; its files are audited all the same
    code, title = EXPECTED["closed_stdout_and_stderr"]
    assert result.returncode == code
    assert_one_script_end(tmp_path, code)
    wire_alert(bot_api, f"{title}: submit_orders.py exit 2")
    assert_pinged(healthchecks, "/2", "cannot read order plan")


def run_onto_full_disk(
    cmd: list[str], env: dict[str, str], cwd: Path, stream: str
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` with ``stream`` ("stdout" or "stderr") on ``/dev/full`` (every write
    gets ENOSPC) and the other one captured."""
    with open("/dev/full", "w") as full:
        return subprocess.run(
            cmd,
            cwd=cwd,
            env=env,
            stdout=full if stream == "stdout" else subprocess.PIPE,
            stderr=full if stream == "stderr" else subprocess.PIPE,
            text=True,
            timeout=60,
        )


def test_stdout_on_full_disk(
    fake_gateway: FakeGateway, bot_api: BotApi, healthchecks: Healthchecks, tmp_path: Path
) -> None:
    """``>> /var/log/ibkr/submit.out`` on a full disk (``>/dev/full``): the summary's write
    gets ENOSPC. The run still exits 0 with no traceback, logs its ``script.end`` and
    pings success (before: exit 1, an OSError traceback, ping ``/1``, found by a newcomer)."""
    env = loud_env(tmp_path, bot_api, healthchecks)
    result = run_onto_full_disk(submit_cmd(fake_gateway), env, tmp_path, "stdout")
    AUDIT.process("", result.stderr)
    code, title = EXPECTED["stdout_on_full_disk"]
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    assert_one_script_end(tmp_path, 0)
    wire_alert(bot_api, title)
    assert_pinged(healthchecks, "", "5 submitted; exit 0")


def test_stderr_on_full_disk(
    fake_gateway: FakeGateway, bot_api: BotApi, healthchecks: Healthchecks, tmp_path: Path
) -> None:
    """A missing plan with stderr on a full disk (``2>/dev/full``): the error line cannot
    be written, yet the run exits 2, alerts and pings ``/2`` (before: exit 1)."""
    cmd = submit_cmd(fake_gateway)
    cmd[cmd.index("--plan") + 1] = str(tmp_path / "no-such-plan.csv")
    result = run_onto_full_disk(cmd, loud_env(tmp_path, bot_api, healthchecks), tmp_path, "stderr")
    AUDIT.process(result.stdout, "")
    code, title = EXPECTED["stderr_on_full_disk"]
    assert result.returncode == code
    assert_one_script_end(tmp_path, code)
    wire_alert(bot_api, f"{title}: submit_orders.py exit 2")
    assert_pinged(healthchecks, "/2", "cannot read order plan")


def test_success_pings(
    fake_gateway: FakeGateway, bot_api: BotApi, healthchecks: Healthchecks, tmp_path: Path
) -> None:
    """A good run: ``/start`` then the success ping (``<url>``) with the summary, no
    alert, and no ping of the session's own (the run owns the healthcheck)."""
    run = run_job(submit_cmd(fake_gateway), loud_env(tmp_path, bot_api, healthchecks), tmp_path)
    code, title = EXPECTED["success_pings"]
    assert run.code == code, run.stderr
    wire_alert(bot_api, title)
    assert_pinged(healthchecks, "", "5 submitted; exit 0")
    assert run.one("script.end")["level"] == "info"
    assert [r["ping"] for r in run.events("ibkr.healthcheck.sent")] == ["start", "success"]


def test_lost_on_last_row(
    fake_gateway: FakeGateway,
    bot_api: BotApi,
    healthchecks: Healthchecks,
    tmp_path: Path,
    running: Callable[..., Running],
) -> None:
    """The gateway goes away while the LAST row (the bracket) waits for its ack: exit 1
    "lost the gateway" as on any other row (not 3), the row journaled unconfirmed, the
    session's "CONNECTION LOST" alert and no second, run-level one; pinged ``/1``."""
    gw = fake_gateway
    gw.hold_orders(after=4)  # rows 1-4 answered; the bracket's 3 orders are held
    job = running(submit_cmd(gw), loud_env(tmp_path, bot_api, healthchecks), tmp_path)
    assert gw.wait_for(lambda: len(gw.events("sim.order_held")) == 3, timeout=60)
    gw.drop_connections()
    run = job.wait()
    code, title = EXPECTED["lost_on_last_row"]
    assert run.code == code, (run.stdout, run.stderr)
    assert any("lost the gateway" in line for line in run.human_stderr()), run.stderr
    wire_alert(bot_api, title)
    assert_pinged(healthchecks, "/1", "lost the gateway")
    events = [r["event"] for r in journal_records(tmp_path) if r["event"].startswith("order.")]
    assert events[-1] == "order.unconfirmed" and events.count("order.submitted") == 4, events
    end = run.one("script.end")
    assert end["level"] == "error" and end["exit_code"] == 1
    assert end["reason"].startswith("lost the gateway"), end


# --------------------------------------------------------------------------- the table
def test_sigterm_while_reporting(
    fake_gateway: FakeGateway,
    black_hole: BlackHole,
    healthchecks: Healthchecks,
    tmp_path: Path,
    running: Callable[..., Running],
) -> None:
    """SIGTERM once the run has ended, while its alert hangs (a Bot API that accepts and
    never answers): the run still exits with its own code (3) after its bounded alert,
    and pings ``/3``; before, the signal killed it there (-15, no ping at all)."""
    gw = fake_gateway
    gw.reject_orders()
    env = job_env(
        tmp_path, black_hole.url, IBKR_HEALTHCHECK_URL=healthchecks.url, IBKR_ALERT_TIMEOUT="3"
    )
    job = running(submit_cmd(gw), env, tmp_path)
    # The run's alert is under way: logged, and its connection taken by the black hole.
    job.wait_for_log(lambda r: r.get("event") == "ibkr.alert.firing" and bool(black_hole.accepted))
    run, _ = job.signal_and_wait(signal.SIGTERM)
    code, _ = EXPECTED["sigterm_while_reporting"]
    assert run.code == code, run.stderr
    assert "Traceback" not in run.stderr
    assert_pinged(healthchecks, "/3", "5 rejected; exit 3")
    assert run.one("script.end")["exit_code"] == 3
    assert run.one("ibkr.alert.timed_out")


def test_the_reliability_table_states_the_loud_rows() -> None:
    """Each row above is in docs/reliability.md with the exit code and alert asserted."""
    check_table(EXPECTED, defined_tests(__file__))


# --------------------------------------------------------------------------- the token audit
def test_no_output_of_any_row_holds_the_token() -> None:
    """Runs last (``token_audit.pytest_collection_modifyitems``). Every output of every
    fault-matrix row of this session (stdout, stderr, every file under the row's
    tmp_path: log, journal, alert state...; every request the Bot API, healthcheck and
    black-hole servers received, the token's own place in the Bot API path aside) is
    free of the bot token's secret; every selected row was audited and ran a process."""
    assert test_no_output_of_any_row_holds_the_token.__name__ == AUDIT_TEST
    if not AUDIT.expected:
        pytest.skip("no fault-matrix row selected in this session: nothing to audit")
    audited = {row.nodeid for row in AUDIT.rows}
    assert audited == AUDIT.expected, sorted(AUDIT.expected ^ audited)
    idle = [row.nodeid for row in AUDIT.rows if row.processes == 0]
    assert not idle, f"rows that ran no process (not a fault-matrix row?): {idle}"
    assert AUDIT.leaks() == []
    sources = sum(len(row.sources) for row in AUDIT.rows)
    processes = sum(row.processes for row in AUDIT.rows)
    print(f"token audit: {len(AUDIT.rows)} rows, {processes} processes, {sources} outputs")

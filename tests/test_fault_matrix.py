"""The fault matrix: one test per row of the table in ``docs/reliability.md``.

Every row runs the job the way cron runs it: ``scripts/paper_trading/submit_orders.py``
(or, where the row needs a block that does something specific, a five-line with-block
script) as a **subprocess**, the real client library against the simulated gateway
(``FakeGateway``, in this process) on 127.0.0.1, and a real HTTP server on 127.0.0.1
standing in for the Telegram Bot API (``IFDS_TELEGRAM_API_URL``). Each test asserts what
its row states: the exit code, whether the alert went out (what the Bot API received, and
that its text names the failure), and the log events (the JSON lines of
``IBKR_LOG_FILE``). ``EXPECTED`` holds the exit code and the alert of every row, and
:func:`test_the_reliability_table_states_what_the_tests_assert` checks the table against it.

Rows are independent: each has its own alert de-dup state file, log file, journal and
gateway. Nothing sleeps to hide a race: waits are on gateway events, on the Bot API's
requests, or poll a log file another process writes (short sleep, hard deadline).
Nothing depends on how fast the job's interpreter starts or how loaded the machine is:
a row that acts on the job waits for the job's own log line first, and every time bound
is measured between recorded events (the job's log timestamps and fields, the gateway's
and the Bot API's records), never from when the test started the process. The slack of a
bound is an idle-machine slack scaled by the slowdown measured around the job
(``loadslack.Load``); "at once, not at the bound" is asserted against a long bound.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from loadslack import Load, wall_clock
from test_simulator_incidents import seed_other_clients_order
from token_audit import AUDIT, TOKEN

from ibkr_resilience.simulator import FakeGateway, PlaceOrder
from ibkr_resilience.testing import BlackHole, BotApi, closed_port_url, parse_json_lines

REPO = Path(__file__).resolve().parents[1]
SUBMIT = REPO / "scripts" / "paper_trading" / "submit_orders.py"
PLAN = REPO / "docs" / "examples" / "plan.csv"
RELIABILITY_DOC = REPO / "docs" / "reliability.md"
CHAT_ID = "-100200"

# The short timings every row runs with (seconds); rows override some.
CONNECT_TIMEOUT = 0.5
MAX_TIME = 2.0
ALERT_TIMEOUT = 1.0  # the rows about the alert's deadline (a hanging, unresolvable Bot API)
# Every other row: a delivered alert never waits on its deadline, and a short one would
# cut the alert path itself on a loaded machine (~70 ms idle, over 1 s with 4 busy loops).
DELIVERY_ALERT_TIMEOUT = 10.0
SLACK = 0.5  # slack on an idle machine: a bound adds ``Load().slack(SLACK)`` (loadslack.py)
AT_ONCE_TIMEOUT = 5.0  # attempt timeout of the rows detected at once: far from any slowdown

# The with-block form, for rows that need the block to do one specific thing.
JOB = """\
import sys
from ibkr_resilience import SessionConfig, configure_logging, ibkr_session
configure_logging()
mode, port = sys.argv[1], int(sys.argv[2])
overrides = {"refused_retry_interval": float(sys.argv[3])} if len(sys.argv) > 3 else {}
with ibkr_session(config=SessionConfig.from_env(port=port, **overrides)) as ib:
    if mode == "raise":
        raise ValueError("plan row 7 is bad: <qty> & price")
"""

# Row id -> (exit code, alert title or None when no alert is sent). The reliability
# table must state exactly these; each test asserts its row against this.
EXPECTED: dict[str, tuple[int, str | None]] = {
    "refused": (1, "IBKR CONNECTION FAILED"),
    "hang": (1, "IBKR CONNECTION FAILED"),
    "close_on_accept": (1, "IBKR CONNECTION FAILED"),
    "not_logged_in": (1, "IBKR CONNECTION FAILED"),
    "client_id_in_use": (1, "IBKR CONNECTION FAILED"),
    "stall_sync": (1, "IBKR CONNECTION FAILED"),
    "slow_over_bound": (1, "IBKR CONNECTION FAILED"),
    "restart": (0, None),
    "slow_under_bound": (0, None),
    "drop_mid_session": (1, "IBKR CONNECTION LOST"),
    "exception_in_block": (1, "IBKR SESSION FAILED"),
    "sigterm_in_block": (143, "IBKR JOB FAILED"),
    "sigint_in_block": (130, "IBKR JOB FAILED"),
    "sigterm_in_retry_wait": (143, None),
    "bot_400": (1, None),
    "bot_429_retry_after": (1, "IBKR CONNECTION FAILED"),
    "bot_500": (1, None),
    "bot_hanging": (1, None),
    "bot_refused": (1, None),
    "bot_unresolvable": (1, None),
    "alert_state_file_unusable": (1, "IBKR CONNECTION FAILED"),
    "read_only_mid_run": (5, "IBKR SESSION FAILED"),
    "read_only_at_connect": (5, "IBKR CONNECTION FAILED"),
    "ib_outage_restored": (0, None),
    "ib_outage_never_clears": (1, "IBKR SESSION FAILED"),
    "silent_gateway": (1, "IBKR SESSION FAILED"),
    "order_notices": (0, None),
    "order_id_rule": (0, None),
}


# --------------------------------------------------------------------------- helpers
@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    with BlackHole() as hole:
        yield hole


def job_env(tmp_path: Path, bot_url: str, **extra: str) -> dict[str, str]:
    """The row's environment: short timeouts, JSON log file, Telegram via the stand-in,
    its own de-dup state file (rows are independent: each is a first failure)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "IBKR_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT),
        "IBKR_CONNECT_MAX_TIME": str(MAX_TIME),
        "IBKR_CONNECT_RETRY_DELAY": "0.2",
        "IBKR_ALERT_TIMEOUT": str(DELIVERY_ALERT_TIMEOUT),
        "IBKR_ACK_TIMEOUT": "3",
        "IBKR_LOG_FORMAT": "json",
        "IBKR_LOG_FILE": str(tmp_path / "job.jsonl"),
        "IBKR_ALERT_STATE_FILE": str(tmp_path / "alert_state.json"),
        "IBKR_JOURNAL": str(tmp_path / "journal.jsonl"),
        "IFDS_TELEGRAM_BOT_TOKEN": TOKEN,
        "IFDS_TELEGRAM_CHAT_ID": CHAT_ID,
        "IFDS_TELEGRAM_API_URL": bot_url,
    }
    env.update(extra)
    return env


def submit_cmd(gw: FakeGateway) -> list[str]:
    return [sys.executable, str(SUBMIT), "--plan", str(PLAN), "--port", str(gw.port)]


def job_cmd(mode: str, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-c", JOB, mode, str(port), *extra]


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    log: list[dict[str, Any]]
    log_text: str

    def events(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.log if r.get("event") == name]

    def one(self, name: str) -> dict[str, Any]:
        found = self.events(name)
        assert len(found) == 1, (name, [r.get("event") for r in self.log])
        return found[0]

    @property
    def names(self) -> list[str]:
        """Our events in order (the client library's own lines left out)."""
        return [
            str(r["event"])
            for r in self.log
            if str(r.get("event", "")).startswith(("ibkr.", "script.", "submit."))
        ]

    def assert_in_order(self, *expected: str) -> None:
        """``expected`` appears in the log in this order (other events may come between)."""
        names = iter(self.names)
        missing = [name for name in expected if name not in names]
        assert not missing, f"not in order: {missing}; log: {self.names}"

    def human_stderr(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if not line.startswith("{")]

    def at(self, name: str) -> float:
        """When the job logged its one ``name`` line (epoch seconds, the job's clock)."""
        return logged_at(self.one(name))


def logged_at(record: dict[str, Any]) -> float:
    """A log line's ``timestamp`` (ISO 8601, UTC) as epoch seconds, like ``time.time()``."""
    return datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()


def read_log(path: Path) -> tuple[list[dict[str, Any]], str]:
    if not path.exists():
        return [], ""
    text = path.read_text()
    return parse_json_lines(text), text  # skips a line being written right now (polling)


def run_job(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 60) -> Run:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    AUDIT.process(result.stdout, result.stderr)  # the token audit greps every output
    log, text = read_log(Path(env["IBKR_LOG_FILE"]))
    return Run(result.returncode, result.stdout, result.stderr, log, text)


class Running:
    """A job started in the background, for rows that act on it while it runs."""

    def __init__(self, cmd: list[str], env: dict[str, str], cwd: Path) -> None:
        self.env = env
        self.log_file = Path(env["IBKR_LOG_FILE"])
        self.out = cwd / "stdout.txt"
        self.err = cwd / "stderr.txt"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err)

    def wait_for_log(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 60, count: int = 1
    ) -> None:
        """Poll the job's log file (another process writes it) until ``count`` lines match.

        The deadline is a hard stop for a job that never gets there, generous enough for
        an interpreter starting on a loaded machine: nothing is asserted about the wait.
        """
        deadline = time.monotonic() + timeout
        while sum(1 for r in read_log(self.log_file)[0] if predicate(r)) < count:
            assert self.proc.poll() is None, f"the job ended early: {self.err.read_text()}"
            assert time.monotonic() < deadline, "the job never got there"
            time.sleep(0.01)

    def signal_and_wait(
        self, signum: int, timeout: float = 30, *, repeat_every: float | None = None
    ) -> tuple[Run, float]:
        """Send ``signum`` (again every ``repeat_every`` seconds until the job exits, as a
        supervisor that repeats itself does: signals sent back to back would merge into
        one); return the run and when it was first sent, on the clock of the job's log
        timestamps (``time.time()``), so reaction times are measured up to the job's own
        log line, not up to the end of its interpreter's teardown."""
        sent = time.time()
        self.proc.send_signal(signum)
        if repeat_every is not None:
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None and time.monotonic() < deadline:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(signum)
                time.sleep(repeat_every)  # the stimulus's rhythm, not a wait for an event
        return self.wait(timeout), sent

    def wait(self, timeout: float = 60) -> Run:
        code = self.proc.wait(timeout)
        log, text = read_log(self.log_file)
        run = Run(code, self.out.read_text(), self.err.read_text(), log, text)
        AUDIT.process(run.stdout, run.stderr)  # the token audit greps every output
        return run

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def running() -> Iterator[Callable[[list[str], dict[str, str], Path], Running]]:
    started: list[Running] = []

    def start(cmd: list[str], env: dict[str, str], cwd: Path) -> Running:
        job = Running(cmd, env, cwd)
        started.append(job)
        return job

    yield start
    for job in started:
        job.kill()


def wire_alert(bot: BotApi, title: str | None, *needles: str) -> None:
    """What the Bot API received matches the row: one message with ``title`` and the
    needles (the failure class ...), or nothing at all."""
    if title is None:
        assert bot.requests == [], bot.texts
        return
    assert len(bot.requests) == 1, bot.texts
    path, body = bot.requests[0].path, bot.requests[0].json
    assert path == f"/bot{TOKEN}/sendMessage"
    assert body["chat_id"] == CHAT_ID and body["parse_mode"] == "HTML"
    assert body["text"].startswith(title), body["text"]
    for needle in needles:
        assert needle in body["text"], (needle, body["text"])


def no_secret_leaked(run: Run) -> None:
    assert TOKEN not in run.log_text and TOKEN not in run.stderr and TOKEN not in run.stdout


def gateway_closed_cleanly(gw: FakeGateway, client_id: int = 10) -> None:
    """The job left no connection behind and closed its own (no half-open client id)."""
    assert gw.wait_for(lambda: gw.connection_count() == 0, timeout=5)
    closes = [e for e in gw.events("sim.connection.close") if e["client_id"] == client_id]
    assert closes and closes[-1]["reason"] == "client closed", closes


# --------------------------------------------------------------------------- connect faults
@dataclass(frozen=True)
class ConnectFault:
    scenario: str
    failure_class: str
    reason: str  # ibkr.connect.gave_up reason
    at_once: bool  # detected at once (far under the attempt bound) vs. at the bound
    # at_once rows run with AT_ONCE_TIMEOUT (clamped to the 2 s budget), so that "at once"
    # and "at the bound" stay far apart on a loaded machine.
    env: tuple[tuple[str, str], ...] = ()


CONNECT_FAULTS = {
    "refused": ConnectFault("down", "refused", "max_time", at_once=True),
    "hang": ConnectFault("hang", "timeout", "max_time", at_once=False),
    # A relay in front of a restarting gateway looks exactly like this: retried to the budget.
    "close_on_accept": ConnectFault("close_on_accept", "closed", "max_time", at_once=True),
    "not_logged_in": ConnectFault("not_logged_in", "not_logged_in", "max_time", at_once=False),
    # 326 is retried during its grace period (transient after a restart), then fail fast.
    "client_id_in_use": ConnectFault(
        "client_id_in_use",
        "rejected",
        "fail_fast",
        at_once=True,
        env=(("IBKR_CLIENT_ID_GRACE", "1"),),
    ),
    "stall_sync": ConnectFault("stall_sync", "incomplete_sync", "max_time", at_once=False),
    # 4 sequential round trips x 0.3 s > the 1 s bound on the whole attempt: one attempt
    # (MAX_RETRIES=1 keeps the class deterministic), cut at the bound during the sync.
    "slow_over_bound": ConnectFault(
        "slow:0.3",
        "incomplete_sync",
        "max_attempts",
        at_once=False,
        env=(("IBKR_CONNECT_TIMEOUT", "1"), ("IBKR_CONNECT_MAX_RETRIES", "1")),
    ),
}


@pytest.mark.parametrize("row", list(CONNECT_FAULTS))
def test_connect_fault(
    row: str, fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path
) -> None:
    """Every attempt fails: exit 1, one alert naming the class, nothing placed."""
    fault = CONNECT_FAULTS[row]
    code, title = EXPECTED[row]
    gw = fake_gateway
    gw.set_scenario(fault.scenario)
    at_once = {"IBKR_CONNECT_TIMEOUT": str(AT_ONCE_TIMEOUT)} if fault.at_once else {}
    env = job_env(tmp_path, bot_api.url, **at_once, **dict(fault.env))
    load = Load()
    run = run_job(submit_cmd(gw), env, tmp_path)

    assert run.code == code, run.stderr
    assert "Traceback" not in run.stderr
    (line,) = run.human_stderr()
    assert line.startswith("submit_orders.py: error: could not connect to")
    assert f"last failure {fault.failure_class}: " in line
    wire_alert(bot_api, title, f"Failure: {fault.failure_class}", f"{gw.port}")
    if fault.failure_class == "rejected":
        assert "Another process probably holds client id 10" in bot_api.texts[0]
    no_secret_leaked(run)

    failed = run.events("ibkr.connect.failed")
    assert failed and {f["failure_class"] for f in failed} == {fault.failure_class}
    # Each attempt's bound: the timeout, clamped to the budget left (its attempt line).
    windows = [a["timeout_s"] for a in run.events("ibkr.connect.attempt")]
    # Each attempt is bounded as a whole (TCP, handshake, API start, sync) by its bound.
    for f, window in zip(failed, windows, strict=True):
        assert f["attempt_ms"] <= (window + load.slack(0.3)) * 1000, (f, load)
    if fault.failure_class in ("refused", "closed", "rejected"):  # retried at a short interval
        assert all(0 < f["next_delay_s"] <= 0.5 for f in failed[:-1]), failed
    if fault.at_once:
        # Not waited out: every attempt with a wide bound (the first has the whole 2 s
        # budget) ended in under half of it; waiting it out would take all of it.
        wide = [(f, w) for f, w in zip(failed, windows, strict=True) if w >= 1.5]
        assert wide and all(f["attempt_ms"] < w * 1000 / 2 for f, w in wide), wide
    else:
        assert failed[0]["attempt_ms"] >= windows[0] * 1000 * 0.9, failed[0]
    gave_up = run.one("ibkr.connect.gave_up")
    assert (gave_up["failure_class"], gave_up["reason"]) == (fault.failure_class, fault.reason)
    assert gave_up["attempts"] == len(failed) == len(run.events("ibkr.connect.attempt"))
    if fault.reason == "fail_fast":  # by the end of the 1 s grace period, before the budget
        assert gave_up["attempts"] >= 2
        assert gave_up["elapsed_ms"] < MAX_TIME * 1000 * 0.75
    else:
        assert gave_up["elapsed_ms"] <= (MAX_TIME + load.slack(0.3)) * 1000  # the budget
    firing = run.one("ibkr.alert.firing")
    assert (firing["kind"], firing["failure_class"]) == ("first", fault.failure_class)
    assert run.one("ibkr.session.end")["outcome"] == "connect_failed"
    assert run.one("script.end")["exit_code"] == code
    run.assert_in_order(
        "submit.start",
        "ibkr.connect.attempt",
        "ibkr.connect.failed",
        "ibkr.connect.gave_up",
        "ibkr.alert.firing",
        "ibkr.alert.sent",
        "ibkr.session.end",
        "script.end",
    )
    assert gw.messages("placeOrder") == []
    assert gw.wait_for(lambda: gw.connection_count() == 0, timeout=5)


# --------------------------------------------------------------------------- connects
REFUSED_BEFORE_UP = 2


def test_restart(
    fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path, running: Callable[..., Running]
) -> None:
    """The port is closed (the daily gateway restart) while the job has been refused
    twice, then opens: refused attempts every 0.5 s, connected within one refused
    interval of the port opening, the plan placed.

    The port opens on the job's log, not on a timer: a timer started with the job would
    race its interpreter start-up (on a loaded machine the port was open before the
    first attempt). The budget is wide for the same reason: the test's reaction to the
    second refusal is not what this row measures."""
    gw = fake_gateway
    gw.down()
    load = Load()
    job = running(
        submit_cmd(gw), job_env(tmp_path, bot_api.url, IBKR_CONNECT_MAX_TIME="60"), tmp_path
    )
    job.wait_for_log(lambda r: r.get("event") == "ibkr.connect.failed", count=REFUSED_BEFORE_UP)
    gw.up()
    run = job.wait()
    assert run.code == EXPECTED["restart"][0], run.stderr
    assert "result: 5 submitted; exit 0" in run.stdout
    wire_alert(bot_api, EXPECTED["restart"][1])
    failed = run.events("ibkr.connect.failed")
    assert len(failed) >= REFUSED_BEFORE_UP
    assert {f["failure_class"] for f in failed} == {"refused"}
    assert all(f["next_delay_s"] == 0.5 for f in failed)
    success = run.one("ibkr.connect.success")
    assert success["attempt"] == len(failed) + 1 and success["accounts"] == ["DU1234567"]
    [reopened] = [e["at"] for e in gw.events("sim.listening")][1:]  # [0]: the gateway's start
    first_open = min(e["at"] for e in gw.events("sim.connection.open"))
    assert 0 <= first_open - reopened < 0.5 + load.slack(0.25)  # one refused interval late
    assert run.one("ibkr.session.end")["outcome"] == "ok"
    assert run.one("script.end")["exit_code"] == 0
    assert run.events("ibkr.alert.firing") == [] and run.events("ibkr.alert.sent") == []
    run.assert_in_order(
        "ibkr.connect.failed", "ibkr.connect.success", "ibkr.session.end", "script.end"
    )
    gateway_closed_cleanly(gw)


SLOW_S = 0.2
SLOW_T = 1.5  # 0.7 s above the 4 x S the gateway adds: scheduling on a loaded machine fits


def test_slow_under_bound(fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path) -> None:
    """Every reply 0.2 s late, bound 1.5 s: a connect is 4 sequential round trips
    (handshake, API start, sync, executions), 0.8 s < 1.5 s, so the first attempt connects."""
    gw = fake_gateway
    gw.slow(SLOW_S)
    env = job_env(
        tmp_path,
        bot_api.url,
        IBKR_CONNECT_TIMEOUT=str(SLOW_T),
        IBKR_CONNECT_MAX_RETRIES="1",
        IBKR_ACK_TIMEOUT="5",
    )
    run = run_job(submit_cmd(gw), env, tmp_path)
    assert run.code == EXPECTED["slow_under_bound"][0], run.stderr
    assert "result: 5 submitted; exit 0" in run.stdout
    wire_alert(bot_api, EXPECTED["slow_under_bound"][1])
    success = run.one("ibkr.connect.success")
    assert success["attempt"] == 1
    assert 4 * SLOW_S * 1000 * 0.95 <= success["attempt_ms"] < SLOW_T * 1000
    assert run.events("ibkr.connect.failed") == []
    assert run.one("ibkr.session.end")["outcome"] == "ok"
    assert run.one("script.end")["exit_code"] == 0
    gateway_closed_cleanly(gw)


# --------------------------------------------------------------------------- in the block
def test_drop_mid_session(
    fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path, running: Callable[..., Running]
) -> None:
    """The gateway cuts the connection while the 2nd order waits for its acknowledgement:
    not reconnected (orders may be in flight), alerted, exit 1 at once."""
    gw = fake_gateway
    gw.hold_orders(after=1)
    # One order in flight (the windowed run: test_fault_matrix_window.py).
    env = job_env(tmp_path, bot_api.url, IBKR_ACK_TIMEOUT="20", IBKR_ORDER_WINDOW="1")
    job = running(submit_cmd(gw), env, tmp_path)
    assert gw.wait_for(lambda: len(gw.events("sim.order_held")) == 1, timeout=60)
    gw.drop_connections()
    run = job.wait()
    # The loss ended the wait, not the 20 s deadline: the job noticed the drop, journaled
    # the order as lost, and ended, all within 3 s on its own clock.
    assert run.at("script.end") - run.at("ibkr.session.lost") < 3
    journal = read_log(tmp_path / "journal.jsonl")[0]
    [unconfirmed] = [r for r in journal if r["event"] == "order.unconfirmed"]
    assert unconfirmed["message"].startswith("the connection was lost before the gateway")
    code, title = EXPECTED["drop_mid_session"]
    assert run.code == code, run.stderr
    assert any("lost the gateway" in line for line in run.human_stderr())
    wire_alert(bot_api, title, f"127.0.0.1:{gw.port}", "clientId: 10")
    lost = run.one("ibkr.session.lost")
    assert lost["connected_s"] < 10
    assert run.one("ibkr.session.end")["outcome"] == "lost"
    assert run.one("script.end")["exit_code"] == code
    assert run.one("script.end")["outcomes"] == {"order.submitted": 1, "order.unconfirmed": 1}
    run.assert_in_order(
        "ibkr.connect.success",
        "ibkr.session.lost",
        "ibkr.alert.sent",
        "ibkr.session.end",
        "script.end",
    )
    assert run.events("ibkr.session.error") == []  # one drop, one alert (wire_alert)
    assert len(gw.events("sim.connection.open")) == 1  # no silent reconnect


def test_exception_in_block(fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path) -> None:
    """An exception escapes the with-block: logged with its traceback, alerted (HTML
    escaped), re-raised unchanged (Python exits 1), and the client id is released."""
    gw = fake_gateway
    run = run_job(job_cmd("raise", gw.port), job_env(tmp_path, bot_api.url), tmp_path)
    code, title = EXPECTED["exception_in_block"]
    assert run.code == code
    assert run.stderr.rstrip().endswith("ValueError: plan row 7 is bad: <qty> & price")
    wire_alert(
        bot_api, title, "Phase: block", "ValueError: plan row 7 is bad: &lt;qty&gt; &amp; price"
    )
    error = run.one("ibkr.session.error")
    assert (error["phase"], error["error_type"]) == ("block", "ValueError")
    assert error["exception"][0]["exc_type"] == "ValueError"
    assert run.one("ibkr.session.end")["outcome"] == "error"
    run.assert_in_order(
        "ibkr.connect.success", "ibkr.session.error", "ibkr.alert.sent", "ibkr.session.end"
    )
    no_secret_leaked(run)
    gateway_closed_cleanly(gw)


@pytest.mark.parametrize(
    ("row", "signum", "outcome", "event", "reason"),
    [
        pytest.param(
            "sigterm_in_block",
            signal.SIGTERM,
            "terminated",
            "ibkr.session.terminated",
            "terminated (SIGTERM)",
            id="sigterm_in_block",
        ),
        pytest.param(
            "sigint_in_block",
            signal.SIGINT,
            "interrupted",
            "ibkr.session.interrupted",
            "interrupted (Ctrl-C)",
            id="sigint_in_block",
        ),
    ],
)
def test_signal_in_block(
    row: str,
    signum: int,
    outcome: str,
    event: str,
    reason: str,
    fake_gateway: FakeGateway,
    bot_api: BotApi,
    tmp_path: Path,
    running: Callable[..., Running],
    ctrl_c_reaches_children: None,
) -> None:
    """Stopped while the 1st order waits for its acknowledgement: the documented exit
    code, one run-level alert naming it (the order in flight is unconfirmed: someone must
    look), the order journaled unconfirmed, disconnected."""
    gw = fake_gateway
    gw.hold_orders(after=0)
    env = job_env(tmp_path, bot_api.url, IBKR_ACK_TIMEOUT="20", IBKR_ORDER_WINDOW="1")
    job = running(submit_cmd(gw), env, tmp_path)
    assert gw.wait_for(lambda: len(gw.events("sim.order_held")) == 1, timeout=60)
    run, sent = job.signal_and_wait(signum)
    code, title = EXPECTED[row]
    assert run.code == code, run.stderr
    assert run.at("ibkr.session.end") - sent < 2.0  # stopped, disconnected and logged
    assert f"submit_orders.py: error: {reason}" in run.human_stderr()
    assert "Traceback" not in run.stderr
    wire_alert(bot_api, title, f"submit_orders.py exit {code}", reason)
    stopped = run.one(event)
    assert stopped["phase"] == "block"
    if signum == signal.SIGTERM:
        assert stopped["signal"] == "SIGTERM"
    assert run.one("ibkr.session.end")["outcome"] == outcome
    end = run.one("script.end")
    assert end["exit_code"] == code and end["outcomes"] == {"order.unconfirmed": 1}
    assert end["level"] == "error" and end["reason"] == reason
    assert run.events("ibkr.session.error") == []
    run.assert_in_order(
        "ibkr.connect.success", event, "ibkr.session.end", "script.end", "ibkr.alert.sent"
    )
    gateway_closed_cleanly(gw)


REFUSED_WAIT = 5.0


def test_sigterm_in_retry_wait(
    fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path, running: Callable[..., Running]
) -> None:
    """Port closed, retry interval 5 s: SIGTERM during the wait after the first refused
    attempt ends the job at once (not after the wait), 143, no alert, no second attempt."""
    gw = fake_gateway
    gw.down()
    env = job_env(tmp_path, bot_api.url, IBKR_CONNECT_MAX_TIME="30")
    job = running(job_cmd("pass", gw.port, str(REFUSED_WAIT)), env, tmp_path)
    job.wait_for_log(lambda r: r.get("event") == "ibkr.connect.failed")
    run, sent = job.signal_and_wait(signal.SIGTERM)
    code, title = EXPECTED["sigterm_in_retry_wait"]
    assert run.code == code, run.stderr
    assert run.at("ibkr.session.end") - sent < 1.5 < REFUSED_WAIT  # the wait was cut short
    assert "Traceback" not in run.stderr
    wire_alert(bot_api, title)
    failed = run.one("ibkr.connect.failed")
    assert (failed["failure_class"], failed["next_delay_s"]) == ("refused", REFUSED_WAIT)
    assert len(run.events("ibkr.connect.attempt")) == 1  # it was waiting, not connecting
    terminated = run.one("ibkr.session.terminated")
    assert (terminated["phase"], terminated["signal"]) == ("connect", "SIGTERM")
    assert run.one("ibkr.session.end")["outcome"] == "terminated"
    assert run.events("ibkr.connect.gave_up") == [] and run.events("ibkr.alert.firing") == []
    run.assert_in_order(
        "ibkr.connect.attempt", "ibkr.connect.failed", "ibkr.session.terminated", "ibkr.session.end"
    )


# --------------------------------------------------------------------------- the Bot API
RATE_LIMITED = (
    429,
    {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 1",
        "parameters": {"retry_after": 1},
    },
)
OK = (200, {"ok": True, "result": {}})


@pytest.mark.parametrize(
    ("row", "status", "answer"),
    [
        pytest.param(
            "bot_400",
            400,
            (400, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}),
            id="bot_400",
        ),
        pytest.param(
            "bot_500",
            500,
            (500, {"ok": False, "error_code": 500, "description": "Internal Server Error"}),
            id="bot_500",
        ),
    ],
)
def test_bot_error(
    row: str,
    status: int,
    answer: tuple[int, dict[str, Any]],
    fake_gateway: FakeGateway,
    bot_api: BotApi,
    tmp_path: Path,
) -> None:
    """The alert is refused: logged (status and description), not retried, not recorded
    as sent (the next failing run tries again); the job's exit code is unchanged."""
    fake_gateway.down()
    bot_api.answer(answer)
    run = run_job(submit_cmd(fake_gateway), job_env(tmp_path, bot_api.url), tmp_path)
    assert run.code == EXPECTED[row][0]
    assert len(bot_api.requests) == 1  # delivered to the API, refused by it: not retried
    assert "IBKR CONNECTION FAILED" in bot_api.texts[0]
    failed = run.one("ibkr.alert.telegram.failed")
    assert (failed["status"], failed["description"]) == (status, answer[1]["description"])
    assert run.one("ibkr.alert.failed")["error"] == "alert reported failure"
    assert run.events("ibkr.alert.sent") == []
    assert run.one("ibkr.session.end")["outcome"] == "connect_failed"
    state = json.loads((tmp_path / "alert_state.json").read_text())
    assert [e["alerts_sent"] for e in state["entries"].values()] == [0]
    no_secret_leaked(run)


def test_bot_429_retry_after(fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path) -> None:
    """429 with retry_after=1 within a 3 s deadline: waited, retried once, delivered."""
    fake_gateway.down()
    bot_api.answer(RATE_LIMITED, OK)
    load = Load()
    run = run_job(
        submit_cmd(fake_gateway), job_env(tmp_path, bot_api.url, IBKR_ALERT_TIMEOUT="3"), tmp_path
    )
    code, title = EXPECTED["bot_429_retry_after"]
    assert run.code == code
    assert len(bot_api.requests) == 2
    (first_at, first), (second_at, second) = [(r.at, r.json) for r in bot_api.requests]
    assert first == second and second["text"].startswith(str(title))
    assert 1.0 <= second_at - first_at < 1.0 + load.slack(SLACK), load  # waited retry_after
    assert run.one("ibkr.alert.telegram.rate_limited")["retry_after_s"] == 1
    assert run.one("ibkr.alert.sent")["elapsed_ms"] < 3000
    assert run.events("ibkr.alert.telegram.failed") == []
    no_secret_leaked(run)


def _added_by_alert(run: Run) -> float:
    """Seconds between giving up and the end of the session: the alert path's cost."""
    return run.at("ibkr.session.end") - run.at("ibkr.connect.gave_up")


def test_bot_hanging(fake_gateway: FakeGateway, black_hole: BlackHole, tmp_path: Path) -> None:
    """The Bot API accepts and never answers: the job stops waiting at IBKR_ALERT_TIMEOUT."""
    fake_gateway.down()
    env = job_env(tmp_path, black_hole.url, IBKR_ALERT_TIMEOUT=str(ALERT_TIMEOUT))
    load = Load()
    run = run_job(submit_cmd(fake_gateway), env, tmp_path)
    assert run.code == EXPECTED["bot_hanging"][0]
    assert len(black_hole.accepted) == 1 and b"POST /bot" in black_hole.received
    timed_out = run.one("ibkr.alert.timed_out")
    assert timed_out["timeout_s"] == ALERT_TIMEOUT
    assert ALERT_TIMEOUT * 1000 <= timed_out["elapsed_ms"] < (ALERT_TIMEOUT + 0.2) * 1000
    slack = load.slack(SLACK)
    assert ALERT_TIMEOUT - 0.05 <= _added_by_alert(run) < ALERT_TIMEOUT + slack, load
    # The whole session (from entering the with-block): the budget plus the alert bound.
    assert run.one("ibkr.session.end")["duration_s"] < MAX_TIME + ALERT_TIMEOUT + slack
    assert run.events("ibkr.alert.sent") == []
    assert run.one("ibkr.session.end")["outcome"] == "connect_failed"
    no_secret_leaked(run)


REFUSED_ALERT_TIMEOUT = 10.0


def test_bot_refused(fake_gateway: FakeGateway, tmp_path: Path) -> None:
    """Nothing listens on the Bot API's port: logged, quick, token scrubbed from the error.

    "Quick" is "not waited on": under a quarter of a 10 s IBKR_ALERT_TIMEOUT (a refused
    connection retried or waited on until the deadline would take all of it), a margin no
    slowdown of the ~70 ms alert path on a loaded machine comes near."""
    fake_gateway.down()
    env = job_env(tmp_path, closed_port_url(), IBKR_ALERT_TIMEOUT=str(REFUSED_ALERT_TIMEOUT))
    run = run_job(submit_cmd(fake_gateway), env, tmp_path)
    assert run.code == EXPECTED["bot_refused"][0]
    failed = run.one("ibkr.alert.telegram.failed")
    assert failed["error_type"] == "ConnectionError"
    assert run.one("ibkr.alert.failed")["elapsed_ms"] < REFUSED_ALERT_TIMEOUT * 1000 / 4
    assert _added_by_alert(run) < REFUSED_ALERT_TIMEOUT / 4
    assert run.events("ibkr.alert.sent") == []
    no_secret_leaked(run)


def test_bot_unresolvable(fake_gateway: FakeGateway, tmp_path: Path) -> None:
    """``nonexistent.invalid`` cannot resolve: bounded by IBKR_ALERT_TIMEOUT whether DNS
    fails at once (here, usually) or hangs (the bound is asserted, not the path)."""
    fake_gateway.down()
    env = job_env(tmp_path, "http://nonexistent.invalid", IBKR_ALERT_TIMEOUT=str(ALERT_TIMEOUT))
    load = Load()
    run = run_job(submit_cmd(fake_gateway), env, tmp_path)
    assert run.code == EXPECTED["bot_unresolvable"][0]
    outcome = run.events("ibkr.alert.failed") + run.events("ibkr.alert.timed_out")
    assert len(outcome) == 1
    assert outcome[0]["elapsed_ms"] < (ALERT_TIMEOUT + load.slack(0.2)) * 1000, load
    assert _added_by_alert(run) < ALERT_TIMEOUT + load.slack(SLACK)
    assert run.events("ibkr.alert.sent") == []
    no_secret_leaked(run)


def test_alert_state_file_unusable(
    fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path
) -> None:
    """IBKR_ALERT_STATE_FILE under a path that cannot exist (a regular file as its
    directory): not a configuration error, by design. The de-dup layer fails open: logged,
    and the alert is sent anyway."""
    fake_gateway.down()
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    env = job_env(tmp_path, bot_api.url, IBKR_ALERT_STATE_FILE=str(blocker / "state.json"))
    run = run_job(submit_cmd(fake_gateway), env, tmp_path)
    code, title = EXPECTED["alert_state_file_unusable"]
    assert run.code == code
    wire_alert(bot_api, title, "Failure: refused")
    unavailable = run.one("ibkr.alert.state_unavailable")
    assert unavailable["action"] == "sending the alert without de-duplication"
    assert run.one("ibkr.alert.sent")
    run.assert_in_order(
        "ibkr.connect.gave_up",
        "ibkr.alert.state_unavailable",
        "ibkr.alert.sent",
        "ibkr.session.end",
    )


# --------------------------------------------------------------------------- real gateways
def journal_records(tmp_path: Path) -> list[dict[str, Any]]:
    return parse_json_lines((tmp_path / "journal.jsonl").read_text())


def order_ids_sent(gw: FakeGateway) -> list[int]:
    return [
        r.request.order_id for r in gw.messages("placeOrder") if isinstance(r.request, PlaceOrder)
    ]


LONG_ACK_TIMEOUT = 20.0


def test_read_only_mid_run(fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path) -> None:
    """The gateway turns Read-Only after the first order: the 2nd gets 321, is journaled
    rejected with the code, nothing more is sent, exit 5, the alert says what to untick."""
    gw = fake_gateway
    gw.read_only(after_orders=1)
    env = job_env(
        tmp_path,
        bot_api.url,
        IBKR_ORDER_WINDOW="1",  # windowed: ..._window.py
        IBKR_ACK_TIMEOUT=str(LONG_ACK_TIMEOUT),
    )
    run = run_job(submit_cmd(gw), env, tmp_path)
    code, title = EXPECTED["read_only_mid_run"]
    assert run.code == code, run.stderr
    # The session's own duration: no ack deadline waited (interpreter start-up excluded);
    # waiting it would take all 20 s, the run takes a fraction of a second.
    assert run.one("ibkr.session.end")["duration_s"] < LONG_ACK_TIMEOUT / 4
    assert len(gw.messages("placeOrder")) == 2  # the 321 stopped the run
    wire_alert(bot_api, title, "ReadOnlyApiError", "error 321", "Read-Only API", "ReadOnlyApi=no")
    rejected = [r for r in journal_records(tmp_path) if r["event"] == "order.rejected"]
    assert len(rejected) == 1 and rejected[0]["message"].startswith("error 321:"), rejected
    assert run.one("script.end")["outcomes"] == {"order.submitted": 1, "order.rejected": 1}
    assert any("Read-Only API" in line for line in run.human_stderr())
    gateway_closed_cleanly(gw)


def test_read_only_at_connect(fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path) -> None:
    """Read-Only API from the start: the sync's open-orders request gets 321; one attempt,
    no retry (a setting), exit 5 as for a 321 mid-run, the alert says what to untick."""
    gw = fake_gateway
    gw.set_scenario("read_only")
    run = run_job(submit_cmd(gw), job_env(tmp_path, bot_api.url), tmp_path)
    code, title = EXPECTED["read_only_at_connect"]
    assert run.code == code, run.stderr
    gave_up = run.one("ibkr.connect.gave_up")
    assert (gave_up["failure_class"], gave_up["attempts"]) == ("read_only", 1)
    assert gave_up["elapsed_ms"] < 1000 * CONNECT_TIMEOUT  # at once, not at the bound
    wire_alert(bot_api, title, "Failure: read_only", "Read-Only API", "ReadOnlyApi=no")
    assert gw.messages("placeOrder") == []
    assert "Traceback" not in run.stderr
    (line,) = run.human_stderr()  # says what to change, not "could not connect: could not..."
    assert line.startswith("submit_orders.py: error: the gateway's API is read-only (error 321)")
    gateway_closed_cleanly(gw)


def _outage_in_flight(gw: FakeGateway, job: Running) -> int:
    """Hold the 2nd order, then start an IB outage (1100) while it waits for its ack;
    return how many orders had reached the gateway when the job saw the 1100."""
    assert gw.wait_for(lambda: len(gw.events("sim.order_held")) == 1, timeout=15)
    gw.set_scenario("ib_offline:3600")
    job.wait_for_log(
        lambda r: r.get("event") == "gateway.connectivity" and r.get("code") == 1100, timeout=10
    )
    gw.release_orders()  # the held order now meets the outage: held again, unanswered
    return len(gw.messages("placeOrder"))


def stopped_by_the_outage(
    gw: FakeGateway, bot_api: BotApi, run: Run, sent_at_1100: int, title: str | None
) -> None:
    """The 1100 of :func:`_outage_in_flight` did not clear within IBKR_OUTAGE_WAIT: nothing
    reached the gateway after it, the alert names 1100 and the setting, and the run
    counted the 1st order submitted, the 2nd (in flight) unconfirmed, and the outage."""
    assert len(gw.messages("placeOrder")) == sent_at_1100 == 2
    wire_alert(bot_api, title, "IbOutageError", "error 1100", "IBKR_OUTAGE_WAIT")
    assert run.one("script.end")["outcomes"] == {
        "order.submitted": 1,
        "order.unconfirmed": 1,
        "gateway.connectivity": 1,
    }


def test_ib_outage_restored(
    fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path, running: Callable[..., Running]
) -> None:
    """1100 while the 2nd order waits: nothing more is sent until 1102; then the held
    order is acknowledged and the run carries on (exit 0); the journal has both changes."""
    gw = fake_gateway
    gw.hold_orders(after=1)
    env = job_env(
        tmp_path, bot_api.url, IBKR_ACK_TIMEOUT="20", IBKR_OUTAGE_WAIT="30", IBKR_ORDER_WINDOW="1"
    )
    job = running(submit_cmd(gw), env, tmp_path)
    sent_at_1100 = _outage_in_flight(gw, job)
    assert gw.wait_for(lambda: len(gw.events("sim.order_held")) == 2, timeout=5)
    assert len(gw.messages("placeOrder")) == sent_at_1100 == 2  # nothing sent during 1100
    gw.normal()  # 1102, and the held order is served
    restored_at = gw.events("sim.ib_restored")[0]["at"]
    run = job.wait()
    code, title = EXPECTED["ib_outage_restored"]
    assert run.code == code, run.stderr
    wire_alert(bot_api, title)
    later = [r for r in gw.messages("placeOrder")][2:]
    assert len(later) == 5 and all(r.at > restored_at for r in later)  # 3 rows, 1 bracket
    changes = [
        (r["event"], r.get("code"))
        for r in journal_records(tmp_path)
        if r["event"] == "gateway.connectivity"
    ]
    assert changes == [("gateway.connectivity", 1100), ("gateway.connectivity", 1102)]
    assert run.one("script.end")["outcomes"] == {"order.submitted": 5, "gateway.connectivity": 2}
    assert "error 1100" in run.stdout and "error 1102" in run.stdout  # the summary
    gateway_closed_cleanly(gw)


def test_ib_outage_never_clears(
    fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path, running: Callable[..., Running]
) -> None:
    """1100 that does not clear within IBKR_OUTAGE_WAIT: exit 1, the alert names 1100,
    the order in flight journaled unconfirmed, nothing sent after the 1100."""
    gw = fake_gateway
    gw.hold_orders(after=1)
    env = job_env(
        tmp_path, bot_api.url, IBKR_ACK_TIMEOUT="20", IBKR_OUTAGE_WAIT="1", IBKR_ORDER_WINDOW="1"
    )
    load = Load()
    job = running(submit_cmd(gw), env, tmp_path)
    sent_at_1100 = _outage_in_flight(gw, job)
    run = job.wait()
    code, title = EXPECTED["ib_outage_never_clears"]
    assert run.code == code, run.stderr
    # The outage wait (1 s) on the job's clock, then out (not the 20 s ack deadline).
    waited = run.at("ibkr.session.error") - run.at("gateway.outage.waiting")
    assert 1.0 <= waited < 1.0 + load.slack(SLACK), (waited, load)
    stopped_by_the_outage(gw, bot_api, run, sent_at_1100, title)
    assert any("error 1100" in line for line in run.human_stderr())
    gateway_closed_cleanly(gw)


ACK_TIMEOUT = 3.0  # job_env's IBKR_ACK_TIMEOUT
PROBE_TIMEOUT = 2.0  # the liveness probe's bound (reqCurrentTime), min(2 s, the ack deadline)
SILENCE_SLACK = 0.1  # idle; the intervals hold a timer wake-up (<= 60 ms at 10x slowdown)


def gave_up_on_the_silence(gw: FakeGateway, run: Run, load: Load) -> None:
    """The job gave up on a gateway gone silent after the ack deadline plus the probe, no
    more: the probe reached the gateway 3 s after the order it went silent on, and the job
    logged ``ibkr.session.error`` 2 s after that. Measured on the gateway's records and the
    job's own log line (the silence to the give-up), so the job's start-up, connect and
    alert, CPU work that a loaded machine stretches, are not inside the bound."""
    silent_at = gw.events("sim.silent")[0]["at"]
    [probe] = [r for r in gw.messages("reqCurrentTime") if r.at > silent_at]
    slack = load.slack(SILENCE_SLACK)
    early = load.slack(0.05)  # the order (the probe) reached the gateway after it was sent
    to_probe = probe.at - silent_at
    to_error = run.at("ibkr.session.error") - wall_clock(probe.at)
    assert ACK_TIMEOUT - early <= to_probe < ACK_TIMEOUT + slack, (to_probe, load)
    assert PROBE_TIMEOUT - early <= to_error < PROBE_TIMEOUT + slack, (to_error, load)
    # The session as a whole: the two waits, plus connect, one order and the alert.
    duration = run.one("ibkr.session.end")["duration_s"]
    waits = ACK_TIMEOUT + PROBE_TIMEOUT
    assert waits <= duration < waits + load.slack(2 * SLACK), (duration, load)


def test_silent_gateway(fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path) -> None:
    """The gateway goes silent on the 2nd order (socket open, no FIN): after the ack
    deadline the liveness probe gets no answer either; exit 1, alert, nothing more sent."""
    gw = fake_gateway
    gw.silent(after_orders=1)
    env = job_env(tmp_path, bot_api.url, IBKR_ORDER_WINDOW="1")  # windowed: ..._window.py
    load = Load()
    run = run_job(submit_cmd(gw), env, tmp_path)
    code, title = EXPECTED["silent_gateway"]
    assert run.code == code, run.stderr
    silent_at = gw.events("sim.silent")[0]["at"]
    assert len(gw.messages("placeOrder")) == 2  # nothing fed into the silent socket
    # after the 2nd order (on which it went silent) only the liveness probe
    assert [r.name for r in gw.messages() if r.at > silent_at] == ["reqCurrentTime"]
    gave_up_on_the_silence(gw, run, load)
    wire_alert(bot_api, title, "GatewayNotAnsweringError", "stopped answering")
    unconfirmed = [r for r in journal_records(tmp_path) if r["event"] == "order.unconfirmed"]
    assert len(unconfirmed) == 1 and "stopped answering" in unconfirmed[0]["message"]
    assert run.one("script.end")["outcomes"] == {"order.submitted": 1, "order.unconfirmed": 1}


def test_order_notices(fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path) -> None:
    """Every order gets 10349 first (ib_insync marks it Cancelled), then is accepted: all
    rows journaled submitted, exit 0, no alert, within the normal time; and nothing on
    stderr (what cron mails): the client library's ERROR line for each notice is
    re-levelled to INFO in the log (a good run mailed 12 errors before)."""
    gw = fake_gateway
    gw.order_notices(10349)
    run = run_job(submit_cmd(gw), job_env(tmp_path, bot_api.url), tmp_path)
    code, title = EXPECTED["order_notices"]
    assert run.code == code, run.stderr
    assert run.stderr == ""
    notices = [r for r in run.log if "10349" in str(r.get("event"))]
    assert notices and {r["level"] for r in notices} == {"info"}
    assert run.one("ibkr.session.end")["duration_s"] < 3  # no ack deadline (3 s) waited
    wire_alert(bot_api, title)
    assert run.one("script.end")["outcomes"] == {"order.submitted": 5}
    events = {r["event"] for r in journal_records(tmp_path)}
    assert events == {"run.start", "order.sending", "order.submitted"}
    assert len(gw.messages("placeOrder")) == 7
    gateway_closed_cleanly(gw)


def test_order_id_rule(fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path) -> None:
    """Another client's open order has id 100 while this client's id sequence starts at
    1: after reqAllOpenOrders every new id is above 100, so no 103."""
    gw = fake_gateway
    seed_other_clients_order(gw, 100)
    gw.state.next_order_id = 1
    run = run_job(submit_cmd(gw), job_env(tmp_path, bot_api.url), tmp_path)
    code, title = EXPECTED["order_id_rule"]
    assert run.code == code, run.stderr
    wire_alert(bot_api, title)
    ids = order_ids_sent(gw)
    assert len(ids) == 7 and min(ids) > 100, ids
    assert "error 103" not in run.log_text
    assert run.one("script.end")["outcomes"] == {"order.submitted": 5}
    gateway_closed_cleanly(gw)


# --------------------------------------------------------------------------- configuration
# A bad value for every variable the package reads (docs/configuration.md, plus the
# scripts' own in docs/scripts.md). IBKR_ALERT_STATE_FILE is the one exception: any path
# is valid and an unusable one fails open (test_alert_state_file_unusable).
BAD_VALUES: dict[str, str] = {
    "IBKR_HOST": "gw host",
    "IBKR_PORT": "seventy",
    "IBKR_CONNECT_TIMEOUT": "0",
    "IBKR_CONNECT_MAX_RETRIES": "2.5",
    "IBKR_CONNECT_RETRY_DELAY": "-1",
    "IBKR_CONNECT_MAX_TIME": "inf",
    "IBKR_ALLOW_LIVE": "maybe",
    "IFDS_TELEGRAM_BOT_TOKEN": "424242 FaultMatrixToken",
    "IFDS_TELEGRAM_CHAT_ID": "my chat",
    "IFDS_TELEGRAM_API_URL": "api.telegram.org",
    "IBKR_ALERT_TIMEOUT": "nan",
    "IBKR_ALERT_REPEAT_INTERVAL": "0",
    "IBKR_HEALTHCHECK_URL": "ftp://hc-ping.com/secret-uuid",
    "IBKR_LOG_FORMAT": "xml",
    "IBKR_LOG_FILE": "{tmp}/no/such/dir/job.jsonl",
    "IBKR_LOG_LEVEL": "LOUD",
    "IBKR_LOG_STDERR_LEVEL": "quiet",
    "IBKR_CLIENT_ID_GRACE": "-5",
    "IBKR_ACK_TIMEOUT": "-3",
    "IBKR_JOURNAL": "/dev/null/journal.jsonl",
    "IBKR_MAX_ORDER_QUANTITY": "0",
    "IBKR_MAX_ORDER_NOTIONAL": "-1",
    "IBKR_OUTAGE_WAIT": "-1",
    "IBKR_LOCK_WAIT": "soon",
    "IBKR_ORDER_WINDOW": "0",
    "IBKR_CLIENT_LIBRARY": "ib_nonesuch",
}
FAIL_OPEN = {"IBKR_ALERT_STATE_FILE", "IBKR_METRICS_DIR"}  # a warning, the run goes on
SECRET = {"IFDS_TELEGRAM_BOT_TOKEN", "IBKR_HEALTHCHECK_URL"}
# A bad value here makes the Telegram channel itself unusable.
NO_ALERT = {
    "IFDS_TELEGRAM_BOT_TOKEN",
    "IFDS_TELEGRAM_CHAT_ID",
    "IFDS_TELEGRAM_API_URL",
}


def documented_variables() -> set[str]:
    """Every variable named in the first column of a table in the two references."""
    names: set[str] = set()
    for doc in ("configuration.md", "scripts.md"):
        for line in (REPO / "docs" / doc).read_text().splitlines():
            names.update(re.findall(r"^\| `((?:IBKR|IFDS)_[A-Z_]+)`", line))
    names.update(re.findall(r"\$(IBKR_[A-Z_]+)", (REPO / "docs" / "scripts.md").read_text()))
    return names


def test_every_variable_has_a_bad_value_row() -> None:
    from ibkr_resilience._core.config import _BY_ENV

    documented = documented_variables()
    assert set(_BY_ENV) <= documented  # the package reads nothing undocumented
    assert set(BAD_VALUES) | FAIL_OPEN == documented


@pytest.mark.parametrize("var", sorted(BAD_VALUES))
def test_bad_environment_variable(
    var: str, fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path
) -> None:
    """Exit 2, one line on stderr naming the variable, no traceback, the gateway
    untouched, nothing journaled; one run-level alert naming the variable (a cron job that
    never ran its plan must be heard), unless the bad variable is the alert channel's own."""
    value = BAD_VALUES[var].format(tmp=tmp_path)
    env = job_env(tmp_path, bot_api.url, **{var: value})
    run = run_job(submit_cmd(fake_gateway), env, tmp_path)
    assert run.code == 2, run.stderr
    human = run.human_stderr()
    assert len(human) == 1, run.stderr
    assert human[0].startswith(f"submit_orders.py: error: {var}"), human
    assert "Traceback" not in run.stderr
    if var in SECRET:
        assert value not in run.stderr and "secret-uuid" not in run.stderr
    assert fake_gateway.events("sim.connection.open") == []
    if var in NO_ALERT:
        wire_alert(bot_api, None)
    else:
        wire_alert(bot_api, "IBKR JOB FAILED: submit_orders.py exit 2", f"Reason: {var}")
    assert not (tmp_path / "journal.jsonl").exists()
    if not var.startswith("IBKR_LOG_"):  # a bad log setting leaves nowhere to log to
        assert run.one("script.end")["exit_code"] == 2
    no_secret_leaked(run)


# --------------------------------------------------------------------------- the table
TABLE_ROW = re.compile(r"`(test_[a-z_0-9]+)(?:\[([A-Za-z_0-9]+)\])?`")


def defined_tests(path: str | Path) -> set[str]:
    """The names of the test functions a test file defines."""
    return set(re.findall(r"^def (test_\w+)", Path(path).read_text(), re.M))


def table_rows(
    tests: Collection[str], *, prefixes: tuple[str, ...] = ("test_",), every_row: bool = False
) -> dict[str, list[str]]:
    """The rows of the tables in docs/reliability.md that name one of ``tests``, each as
    its stripped cells, by row id: the parametrize id, else the test name without
    ``prefixes`` (removed in order). A row naming another test is passed over, or with
    ``every_row`` is a failure; two rows with one id are a failure."""
    rows: dict[str, list[str]] = {}
    for line in RELIABILITY_DOC.read_text().splitlines():
        found = TABLE_ROW.search(line)
        if not line.startswith("|") or not found:
            continue
        if found.group(1) not in tests:
            assert not every_row, f"no such test: {found.group(0)}"
            continue
        row = found.group(2) or found.group(1)
        for prefix in prefixes if not found.group(2) else ():
            row = row.removeprefix(prefix)
        assert row not in rows, f"two rows for {row}"
        rows[row] = [c.strip() for c in line.strip().strip("|").split("|")]
    return rows


def check_table(
    expected: Mapping[str, int | tuple[int, str | None]],
    tests: Collection[str],
    *,
    prefixes: tuple[str, ...] = ("test_",),
    every_row: bool = False,
) -> dict[str, list[str]]:
    """Each row id of ``expected`` has its row in docs/reliability.md (see
    :func:`table_rows`), stating the exit code in bold and, where ``expected`` gives an
    alert title (or None), exactly one alert cell: ``sent: `<title>` ...`` or ``not
    sent``. Returns the rows found, for the caller's own further checks."""
    rows = table_rows(tests, prefixes=prefixes, every_row=every_row)
    assert set(expected) <= set(rows), (
        f"no row in docs/reliability.md for {set(expected) - set(rows)}"
    )
    for row, want in expected.items():
        cells = rows[row]
        code = want[0] if isinstance(want, tuple) else want
        assert f"**{code}**" in cells, (row, cells)
        if isinstance(want, tuple):
            alert = [c for c in cells if c.startswith(("sent", "not sent"))]
            title = want[1]
            expected_alert = "not sent" if title is None else f"sent: `{title}`"
            assert len(alert) == 1 and alert[0].startswith(expected_alert), (row, cells)
    return rows


def test_the_reliability_table_states_what_the_tests_assert() -> None:
    """Each row of the tables in docs/reliability.md names its test and states the exit
    code (and alert) that test asserts: ``EXPECTED`` for the faults, exit 2 and the bad
    value for the variables; and no row of the matrix is missing from the tables. Rows of
    the sibling files (``test_fault_matrix_*.py``) are checked there against their own
    ``EXPECTED`` (by :func:`check_table`); here only their test names must exist."""
    siblings = [REPO / "tests" / "test_soak.py", *(REPO / "tests").glob("test_fault_matrix_*.py")]
    tests = set(globals()) | {name for path in siblings for name in defined_tests(path)}
    rows = check_table(EXPECTED, tests, every_row=True)
    assert set(BAD_VALUES) <= set(rows), set(BAD_VALUES) - set(rows)
    for var, value in BAD_VALUES.items():
        cells = rows[var]
        assert "**2**" in cells and f"`{value}`" in cells, (var, cells)

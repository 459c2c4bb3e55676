"""Fault-matrix rows for hostile input, endpoints and state files (issue 11, items 6-8).

Same rules as ``tests/test_fault_matrix.py`` (whose helpers these rows use): the job runs
as cron runs it, a subprocess of ``submit_orders.py`` with the real client against the
simulated gateway, a loopback Bot API and, where a row says so, a loopback healthchecks.io
(``test_fault_matrix_loud.Healthchecks``). Every hostile peer is an ``HttpServer`` given
to the row as a fixture, so the token audit (``token_audit.py``) sees what it received.

* **Plan input** (item 6): numbers that overflow or underflow a float, a cell over the
  csv module's field limit, a row over ``IBKR_MAX_ORDER_QUANTITY`` or
  ``IBKR_MAX_ORDER_NOTIONAL``. The plan is checked before the journal is opened and
  before any connection: exit 2, one error line naming the row, no journal, no
  connection, and the run-level alert and ``/2`` ping of every failing run.
* **Hostile endpoints** (item 7): the gateway is down, so the session alerts; the Bot
  API streams gigabytes (fast, or an endless trickle), answers ``200`` with HTML, or
  redirects to another server. The alert is never counted as sent (the next run alerts
  again), the exit code stays 1, the job's peak memory stays within a few MiB of a run
  against a well-behaved Bot API, and the alert path costs at most ``IBKR_ALERT_TIMEOUT``.
  The same for a healthcheck URL that streams or redirects (on a good run).
* **State files** (item 8): the alert state file is a FIFO or a 2 GB sparse file (fail
  open, bounded); no ``HOME`` (and, when the tests run as root, no passwd entry either):
  the documented state directory is used, no traceback.

Peak memory is the child's own ``ru_maxrss``, read by a small wrapper process whose only
child is the job (``RUSAGE_CHILDREN`` of this test process would mix in every earlier row).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import test_fault_matrix_loud
from loadslack import Load
from test_fault_matrix import (
    ALERT_TIMEOUT,
    DELIVERY_ALERT_TIMEOUT,
    PLAN,
    REPO,
    SLACK,
    SUBMIT,
    Run,
    check_table,
    defined_tests,
    job_env,
    run_job,
    submit_cmd,
    wire_alert,
)
from test_fault_matrix_loud import Healthchecks, assert_pinged
from token_audit import TOKEN

from ibkr_resilience.simulator import FakeGateway
from ibkr_resilience.testing import BotApi, HttpServer, Request, closed_port_url, parse_json_lines

healthchecks = test_fault_matrix_loud.healthchecks  # the fixture, shared

RUN_FAILED = "IBKR JOB FAILED"
CONNECTION_FAILED = "IBKR CONNECTION FAILED"

# Row id -> (exit code, alert title or None when no alert is delivered).
# docs/reliability.md ("Hostile input, endpoints and state files") states exactly these.
EXPECTED: dict[str, tuple[int, str | None]] = {
    "quantity_overflow": (2, RUN_FAILED),
    "quantity_underflow": (2, RUN_FAILED),
    "price_overflow": (2, RUN_FAILED),
    "price_underflow": (2, RUN_FAILED),
    "huge_cell": (2, RUN_FAILED),
    "over_max_quantity": (2, RUN_FAILED),
    "over_max_notional": (2, RUN_FAILED),
    "bot_streams_fast": (1, None),
    "bot_streams_slowly": (1, None),
    "bot_not_json": (1, None),
    "bot_redirect": (1, None),
    "healthcheck_streams": (0, None),
    "healthcheck_redirect": (0, None),
    "state_fifo": (1, CONNECTION_FAILED),
    "state_sparse_2gb": (1, CONNECTION_FAILED),
    "no_home": (0, None),
    "empty_home": (0, None),
    "no_home_no_passwd": (0, None),
}

MIB = 1024 * 1024
MEMORY_SLACK_KIB = 16 * 1024
"""How much more a hostile row's job may peak at than the same run against a polite Bot
API: far below what reading even one streamed body to the end would take."""
FIREHOSE_BYTES = 4 * 2**30


# --------------------------------------------------------------------------- helpers
MEASURE = """\
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as out:
    out.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code if code >= 0 else 128 - code)
"""


def measured(cmd: list[str], peak_file: Path) -> list[str]:
    """``cmd`` run by a wrapper that writes the job's peak RSS (KiB) to ``peak_file``."""
    return [sys.executable, "-c", MEASURE, str(peak_file), *cmd]


def peak_kib(peak_file: Path) -> int:
    return int(peak_file.read_text())


_BASELINE: dict[str, int] = {}


def baseline_peak_kib(tmp_path: Path) -> int:
    """Peak RSS of the connect-failure run against a polite Bot API (once per session)."""
    if "kib" not in _BASELINE:
        where = tmp_path / "baseline"
        where.mkdir()
        with BotApi() as bot:
            cmd = measured(submit_cmd_to(closed_port()), where / "peak")
            run = run_job(cmd, job_env(where, bot.url), where)
            assert run.code == 1 and len(bot.requests) == 1, run.stderr
        _BASELINE["kib"] = peak_kib(where / "peak")
    return _BASELINE["kib"]


def closed_port() -> int:
    return int(closed_port_url().rsplit(":", 1)[1])


def submit_cmd_to(port: int, plan: Path = PLAN) -> list[str]:
    return [sys.executable, str(SUBMIT), "--plan", str(plan), "--port", str(port)]


def added_by_alert(run: Run) -> float:
    """Seconds between giving up and the end of the session: what the alert path cost."""
    return run.at("ibkr.session.end") - run.at("ibkr.connect.gave_up")


def no_traceback(run: Run) -> None:
    assert "Traceback" not in run.stderr, run.stderr
    assert TOKEN not in run.stderr + run.stdout + run.log_text


# --------------------------------------------------------------------------- hostile peers
def record(owner: HttpServer, handler: BaseHTTPRequestHandler) -> None:
    """Read the request and record it as ``HttpServer`` does (the token audit reads it)."""
    length = int(handler.headers.get("Content-Length") or 0)
    owner._respond(
        Request(
            method=handler.command,
            path=handler.path,
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=handler.rfile.read(length) if length else b"",
            at=time.monotonic(),
        )
    )


class Firehose(HttpServer):
    """Answers every request ``200`` and streams until the client hangs up.

    ``slow=False``: a 4 GiB ``Content-Length`` and 64 KiB chunks as fast as the socket
    takes them. ``slow=True``: no length and 1 KiB every 20 ms, without end (a body that
    starts like the Bot API's ``{"ok": true`` and never closes). ``sent`` counts the
    body bytes written; ``hung_up`` is set once no answer is being streamed.
    """

    def __init__(self, *, slow: bool, path: str = "") -> None:
        super().__init__(path=path)
        self.slow = slow
        self.sent = 0
        self.hung_up = threading.Event()
        self._streaming = 0
        self._count = threading.Lock()

    def _started(self) -> None:
        with self._count:  # before the request is recorded: a recorded one is counted
            self._streaming += 1
            self.hung_up.clear()

    def _ended(self) -> None:
        with self._count:
            self._streaming -= 1
            if self._streaming == 0:
                self.hung_up.set()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self
        base: Any = super()._handler()

        class Handler(base):  # type: ignore[misc]
            def _answer(self) -> None:
                owner._started()
                try:
                    record(owner, self)
                    self._stream()
                except OSError:
                    pass  # the client hung up: what the row wants
                finally:
                    owner._ended()

            def _stream(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if not owner.slow:
                    self.send_header("Content-Length", str(FIREHOSE_BYTES))
                self.end_headers()
                chunk = b" " * 1024 if owner.slow else b"\0" * 65536
                if owner.slow:
                    self.wfile.write(b'{"ok": true, "result": "')
                pace = threading.Event()  # never set: the trickle's pace, not a wait for anything
                while owner.sent < FIREHOSE_BYTES:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    with owner._count:
                        owner.sent += len(chunk)
                    if owner.slow:
                        pace.wait(0.02)

            do_GET = do_POST = _answer

        return Handler


class Redirect(HttpServer):
    """Answers every request ``302 Found`` to the same path on ``target``'s server."""

    def __init__(self, target: HttpServer) -> None:
        self.target = target
        super().__init__()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self
        base: Any = super()._handler()

        class Handler(base):  # type: ignore[misc]
            def _answer(self) -> None:
                record(owner, self)
                self.send_response(302)
                self.send_header("Location", f"http://127.0.0.1:{owner.target.port}{self.path}")
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = _answer

        return Handler


@pytest.fixture
def fast_firehose() -> Iterator[Firehose]:
    with Firehose(slow=False) as server:
        yield server


@pytest.fixture
def slow_firehose() -> Iterator[Firehose]:
    with Firehose(slow=True) as server:
        yield server


@pytest.fixture
def elsewhere() -> Iterator[BotApi]:
    """Where a redirect points: it must receive nothing."""
    with BotApi() as server:
        yield server


@pytest.fixture
def redirect(elsewhere: BotApi) -> Iterator[Redirect]:
    with Redirect(elsewhere) as server:
        yield server


# --------------------------------------------------------------------------- plan input (6)
HEADER, *EXAMPLE_ROWS = PLAN.read_text().splitlines()
COLUMNS = HEADER.split(",")
HUGE = "A" * 140_000  # over csv.field_size_limit() (131072), the module's default


def plan_with(row_id: str, column: str, value: str) -> str:
    """The example plan with one cell of one row replaced."""
    lines = [HEADER]
    for row in EXAMPLE_ROWS:
        cells = row.split(",")
        if cells[0] == row_id:
            cells[COLUMNS.index(column)] = value
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


# row -> (row id, column, new value or None to keep the plan, extra env, line, problem)
PLAN_FAULTS: dict[str, tuple[str, str, str | None, dict[str, str], int, str]] = {
    "quantity_overflow": (
        "aapl-mkt",
        "quantity",
        "1e400",
        {},
        2,
        "quantity '1e400' is out of range",
    ),
    "quantity_underflow": (
        "aapl-mkt",
        "quantity",
        "1e-400",
        {},
        2,
        "quantity '1e-400' is out of range",
    ),
    "price_overflow": (
        "msft-lmt",
        "limit_price",
        "1e400",
        {},
        3,
        "limit_price '1e400' is out of range",
    ),
    "price_underflow": (
        "msft-lmt",
        "limit_price",
        "1e-400",
        {},
        3,
        "limit_price '1e-400' is out of range",
    ),
    "huge_cell": ("ibm-lmt", "symbol", HUGE, {}, 4, ""),
    "over_max_quantity": (
        "ibm-lmt",
        "quantity",
        None,
        {"IBKR_MAX_ORDER_QUANTITY": "12"},
        4,
        "quantity 15 is over the per-order limit of 12 shares (IBKR_MAX_ORDER_QUANTITY)",
    ),
    "over_max_notional": (
        "ibm-lmt",
        "limit_price",
        None,
        {"IBKR_MAX_ORDER_NOTIONAL": "3000"},
        4,
        "notional 15 x 212 = 3,180 is over the per-order limit of 3,000 (IBKR_MAX_ORDER_NOTIONAL)",
    ),
}


@pytest.mark.parametrize("row", list(PLAN_FAULTS))
def test_hostile_plan(
    row: str,
    fake_gateway: FakeGateway,
    bot_api: BotApi,
    healthchecks: Healthchecks,
    tmp_path: Path,
) -> None:
    """Exit 2 with one error line naming the row (and, for a rule, one indented line
    with the problem), no traceback; the plan is read before the journal and the
    connection, so neither exists; the run-level alert and the ``/2`` ping go out."""
    row_id, column, value, extra, line, problem = PLAN_FAULTS[row]
    plan = tmp_path / "plans" / "2026-11-30.csv"
    plan.parent.mkdir()
    plan.write_text(plan_with(row_id, column, value) if value is not None else PLAN.read_text())
    env = job_env(tmp_path, bot_api.url, IBKR_HEALTHCHECK_URL=healthchecks.url, **extra)
    run = run_job(submit_cmd_to(fake_gateway.port, plan), env, tmp_path)
    code, title = EXPECTED[row]
    assert run.code == code, run.stderr
    no_traceback(run)
    first, *details = run.human_stderr()
    assert first.startswith(f"submit_orders.py: error: invalid order plan {plan}: "), first
    assert HUGE[:100] not in run.stderr and len(run.stderr) < 2000
    if problem:
        assert first.endswith(f"1 problem on 1 line ({line})"), first
        assert details == [f"  line {line}: {problem}"], details
    else:
        expected = f"line {line} is not readable as CSV: field larger than field limit (131072)"
        assert first.endswith(expected) and details == [], run.stderr
    assert fake_gateway.events("sim.connection.open") == []
    assert not (tmp_path / "journal.jsonl").exists()
    assert run.events("submit.start") == [] and run.events("ibkr.connect.attempt") == []
    end = run.one("script.end")
    assert end["level"] == "error" and end["exit_code"] == 2
    wire_alert(
        bot_api, f"{title}: submit_orders.py exit 2", "Reason: invalid order plan", f"{line}"
    )
    if problem:
        assert problem in bot_api.texts[0]
    assert_pinged(healthchecks, "/2", "error: invalid order plan", f"line {line}")


# --------------------------------------------------------------------------- endpoints (7)
def bot_row_runs(
    gw: FakeGateway, url: str, tmp_path: Path, *, peak: bool = False, deadline: bool = False
) -> tuple[Run, Run, int | None]:
    """Two failing cron runs, one de-dup state file, the Bot API at ``url``: both must
    try to alert (an alert not delivered is never recorded as sent). ``deadline``: the row
    is about the alert's deadline, run with the 1 s ``ALERT_TIMEOUT`` (else the rows'
    long default: an answer that fails at once must not be cut by a loaded machine)."""
    gw.down()
    extra = {"IBKR_ALERT_TIMEOUT": str(ALERT_TIMEOUT)} if deadline else {}
    env = job_env(tmp_path, url, **extra)
    timeout = float(env["IBKR_ALERT_TIMEOUT"])
    cmd = submit_cmd(gw)
    load = Load()
    first = run_job(measured(cmd, tmp_path / "peak") if peak else cmd, env, tmp_path)
    second = run_job(cmd, {**env, "IBKR_LOG_FILE": str(tmp_path / "job2.jsonl")}, tmp_path)
    for run in (first, second):
        assert run.code == 1, run.stderr
        no_traceback(run)
        assert run.events("ibkr.alert.sent") == [], run.names
        firing = run.events("ibkr.alert.firing")
        assert [f["kind"] for f in firing] == ["first"], firing  # not "suppressed"
        assert run.one("ibkr.session.end")["outcome"] == "connect_failed"
        assert added_by_alert(run) < timeout + load.slack(SLACK), load
        assert len(run.human_stderr()) == 1  # the connect failure, nothing about the alert
    assert second.events("ibkr.alert.suppressed") == []
    state = json.loads((tmp_path / "alert_state.json").read_text())
    [entry] = state["entries"].values()
    assert (entry["failures"], entry["alerts_sent"]) == (2, 0), entry
    return first, second, peak_kib(tmp_path / "peak") if peak else None


def alert_outcome(run: Run, timeout: float = ALERT_TIMEOUT) -> dict[str, Any]:
    """The one way the alert ended: ``ibkr.alert.failed`` or ``ibkr.alert.timed_out``,
    within ``timeout`` (the row's IBKR_ALERT_TIMEOUT, s) and 0.2 s of an idle machine."""
    load = Load()
    [outcome] = run.events("ibkr.alert.failed") + run.events("ibkr.alert.timed_out")
    assert outcome["elapsed_ms"] < (timeout + load.slack(0.2)) * 1000, (outcome, load)
    return outcome


@pytest.mark.parametrize("row", ["bot_streams_fast", "bot_streams_slowly"])
def test_bot_api_streams_gigabytes(
    row: str,
    fake_gateway: FakeGateway,
    fast_firehose: Firehose,
    slow_firehose: Firehose,
    tmp_path: Path,
) -> None:
    """A Bot API that answers 200 and streams a body without end: not sent, both runs
    alert (not de-duplicated), the job's peak memory within 16 MiB of a run against a
    polite Bot API, the alert path within ``IBKR_ALERT_TIMEOUT``, exit code unchanged."""
    hose = fast_firehose if row == "bot_streams_fast" else slow_firehose
    first, second, peak = bot_row_runs(fake_gateway, hose.url, tmp_path, peak=True, deadline=True)
    assert peak is not None and peak < baseline_peak_kib(tmp_path) + MEMORY_SLACK_KIB, (
        peak,
        _BASELINE,
    )
    assert len(hose.requests) == 2 and all(
        r.path == f"/bot{TOKEN}/sendMessage" for r in hose.requests
    )
    assert hose.hung_up.wait(10), "the job never hung up"
    assert hose.sent < 64 * MIB, hose.sent  # read a little, then hung up: never gigabytes
    for run in (first, second):
        outcome = alert_outcome(run)
        if outcome["event"] == "ibkr.alert.failed":  # read up to the cap: not ok-true JSON
            assert run.one("ibkr.alert.telegram.failed")["status"] == 200
    if row == "bot_streams_fast":  # 64 KiB arrive at once: refused, never timed out
        assert all(r.events("ibkr.alert.telegram.failed") for r in (first, second))


def test_bot_not_json(fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path) -> None:
    """``200 OK`` with an HTML page (a captive portal, a proxy): not delivered."""
    bot_api.answer((200, b"<html><body>Welcome to the hotel Wi-Fi</body></html>"))
    first, second, _ = bot_row_runs(fake_gateway, bot_api.url, tmp_path)
    assert len(bot_api.requests) == 2
    for run in (first, second):
        assert alert_outcome(run, DELIVERY_ALERT_TIMEOUT)["error"] == "alert reported failure"
        failed = run.one("ibkr.alert.telegram.failed")
        assert failed["status"] == 200 and failed["description"] == "OK", failed


def test_bot_redirect(
    fake_gateway: FakeGateway, redirect: Redirect, elsewhere: BotApi, tmp_path: Path
) -> None:
    """``302`` to another server: not followed (the token would go with it), not sent."""
    first, second, _ = bot_row_runs(fake_gateway, redirect.url, tmp_path)
    assert len(redirect.requests) == 2
    assert elsewhere.requests == []
    for run in (first, second):
        assert alert_outcome(run, DELIVERY_ALERT_TIMEOUT)["error"] == "alert reported failure"
        assert run.one("ibkr.alert.telegram.failed")["status"] == 302


@pytest.mark.parametrize("row", ["healthcheck_streams", "healthcheck_redirect"])
def test_hostile_healthcheck(
    row: str,
    fake_gateway: FakeGateway,
    bot_api: BotApi,
    fast_firehose: Firehose,
    redirect: Redirect,
    elsewhere: BotApi,
    tmp_path: Path,
) -> None:
    """A good run whose healthcheck URL streams gigabytes or redirects: exit 0, no
    alert, each ping bounded by ``IBKR_ALERT_TIMEOUT``; a streamed answer is read only a
    little (its 200 counts: healthchecks.io needs no body), a redirect is not followed."""
    server: HttpServer = fast_firehose if row == "healthcheck_streams" else redirect
    url = f"{server.url}/0b8e4c1d-7a2f-4e93-b6d5-3c9f1a2e8d47"
    env = job_env(tmp_path, bot_api.url, IBKR_HEALTHCHECK_URL=url)
    run = run_job(measured(submit_cmd(fake_gateway), tmp_path / "peak"), env, tmp_path)
    code, title = EXPECTED[row]
    assert run.code == code, run.stderr
    no_traceback(run)
    wire_alert(bot_api, title)
    assert run.one("script.end")["exit_code"] == 0
    assert len(server.requests) == 2  # /start and the success ping
    pings = run.events("ibkr.healthcheck.sent") + run.events("ibkr.healthcheck.failed")
    assert sorted(p["ping"] for p in pings) == ["start", "success"], pings
    # A stream read a little, a redirect not followed: each ping ends at once, far inside
    # its bound (IBKR_ALERT_TIMEOUT, 10 s here), not cut by it.
    assert all(p["elapsed_ms"] < DELIVERY_ALERT_TIMEOUT * 1000 / 4 for p in pings), pings
    assert peak_kib(tmp_path / "peak") < baseline_peak_kib(tmp_path) + MEMORY_SLACK_KIB
    if row == "healthcheck_streams":
        assert fast_firehose.hung_up.wait(10), "the job never hung up"
        assert fast_firehose.sent < 64 * MIB, fast_firehose.sent
        assert [p["status"] for p in pings] == [200, 200], pings
    else:
        assert elsewhere.requests == []
        assert [p["status"] for p in run.events("ibkr.healthcheck.failed")] == [302, 302]


# --------------------------------------------------------------------------- state files (8)
@pytest.mark.parametrize("row", ["state_fifo", "state_sparse_2gb"])
def test_hostile_alert_state_file(
    row: str, fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path
) -> None:
    """``IBKR_ALERT_STATE_FILE`` is a FIFO (no writer: an open for reading would block)
    or a 2 GB sparse file: the alert is sent (fail open) without blocking or reading it,
    a warning says the state was unusable and is replaced; peak memory as a normal run."""
    fake_gateway.down()
    state = tmp_path / "alert_state.json"
    if row == "state_fifo":
        os.mkfifo(state)
    else:
        state.touch()
        os.truncate(state, 2 * 2**30)
    env = job_env(tmp_path, bot_api.url)
    load = Load()
    run = run_job(measured(submit_cmd(fake_gateway), tmp_path / "peak"), env, tmp_path)
    code, title = EXPECTED[row]
    assert run.code == code, run.stderr
    no_traceback(run)
    wire_alert(bot_api, title, "Failure: refused")
    corrupt = run.one("ibkr.alert.state_corrupt")
    assert corrupt["level"] == "warning" and corrupt["path"] == str(state)
    reason = "is not a regular file" if row == "state_fifo" else "bytes (cap 1048576)"
    assert reason in corrupt["reason"], corrupt
    # Not blocked on the FIFO, not reading 2 GB: the alert path of any run, not its deadline.
    assert added_by_alert(run) < load.slack(SLACK), load
    assert peak_kib(tmp_path / "peak") < baseline_peak_kib(tmp_path) + MEMORY_SLACK_KIB
    # Replaced by a regular, small state file that recorded the alert as sent.
    assert state.is_file() and state.stat().st_size < 4096
    [entry] = json.loads(state.read_text())["entries"].values()
    assert entry["alerts_sent"] == 1, entry


def unused_uid() -> int:
    uid = 54321
    while True:
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
        uid += 1


AS_UID = """\
import os, sys
uid = int(sys.argv[1])
os.setgroups([]); os.setgid(uid); os.setuid(uid)
os.execv(sys.argv[2], sys.argv[2:])
"""


def interpreter_for(uid: int, env: dict[str, str], cwd: Path) -> str | None:
    """A Python this uid can run with this package's dependencies: the tests' own, else
    the system's of the same version (the tests' may live under an unreadable /root)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, f"/usr/bin/python{version}"):
        probe = [sys.executable, "-c", AS_UID, str(uid), candidate, "-c", "import ib_insync"]
        result = run_job(probe, env, cwd, timeout=60)
        if result.code == 0:
            return candidate
    return None


def state_env(tmp_path: Path, bot_url: str, *, home: str | None) -> dict[str, str]:
    """The row's environment with no ``HOME`` (or ``home``), no ``XDG_*``."""
    env = job_env(tmp_path, bot_url)
    for var in ("HOME", "XDG_STATE_HOME"):
        env.pop(var)
    if home is not None:
        env["HOME"] = home
    return env


@pytest.mark.parametrize(
    ("row", "home"),
    [pytest.param("no_home", None, id="no_home"), pytest.param("empty_home", "", id="empty_home")],
)
def test_no_home(
    row: str, home: str | None, fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path
) -> None:
    """No ``HOME`` (or an empty one) and no ``XDG_*``, as some cron daemons and service
    managers start jobs: the state directory is the passwd entry's home (never ``/``),
    no warning, no traceback, a normal run. The journal and alert state are pointed at
    the row's directory; only the run lock (a per-port file) lands in the real state
    directory, and is removed afterwards."""
    real = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".local" / "state" / "ibkr_resilience"
    lock = real / f"lock-127.0.0.1-{fake_gateway.port}"
    existed = [p for p in (real.parent.parent, real.parent, real) if p.exists()]
    assert not lock.exists()
    try:
        env = state_env(tmp_path, bot_api.url, home=home)
        run = run_job(submit_cmd(fake_gateway), env, tmp_path)
        lock_was_there = lock.is_file()
    finally:
        lock.unlink(missing_ok=True)
        for created in (real, real.parent, real.parent.parent):
            if created not in existed:
                with contextlib.suppress(OSError):  # gone, or another run's lock is in it
                    created.rmdir()
    code, title = EXPECTED[row]
    assert run.code == code, run.stderr
    no_traceback(run)
    assert lock_was_there, f"the run lock was not in {real}"
    assert run.events("ibkr.state_dir.fallback") == []
    wire_alert(bot_api, title)
    assert run.one("script.end")["outcomes"] == {"order.submitted": 5}


@pytest.mark.skipif(
    os.geteuid() != 0,
    reason="running as a uid with no passwd entry needs root (setuid); "
    "test_no_home covers a missing HOME alone",
)
def test_no_home_no_passwd(fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path) -> None:
    """The job runs as a uid with no passwd entry (set by a wrapper that drops to it and
    execs the interpreter), with no ``HOME``, no ``XDG_*`` and no ``IBKR_JOURNAL`` /
    ``IBKR_ALERT_STATE_FILE``: every state file (journal, run lock, alert state) goes to
    the documented fallback ``<temp dir>/ibkr_resilience-<uid>/state``, with a warning
    naming it; no traceback, a normal run (exit 0, every order placed)."""
    uid = unused_uid()
    # This uid cannot enter the row's tmp_path (under a 0700 directory): a world-writable
    # directory of its own, copied into tmp_path afterwards for the token audit.
    shared = Path(tempfile.mkdtemp(prefix="ibkr-no-passwd-"))
    try:
        shared.chmod(0o777)
        env = state_env(shared, bot_api.url, home=None)
        for var in ("IBKR_JOURNAL", "IBKR_ALERT_STATE_FILE"):
            env.pop(var)
        site = sysconfig.get_paths()["purelib"]
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), site])
        env["TMPDIR"] = str(shared)
        python = interpreter_for(uid, env, shared)
        if python is None:
            pytest.skip(f"no Python interpreter that uid {uid} can run")
        cmd = [sys.executable, "-c", AS_UID, str(uid), python, *submit_cmd(fake_gateway)[1:]]
        run = run_job(cmd, env, shared)
        shutil.copytree(shared, tmp_path / "as_uid", symlinks=True)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    code, title = EXPECTED["no_home_no_passwd"]
    assert run.code == code, run.stderr
    no_traceback(run)
    fallback = shared / f"ibkr_resilience-{uid}" / "state"
    warnings = run.events("ibkr.state_dir.fallback")
    assert warnings and {w["path"] for w in warnings} == {str(fallback)}, warnings
    assert all(w["level"] == "warning" for w in warnings)
    assert run.one("submit.start")["journal"] == str(fallback / "journal.jsonl")
    kept = tmp_path / "as_uid" / f"ibkr_resilience-{uid}" / "state"
    assert (kept / "journal.jsonl").is_file()
    assert (kept / f"lock-127.0.0.1-{fake_gateway.port}").is_file()
    events = [r["event"] for r in parse_json_lines((kept / "journal.jsonl").read_text())]
    assert events.count("order.submitted") == 5, events
    wire_alert(bot_api, title)
    assert run.one("script.end")["outcomes"] == {"order.submitted": 5}
    assert len(fake_gateway.messages("placeOrder")) == 7


# --------------------------------------------------------------------------- the table
def test_the_reliability_table_states_the_hostile_rows() -> None:
    """docs/reliability.md has a row per entry of ``EXPECTED`` naming its test here, with
    the exit code and the alert the test asserts."""
    check_table(EXPECTED, defined_tests(__file__))

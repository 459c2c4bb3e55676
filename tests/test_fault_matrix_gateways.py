"""The fault matrix, part two: what real gateways do, at connect and under ``close_positions``.

Same rules as ``tests/test_fault_matrix.py`` (its helpers are used here): each row runs a
script the way cron does (a subprocess, the real client library over TCP against the
simulated gateway, the loopback Bot API) and asserts its exit code, the number of connect
attempts, the session's own elapsed time (``duration_s`` of its ``ibkr.session.end``
line, or the fields of its connect lines: never the subprocess's wall time) against the
row's bound, what reached the gateway, and the alert text. Incidents the job must ride
out start before the job and end on the job's own log line (never on a timer that
would race its interpreter's start-up). ``EXPECTED`` is checked against the tables of
``docs/reliability.md`` like the first part's.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import test_fault_matrix
from loadslack import Load
from test_fault_matrix import (
    LONG_ACK_TIMEOUT,
    MAX_TIME,
    REPO,
    SLACK,
    Run,
    Running,
    _outage_in_flight,
    check_table,
    defined_tests,
    gateway_closed_cleanly,
    gave_up_on_the_silence,
    job_env,
    journal_records,
    no_secret_leaked,
    run_job,
    stopped_by_the_outage,
    submit_cmd,
    wire_alert,
)

from ibkr_resilience.simulator import FakeGateway, SimPosition
from ibkr_resilience.testing import BotApi

running = test_fault_matrix.running  # the fixture: jobs started in the background

CLOSE = REPO / "scripts" / "paper_trading" / "close_positions.py"
ACCOUNT = "DU1234567"
CLOSE_CLIENT_ID = 11

# Row id -> (exit code, alert title or None): what docs/reliability.md must state.
EXPECTED: dict[str, tuple[int, str | None]] = {
    "relay_restart": (0, None),
    "relay_closed_for_good": (1, "IBKR CONNECTION FAILED"),
    "client_id_transient": (0, None),
    "client_id_held": (1, "IBKR CONNECTION FAILED"),
    "no_completed_orders": (0, None),
    "ib_offline_at_connect": (1, "IBKR CONNECTION FAILED"),
    "ib_offline_at_connect_restored": (0, None),
    "timeout_hint": (1, "IBKR CONNECTION FAILED"),
    "close_read_only": (5, "IBKR SESSION FAILED"),
    "close_outage_restored": (0, None),
    "close_outage_never_clears": (1, "IBKR SESSION FAILED"),
    "close_silent": (1, "IBKR SESSION FAILED"),
}

ONE_INTERVAL = 1.0
"""The relay/326 target: connected within 1 s of the gateway serving again."""


def code_and_title(row: str) -> tuple[int, str | None]:
    return EXPECTED[row]


def duration(run: Run) -> float:
    """The session's own duration (its ``ibkr.session.end`` line), seconds."""
    return float(run.one("ibkr.session.end")["duration_s"])


def when(gw: FakeGateway, name: str, **match: Any) -> float:
    """The gateway's clock at its last ``name`` event matching ``match``."""
    found = [e for e in gw.events(name) if all(e.get(k) == v for k, v in match.items())]
    assert found, (name, match, [e["event"] for e in gw.events()][-20:])
    return float(found[-1]["at"])


def gave_up_alone(run: Run, failure_class: str, reason: str) -> dict[str, Any]:
    """The give-up line, with every attempt accounted for and nothing placed."""
    gave_up = run.one("ibkr.connect.gave_up")
    assert (gave_up["failure_class"], gave_up["reason"]) == (failure_class, reason), gave_up
    failed = run.events("ibkr.connect.failed")
    assert gave_up["attempts"] == len(failed) == len(run.events("ibkr.connect.attempt"))
    assert run.one("ibkr.session.end")["outcome"] == "connect_failed"
    assert run.one("ibkr.alert.firing")["failure_class"] == failure_class
    return gave_up


def connected_after_failures(run: Run, failure_class: str) -> list[dict[str, Any]]:
    """Every failed attempt was of ``failure_class`` at the short interval, then success."""
    failed = run.events("ibkr.connect.failed")
    assert failed and {f["failure_class"] for f in failed} == {failure_class}, failed
    assert all(f["next_delay_s"] == 0.5 for f in failed), failed
    assert run.one("ibkr.connect.success")["attempt"] == len(failed) + 1
    assert run.one("ibkr.session.end")["outcome"] == "ok"
    return failed


def ridden_out(
    gw: FakeGateway, bot_api: BotApi, job: Running, row: str, failure_class: str
) -> list[dict[str, Any]]:
    """The gateway's fault clears on the job's 3rd failed attempt: the job connects within
    one interval (1 s) of the gateway serving again, inside its 60 s budget, places the
    plan and exits as ``row`` states, with its alert. Returns its failed attempts (all
    ``failure_class``, at the short interval: :func:`connected_after_failures`)."""
    job.wait_for_log(lambda r: r.get("event") == "ibkr.connect.failed", count=3)
    gw.normal()
    back = when(gw, "sim.scenario", scenario="normal")
    run = job.wait()
    code, title = code_and_title(row)
    assert run.code == code, run.stderr
    assert "result: 5 submitted; exit 0" in run.stdout
    wire_alert(bot_api, title)
    failed = connected_after_failures(run, failure_class)
    served = min(e["at"] for e in gw.events("sim.api_started") if e["at"] >= back)
    assert 0 <= served - back < ONE_INTERVAL  # the target
    assert duration(run) < 60  # inside the budget
    return failed


# --------------------------------------------------------------------------- connect
def test_relay_restart(
    fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path, running: Callable[..., Running]
) -> None:
    """socat in front of a restarting gateway accepts and closes every connection: the
    job retries at the refused interval and connects within 1 s of the gateway behind
    coming back (the relay ends on the job's 3rd failed attempt)."""
    gw = fake_gateway
    gw.relay_restart(3600)
    env = job_env(tmp_path, bot_api.url, IBKR_CONNECT_MAX_TIME="60")
    job = running(submit_cmd(gw), env, tmp_path)
    failed = ridden_out(gw, bot_api, job, "relay_restart", "closed")
    assert len(failed) >= 3
    assert len(gw.messages("placeOrder")) == 7
    gateway_closed_cleanly(gw)


def test_relay_closed_for_good(fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path) -> None:
    """The relay never comes back: retried at the short interval for the whole 2 s
    budget, given up at it, ONE alert that names both causes (relay/restart, API settings)."""
    gw = fake_gateway
    gw.relay_restart(3600)
    load = Load()
    run = run_job(submit_cmd(gw), job_env(tmp_path, bot_api.url), tmp_path)
    code, title = code_and_title("relay_closed_for_good")
    assert run.code == code, run.stderr
    gave_up = gave_up_alone(run, "closed", "max_time")
    assert gave_up["attempts"] >= 3
    budget_ms = (MAX_TIME + load.slack(0.3)) * 1000
    assert MAX_TIME * 1000 * 0.75 <= gave_up["elapsed_ms"] <= budget_ms, (gave_up, load)
    assert duration(run) < MAX_TIME + load.slack(SLACK), load  # plus the alert's round trip
    wire_alert(
        bot_api, title, "Failure: closed", "relay", "restarting", "Trusted IPs", "API &gt; Settings"
    )
    assert len(gw.events("sim.connection.open")) == gave_up["attempts"]
    assert gw.messages("placeOrder") == [] and gw.messages("startApi") == []
    no_secret_leaked(run)


def test_client_id_transient(
    fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path, running: Callable[..., Running]
) -> None:
    """Right after a restart the gateway answers 326 for id 10 for a while: retried at the
    short interval inside the grace period (20 s), connected with the same id within 1 s
    of the 326 clearing (it clears on the job's 3rd failed attempt)."""
    gw = fake_gateway
    gw.client_id_in_use_for(3600, client_id=10)
    env = job_env(tmp_path, bot_api.url, IBKR_CONNECT_MAX_TIME="60", IBKR_CLIENT_ID_GRACE="20")
    job = running(submit_cmd(gw), env, tmp_path)
    failed = ridden_out(gw, bot_api, job, "client_id_transient", "rejected")
    assert all("326" in (f["detail"] or "") + f["error"] for f in failed)
    assert failed[-1]["elapsed_ms"] < 20_000  # inside the grace period
    assert len(gw.events("sim.client_id_in_use")) == len(failed)
    gateway_closed_cleanly(gw)


CLIENT_ID_GRACE = 1.0


def test_client_id_held(fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path) -> None:
    """Another process really holds id 10: 326 on every attempt; given up by the end of
    the 1 s grace period (not the 10 s budget), one alert naming 326."""
    gw = fake_gateway
    gw.client_id_in_use(10)
    env = job_env(
        tmp_path, bot_api.url, IBKR_CONNECT_MAX_TIME="10", IBKR_CLIENT_ID_GRACE=str(CLIENT_ID_GRACE)
    )
    load = Load()
    run = run_job(submit_cmd(gw), env, tmp_path)
    code, title = code_and_title("client_id_held")
    assert run.code == code, run.stderr
    gave_up = gave_up_alone(run, "rejected", "fail_fast")
    assert gave_up["attempts"] >= 2
    grace_ms = (CLIENT_ID_GRACE + load.slack(0.3)) * 1000
    assert gave_up["elapsed_ms"] <= grace_ms, (gave_up, load)  # by the end of the grace
    assert duration(run) < CLIENT_ID_GRACE + load.slack(2 * SLACK)  # far under the 10 s
    wire_alert(bot_api, title, "Failure: rejected", "326", "client id 10", "IBKR_CLIENT_ID_GRACE")
    assert len(gw.messages("startApi")) == gave_up["attempts"]
    assert gw.messages("placeOrder") == []
    no_secret_leaked(run)


def test_no_completed_orders(fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path) -> None:
    """The gateway never answers the completed-orders request of the sync: connected on
    the first attempt, inside its bound, with a warning that names the request."""
    gw = fake_gateway
    gw.no_completed_orders()
    env = job_env(tmp_path, bot_api.url, IBKR_CONNECT_TIMEOUT="2")
    run = run_job(submit_cmd(gw), env, tmp_path)
    code, title = code_and_title("no_completed_orders")
    assert run.code == code, run.stderr
    assert "result: 5 submitted; exit 0" in run.stdout
    wire_alert(bot_api, title)
    success = run.one("ibkr.connect.success")
    assert success["attempt"] == 1 and success["attempt_ms"] < 2000
    assert run.events("ibkr.connect.failed") == []
    partial = run.one("ibkr.connect.sync_partial")
    assert partial["unanswered"] == ["completed orders"] and partial["level"] == "warning"
    # The warning reaches the operator's stderr too (the WARNING sink), naming the request.
    [warned] = [ln for ln in run.stderr.splitlines() if "ibkr.connect.sync_partial" in ln]
    assert "completed orders" in warned
    assert duration(run) < 2 + 3  # the attempt's bound plus the run (acks are prompt)
    assert len(gw.messages("reqCompletedOrders")) == 1
    assert len(gw.messages("placeOrder")) == 7
    gateway_closed_cleanly(gw)


OUTAGE_WAIT = 3.0  # longer than the 2 s connect budget: the scripts' rule is the outage wait


def test_ib_offline_at_connect(fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path) -> None:
    """The gateway is up but cut off from IB (1100 once the API starts): one connection,
    held while waiting IBKR_OUTAGE_WAIT (3 s, beyond the 2 s connect budget: the same
    wait as mid-run) for 1101/1102; then class ib_offline at once, one alert naming 1100."""
    gw = fake_gateway
    gw.ib_offline(3600)
    env = job_env(tmp_path, bot_api.url, IBKR_OUTAGE_WAIT=str(OUTAGE_WAIT))
    load = Load()
    run = run_job(submit_cmd(gw), env, tmp_path)
    code, title = code_and_title("ib_offline_at_connect")
    assert run.code == code, run.stderr
    waiting = run.one("ibkr.connect.ib_offline")
    assert waiting["wait_s"] == OUTAGE_WAIT
    gave_up = gave_up_alone(run, "ib_offline", "max_time")
    assert gave_up["attempts"] == 1  # the wait was the retry: no reconnect
    assert "within 3 s" in gave_up["error"]
    # The wait plus the connect before it (0.5 s bound), on an idle machine + 0.3 s.
    waited_ms = (OUTAGE_WAIT + 0.5 + load.slack(0.3)) * 1000
    assert OUTAGE_WAIT * 1000 <= gave_up["elapsed_ms"] <= waited_ms, (gave_up, load)
    assert duration(run) < OUTAGE_WAIT + 0.5 + load.slack(2 * SLACK)
    wire_alert(bot_api, title, "Failure: ib_offline", "1100", "1101/1102")
    assert len(gw.events("sim.connection.open")) == 1
    assert gw.messages("placeOrder") == []
    no_secret_leaked(run)


def test_ib_offline_at_connect_restored(
    fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path, running: Callable[..., Running]
) -> None:
    """1100 at connect, cleared (1102) while the job waits: the same connection goes on,
    the plan is placed, no alert; no order reached the gateway before the 1102."""
    gw = fake_gateway
    gw.ib_offline(3600)
    job = running(submit_cmd(gw), job_env(tmp_path, bot_api.url, IBKR_OUTAGE_WAIT="60"), tmp_path)
    job.wait_for_log(lambda r: r.get("event") == "ibkr.connect.ib_offline")
    gw.normal()
    restored = when(gw, "sim.ib_restored")
    run = job.wait()
    code, title = code_and_title("ib_offline_at_connect_restored")
    assert run.code == code, run.stderr
    assert "result: 5 submitted; exit 0" in run.stdout
    wire_alert(bot_api, title)
    success = run.one("ibkr.connect.success")
    assert success["attempt"] == 1 and run.events("ibkr.connect.failed") == []
    assert duration(run) < 60
    orders = gw.messages("placeOrder")
    assert len(orders) == 7 and all(r.at > restored for r in orders)
    assert len(gw.events("sim.connection.open")) == 1
    gateway_closed_cleanly(gw)


def test_timeout_hint(fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path) -> None:
    """The port accepts and nothing answers the handshake (an "Accept incoming
    connection" dialog, or a hung gateway): the alert's hint names the dialog, Trusted
    IPs and IBC's setting."""
    gw = fake_gateway
    gw.hang()
    load = Load()
    run = run_job(submit_cmd(gw), job_env(tmp_path, bot_api.url), tmp_path)
    code, title = code_and_title("timeout_hint")
    assert run.code == code, run.stderr
    gave_up = gave_up_alone(run, "timeout", "max_time")
    assert gave_up["attempts"] >= 2
    assert gave_up["elapsed_ms"] <= (MAX_TIME + load.slack(0.3)) * 1000, (gave_up, load)
    assert duration(run) < MAX_TIME + load.slack(SLACK), load  # plus the alert's round trip
    assert "Accept incoming connection" in gave_up["hint"]
    wire_alert(
        bot_api,
        title,
        "Failure: timeout",
        "Accept incoming connection",
        "Trusted IPs",
        "AcceptIncomingConnectionAction",
    )
    assert gw.messages("placeOrder") == []
    no_secret_leaked(run)


# --------------------------------------------------------------------------- close_positions
POSITIONS = (("AAPL", 100, 150.0), ("MSFT", -5, 400.0), ("SPY", 2, 450.0))


def close_cmd(gw: FakeGateway) -> list[str]:
    return [sys.executable, str(CLOSE), "--port", str(gw.port)]


def with_positions(gw: FakeGateway) -> FakeGateway:
    for symbol, quantity, price in POSITIONS:
        gw.state.set_position(SimPosition(ACCOUNT, symbol, quantity, price))
    return gw


def close_journal(tmp_path: Path) -> list[tuple[str, str]]:
    """The close run's outcome records: (event, symbol or the connectivity code); the
    ``order.sending`` before each order is checked in test_fault_matrix_records.py."""
    return [
        (r["event"], r["contract"]["symbol"] if "contract" in r else str(r.get("code")))
        for r in journal_records(tmp_path)
        if r["event"].startswith(("order.", "gateway.")) and r["event"] != "order.sending"
    ]


def test_close_read_only(fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path) -> None:
    """Read-Only API switched on after the first closing order: the 2nd gets 321, is
    journaled rejected, nothing more is sent, exit 5, the alert says what to untick."""
    gw = with_positions(fake_gateway)
    gw.read_only(after_orders=1)
    env = job_env(
        tmp_path,
        bot_api.url,
        IBKR_ORDER_WINDOW="1",  # windowed: ..._window.py
        IBKR_ACK_TIMEOUT=str(LONG_ACK_TIMEOUT),
    )
    run = run_job(close_cmd(gw), env, tmp_path)
    code, title = code_and_title("close_read_only")
    assert run.code == code, run.stderr
    assert duration(run) < LONG_ACK_TIMEOUT / 4  # no ack deadline (all 20 s) waited
    assert len(gw.messages("placeOrder")) == 2  # the 321 stopped the run
    wire_alert(bot_api, title, "ReadOnlyApiError", "error 321", "Read-Only API", "ReadOnlyApi=no")
    assert close_journal(tmp_path) == [("order.submitted", "AAPL"), ("order.rejected", "MSFT")]
    [rejected] = [r for r in journal_records(tmp_path) if r["event"] == "order.rejected"]
    assert rejected["message"].startswith("error 321:")
    assert run.one("script.end")["outcomes"] == {"order.submitted": 1, "order.rejected": 1}
    assert run.one("ibkr.connect.success")["attempt"] == 1
    gateway_closed_cleanly(gw, CLOSE_CLIENT_ID)


def test_close_outage_restored(
    fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path, running: Callable[..., Running]
) -> None:
    """1100 while the 2nd closing order waits: nothing more is sent until 1102, then the
    held order is acknowledged and the run carries on (exit 0); both changes journaled."""
    gw = with_positions(fake_gateway)
    gw.hold_orders(after=1)
    env = job_env(
        tmp_path, bot_api.url, IBKR_ACK_TIMEOUT="20", IBKR_OUTAGE_WAIT="30", IBKR_ORDER_WINDOW="1"
    )
    job = running(close_cmd(gw), env, tmp_path)
    sent_at_1100 = _outage_in_flight(gw, job)
    assert gw.wait_for(lambda: len(gw.events("sim.order_held")) == 2, timeout=5)
    assert len(gw.messages("placeOrder")) == sent_at_1100 == 2
    gw.normal()
    restored = when(gw, "sim.ib_restored")
    run = job.wait()
    code, title = code_and_title("close_outage_restored")
    assert run.code == code, run.stderr
    wire_alert(bot_api, title)
    later = gw.messages("placeOrder")[2:]
    assert len(later) == 1 and later[0].at > restored  # SPY, after the 1102
    assert run.one("script.end")["outcomes"] == {"order.submitted": 3, "gateway.connectivity": 2}
    assert ("gateway.connectivity", "1100") in close_journal(tmp_path)
    assert ("gateway.connectivity", "1102") in close_journal(tmp_path)
    assert "error 1100" in run.stdout and "error 1102" in run.stdout
    gateway_closed_cleanly(gw, CLOSE_CLIENT_ID)


def test_close_outage_never_clears(
    fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path, running: Callable[..., Running]
) -> None:
    """1100 that does not clear within IBKR_OUTAGE_WAIT (1 s): exit 1, the alert names
    1100, the closing order in flight journaled unconfirmed, nothing sent after the 1100."""
    gw = with_positions(fake_gateway)
    gw.hold_orders(after=1)
    env = job_env(
        tmp_path, bot_api.url, IBKR_ACK_TIMEOUT="20", IBKR_OUTAGE_WAIT="1", IBKR_ORDER_WINDOW="1"
    )
    load = Load()
    job = running(close_cmd(gw), env, tmp_path)
    sent_at_1100 = _outage_in_flight(gw, job)
    run = job.wait()
    code, title = code_and_title("close_outage_never_clears")
    assert run.code == code, run.stderr
    waiting = run.one("gateway.outage.waiting")
    error = run.one("ibkr.session.error")
    assert error["error_type"] == "IbOutageError"
    waited = run.at("ibkr.session.error") - run.at("gateway.outage.waiting")
    assert 1.0 <= waited < 1.0 + load.slack(SLACK), (waited, load)
    assert waiting["wait_s"] == 1
    stopped_by_the_outage(gw, bot_api, run, sent_at_1100, title)
    assert ("order.unconfirmed", "MSFT") in close_journal(tmp_path)
    gateway_closed_cleanly(gw, CLOSE_CLIENT_ID)


def test_close_silent(fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path) -> None:
    """The gateway goes silent on the 2nd closing order: after the ack deadline (3 s) the
    liveness probe gets no answer either; exit 1, "stopped answering", the in-flight row
    journaled unconfirmed, only the probe reached the gateway after the silence."""
    gw = with_positions(fake_gateway)
    gw.silent(after_orders=1)
    env = job_env(tmp_path, bot_api.url, IBKR_ORDER_WINDOW="1")  # windowed: ..._window.py
    load = Load()
    run = run_job(close_cmd(gw), env, tmp_path)
    code, title = code_and_title("close_silent")
    assert run.code == code, run.stderr
    silent_at = when(gw, "sim.silent")
    assert len(gw.messages("placeOrder")) == 2
    assert [r.name for r in gw.messages() if r.at > silent_at] == ["reqCurrentTime"]
    gave_up_on_the_silence(gw, run, load)  # the ack deadline plus the probe, no more
    wire_alert(bot_api, title, "GatewayNotAnsweringError", "stopped answering")
    records = journal_records(tmp_path)
    [unconfirmed] = [r for r in records if r["event"] == "order.unconfirmed"]
    assert unconfirmed["contract"]["symbol"] == "MSFT"
    assert "stopped answering" in unconfirmed["message"]
    assert run.one("script.end")["outcomes"] == {"order.submitted": 1, "order.unconfirmed": 1}


# --------------------------------------------------------------------------- the table
def test_the_reliability_table_states_these_rows() -> None:
    """docs/reliability.md has one row per entry of ``EXPECTED``, naming its test here and
    stating its exit code and alert."""
    check_table(EXPECTED, defined_tests(__file__))

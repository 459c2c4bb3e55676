"""Fault-matrix rows for the order window (issue 13, item 4): several rows in flight.

Same rules as ``tests/test_fault_matrix.py`` (whose helpers this uses): the script runs as
cron runs it, a subprocess with the real client against the simulated gateway and a
loopback Bot API; every wait is on a gateway event (``hold_orders`` keeps chosen orders
unanswered, so exactly which rows are in flight is known) or on the job's own log line,
never a sleep. The rows of ``tests/test_fault_matrix.py`` that hold one order in flight run
with ``IBKR_ORDER_WINDOW=1``; these are their windowed counterparts, plus the kill at any
point and the plan-order guarantees. ``EXPECTED`` holds each row's exit code and
:func:`test_the_window_rows_state_what_the_tests_assert` checks docs/reliability.md.

The example plan has five rows: four single orders, then a bracket (three orders).
``close_positions`` sends its closing orders through the same window: its rows close
three positions (AAPL, MSFT, SPY) with market-on-close orders, which stay working in the
simulator, so a re-run meets them and must skip them (the closing orderRef check).
"""

from __future__ import annotations

import itertools
import re
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import test_fault_matrix
from loadslack import Load
from test_fault_matrix import (
    LONG_ACK_TIMEOUT,
    PLAN,
    Running,
    check_table,
    defined_tests,
    gave_up_on_the_silence,
    job_env,
    journal_records,
    run_job,
    submit_cmd,
    wire_alert,
)
from test_fault_matrix_gateways import POSITIONS, close_cmd, with_positions

from ibkr_resilience._app.jobs.plan import load_plan
from ibkr_resilience.simulator import FakeGateway, PlaceOrder
from ibkr_resilience.testing import BotApi

EXPECTED: dict[str, int] = {
    "all_in_flight": -signal.SIGKILL,
    "window_full": -signal.SIGKILL,
    "bracket_in_flight": -signal.SIGKILL,
    "window_sigterm": 143,
    "window_sigterm_repeated": 143,
    "window_drop": 1,
    "window_read_only": 5,
    "window_outage_restored": 0,
    "window_outage_never_clears": 1,
    "window_silent": 1,
    "window_plan_order": 3,
    "close_all_in_flight": -signal.SIGKILL,
    "close_window_full": -signal.SIGKILL,
    "close_window_sigterm": 143,
}

ROWS = load_plan(PLAN).orders
LEGS = [len(row.order_refs) for row in ROWS]  # orders per row: [1, 1, 1, 1, 3]
OUTCOMES = {"order.submitted", "order.rejected", "order.unconfirmed", "order.skipped"}


running = test_fault_matrix.running  # the fixture: jobs started in the background


def placed(gw: FakeGateway) -> list[PlaceOrder]:
    return [m.request for m in gw.messages("placeOrder") if isinstance(m.request, PlaceOrder)]


def held(gw: FakeGateway, count: int) -> None:
    """Wait until the gateway holds ``count`` orders unanswered."""
    assert gw.wait_for(lambda: len(gw.events("sim.order_held")) == count, timeout=60)


def submit_with_three_held(
    gw: FakeGateway, bot_api: BotApi, tmp_path: Path, running: Callable[..., Running]
) -> Running:
    """``submit_orders.py`` with a window of 3 against a gateway that holds every order:
    returned once its first three orders are held unanswered."""
    gw.hold_orders(after=0)
    env = job_env(tmp_path, bot_api.url, IBKR_ACK_TIMEOUT="60", IBKR_ORDER_WINDOW="3")
    job = running(submit_cmd(gw), env, tmp_path)
    held(gw, 3)
    return job


def outcomes(tmp_path: Path) -> list[dict[str, Any]]:
    return [r for r in journal_records(tmp_path) if r["event"] in OUTCOMES]


def assert_journal_complete(tmp_path: Path) -> None:
    """Every row announced by ``order.sending`` has exactly one outcome record after it."""
    records = journal_records(tmp_path)
    sent = [r["order_ref"] for r in records if r["event"] == "order.sending"]
    done = [r["order_ref"] for r in records if r["event"] in OUTCOMES and r["order_ref"] in sent]
    assert Counter(done) == Counter(sent), (sent, done)


def assert_placed_once(gw: FakeGateway) -> None:
    """Each orderRef of the plan reached the gateway exactly once, and rests there once."""
    refs = [ref for row in ROWS for ref in row.order_refs]
    assert Counter(p.order_ref for p in placed(gw)) == Counter(refs)
    assert Counter(o.order_ref for o in gw.state.order_list()) == Counter(refs)


def in_plan_order(records: list[dict[str, Any]]) -> bool:
    lines = [r["line"] for r in records]
    return lines == sorted(lines)


# --------------------------------------------------------------------------- kill -9
@pytest.mark.parametrize(
    ("row", "window", "answered"),
    [
        pytest.param("all_in_flight", 8, 0, id="all_in_flight"),
        pytest.param("window_full", 2, 1, id="window_full"),
        pytest.param("bracket_in_flight", 8, 4, id="bracket_in_flight"),
    ],
)
def test_window_kill_then_rerun(
    row: str,
    window: int,
    answered: int,
    fake_gateway: FakeGateway,
    bot_api: BotApi,
    tmp_path: Path,
    running: Callable[..., Running],
) -> None:
    """SIGKILL (no handler runs) with several rows sent and unanswered: the journal
    already names every order the gateway received (``order.sending``, same order id);
    the gateway then answers them, and a re-run places only the rows never sent: every
    orderRef reaches the gateway exactly once."""
    gw = fake_gateway
    gw.hold_orders(after=answered)  # the first `answered` rows are single orders
    in_flight = sum(LEGS[answered : answered + window])
    env = job_env(tmp_path, bot_api.url, IBKR_ACK_TIMEOUT="60", IBKR_ORDER_WINDOW=str(window))
    job = running(submit_cmd(gw), env, tmp_path)
    held(gw, in_flight)
    run, _ = job.signal_and_wait(signal.SIGKILL)
    assert run.code == EXPECTED[row]
    sent = placed(gw)
    assert len(sent) == answered + in_flight  # the window was full: nothing else went out
    sending = {
        leg["order_ref"]: leg["order_id"]
        for r in journal_records(tmp_path)
        if r["event"] == "order.sending"
        for leg in r.get("legs") or [r]
    }
    assert {p.order_ref: p.order_id for p in sent} == sending  # announced before sent
    assert gw.release_orders() == in_flight  # the gateway did get them: now working

    rerun = run_job(submit_cmd(gw), job_env(tmp_path, bot_api.url), tmp_path)
    assert rerun.code == 0, rerun.stderr
    unsent = len(ROWS) - answered - min(window, len(ROWS) - answered)
    skipped = len(ROWS) - unsent
    expected = f"{skipped} skipped" + (f", {unsent} submitted" if unsent else "")
    assert f"result: {expected}; exit 0" in rerun.stdout, rerun.stdout
    assert_placed_once(gw)


def terminated_with_three_in_flight(
    gw: FakeGateway,
    job: Running,
    script: str,
    code: int,
    records_of: Callable[[Path], list[dict[str, Any]]],
    tmp_path: Path,
    *,
    repeat_every: float | None = None,
) -> list[dict[str, Any]]:
    """SIGTERM (again every ``repeat_every`` s until the job ends) to ``job`` with three
    orders held in its window: exit ``code`` at once, each of the three journaled
    unconfirmed with the gateway's order id and the cause, the journal complete, the
    gateway left; the held orders released. Returns the records."""
    run, sent = job.signal_and_wait(signal.SIGTERM, repeat_every=repeat_every)
    assert run.code == code, run.stderr
    assert run.at("ibkr.session.end") - sent < 2.0
    assert f"{script}: error: terminated (SIGTERM)" in run.human_stderr()
    assert "Traceback" not in run.stderr
    assert "3 unconfirmed" in run.stdout
    assert run.one("script.end")["outcomes"] == {"order.unconfirmed": 3}
    records = records_of(tmp_path)
    ids = {p.order_ref: p.order_id for p in placed(gw)}
    for record in records:
        assert record["event"] == "order.unconfirmed"
        assert record["message"].startswith("terminated (SIGTERM) while placing")
        assert record["order_id"] == ids[record["order_ref"]]
    assert_journal_complete(tmp_path)
    assert gw.wait_for(lambda: gw.connection_count() == 0, timeout=5)
    assert gw.release_orders() == 3
    return records


# --------------------------------------------------------------------------- stops
def test_window_sigterm(
    fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path, running: Callable[..., Running]
) -> None:
    """SIGTERM with three rows in flight: exit 143 at once, each of the three journaled
    unconfirmed (plan order, the gateway's order ids, the cause); the re-run after the
    gateway answered them skips the three and places the other two."""
    gw = fake_gateway
    job = submit_with_three_held(gw, bot_api, tmp_path, running)
    records = terminated_with_three_in_flight(
        gw, job, "submit_orders.py", EXPECTED["window_sigterm"], outcomes, tmp_path
    )
    assert [r["order_ref"] for r in records] == [row.order_ref for row in ROWS[:3]]

    rerun = run_job(submit_cmd(gw), job_env(tmp_path, bot_api.url), tmp_path)
    assert rerun.code == 0, rerun.stderr
    assert "result: 3 skipped, 2 submitted; exit 0" in rerun.stdout, rerun.stdout
    assert_placed_once(gw)


def test_window_sigterm_repeated(
    fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path, running: Callable[..., Running]
) -> None:
    """SIGTERM repeated every millisecond until the process is gone (a supervisor that
    repeats itself, ``kill`` run twice): only the first ends the run, the others cannot
    cut its records short (the same three ``order.unconfirmed`` records as for one; a
    newcomer lost 4-5 of 8 this way, with two signals 10 ms apart), nor turn exit 143
    into "killed by SIGTERM" once the run has reported."""
    gw = fake_gateway
    job = submit_with_three_held(gw, bot_api, tmp_path, running)
    records = terminated_with_three_in_flight(
        gw,
        job,
        "submit_orders.py",
        EXPECTED["window_sigterm_repeated"],
        outcomes,
        tmp_path,
        repeat_every=0.001,
    )
    assert [r["order_ref"] for r in records] == [row.order_ref for row in ROWS[:3]]


def test_window_drop(
    fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path, running: Callable[..., Running]
) -> None:
    """The connection drops with rows 2-5 in flight: exit 1 at once (not the 20 s
    deadline), the four journaled unconfirmed "connection was lost", in plan order."""
    gw = fake_gateway
    gw.hold_orders(after=1)
    env = job_env(tmp_path, bot_api.url, IBKR_ACK_TIMEOUT="20")
    job = running(submit_cmd(gw), env, tmp_path)
    held(gw, sum(LEGS[1:]))
    gw.drop_connections()
    run = job.wait()
    assert run.code == EXPECTED["window_drop"], run.stderr
    assert run.at("script.end") - run.at("ibkr.session.lost") < 3
    assert any("lost the gateway" in line for line in run.human_stderr())
    wire_alert(bot_api, "IBKR CONNECTION LOST")
    assert run.one("script.end")["outcomes"] == {"order.submitted": 1, "order.unconfirmed": 4}
    records = outcomes(tmp_path)
    assert [r["event"] for r in records] == ["order.submitted"] + ["order.unconfirmed"] * 4
    assert all("connection was lost" in r["message"] for r in records[1:])
    assert in_plan_order(records)
    assert_journal_complete(tmp_path)


def test_window_read_only(fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path) -> None:
    """Read-Only API after the first order, rows in flight: exit 5; the 2nd row is
    rejected with 321; sending stops as soon as that is seen, and every row sent has its
    outcome (rejected with 321, or unconfirmed if its answer had not arrived yet)."""
    gw = fake_gateway
    gw.read_only(after_orders=1)
    env = job_env(tmp_path, bot_api.url, IBKR_ACK_TIMEOUT=str(LONG_ACK_TIMEOUT))
    run = run_job(submit_cmd(gw), env, tmp_path)
    assert run.code == EXPECTED["window_read_only"], run.stderr
    # No deadline waited: that would take all 20 s; the run takes a fraction of a second.
    assert run.one("ibkr.session.end")["duration_s"] < LONG_ACK_TIMEOUT / 4
    wire_alert(bot_api, "IBKR SESSION FAILED", "ReadOnlyApiError", "error 321")
    records = outcomes(tmp_path)
    assert [r["event"] for r in records[:2]] == ["order.submitted", "order.rejected"]
    assert records[1]["message"].startswith("error 321:")
    for record in records[2:]:
        assert record["event"] in ("order.rejected", "order.unconfirmed"), record
        assert record["event"] == "order.unconfirmed" or "error 321" in record["message"]
    assert 2 <= len(placed(gw)) <= sum(LEGS)
    assert in_plan_order(records)
    assert_journal_complete(tmp_path)


def _outage_with_window_full(
    gw: FakeGateway,
    bot_api: BotApi,
    tmp_path: Path,
    running: Callable[..., Running],
    outage_wait: str,
) -> Running:
    """Start the job with window 2 and ``IBKR_OUTAGE_WAIT=outage_wait``. The 1st order
    answered, rows 2 and 3 held (the window is full); then an IB outage (1100); once the
    job logged it the held orders meet it (held again). Returns the running job."""
    gw.hold_orders(after=1)
    env = job_env(
        tmp_path,
        bot_api.url,
        IBKR_ACK_TIMEOUT="20",
        IBKR_OUTAGE_WAIT=outage_wait,
        IBKR_ORDER_WINDOW="2",
    )
    job = running(submit_cmd(gw), env, tmp_path)
    held(gw, 2)
    gw.set_scenario("ib_offline:3600")
    job.wait_for_log(
        lambda r: r.get("event") == "gateway.connectivity" and r.get("code") == 1100, timeout=10
    )
    gw.release_orders()
    held(gw, 4)
    return job


def test_window_outage_restored(
    fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path, running: Callable[..., Running]
) -> None:
    """1100 while the window is full: nothing more is sent until 1102; then the held rows
    are acknowledged, the rest is sent, exit 0, outcomes in plan order."""
    gw = fake_gateway
    job = _outage_with_window_full(gw, bot_api, tmp_path, running, outage_wait="30")
    assert len(placed(gw)) == 3  # nothing sent during the 1100
    gw.normal()  # 1102: the held orders are served
    restored_at = gw.events("sim.ib_restored")[0]["at"]
    run = job.wait()
    assert run.code == EXPECTED["window_outage_restored"], run.stderr
    wire_alert(bot_api, None)
    later = gw.messages("placeOrder")[3:]
    assert len(later) == 4 and all(r.at > restored_at for r in later)  # row 4, the bracket
    assert run.one("script.end")["outcomes"] == {"order.submitted": 5, "gateway.connectivity": 2}
    records = outcomes(tmp_path)
    assert in_plan_order(records) and len(records) == 5
    assert_journal_complete(tmp_path)


def test_window_outage_never_clears(
    fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path, running: Callable[..., Running]
) -> None:
    """1100 that outlasts IBKR_OUTAGE_WAIT with two rows in flight: exit 1, both
    journaled unconfirmed naming the outage, nothing sent after the 1100."""
    gw = fake_gateway
    job = _outage_with_window_full(gw, bot_api, tmp_path, running, outage_wait="1")
    run = job.wait()
    assert run.code == EXPECTED["window_outage_never_clears"], run.stderr
    assert len(placed(gw)) == 3
    wire_alert(bot_api, "IBKR SESSION FAILED", "IbOutageError", "error 1100")
    assert run.one("script.end")["outcomes"] == {
        "order.submitted": 1,
        "order.unconfirmed": 2,
        "gateway.connectivity": 1,
    }
    records = outcomes(tmp_path)
    assert all("error 1100" in r["message"] for r in records[1:]), records
    assert in_plan_order(records)
    assert_journal_complete(tmp_path)


def test_window_silent(fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path) -> None:
    """Silent from the 2nd order on, the other rows already in flight: after the 2nd
    row's deadline and the probe, exit 1; the four rows journaled unconfirmed, and
    nothing but the probe reached the gateway after the window."""
    gw = fake_gateway
    gw.silent(after_orders=1)
    load = Load()
    run = run_job(submit_cmd(gw), job_env(tmp_path, bot_api.url), tmp_path)
    assert run.code == EXPECTED["window_silent"], run.stderr
    silent_at = gw.events("sim.silent")[0]["at"]
    after = [r.name for r in gw.messages() if r.at > silent_at]
    assert after.count("reqCurrentTime") == 1 and set(after) <= {"placeOrder", "reqCurrentTime"}
    assert len(placed(gw)) == sum(LEGS)  # the whole plan fit in the window
    gave_up_on_the_silence(gw, run, load)  # the 2nd row's deadline, the probe, no more
    wire_alert(bot_api, "IBKR SESSION FAILED", "GatewayNotAnsweringError")
    assert run.one("script.end")["outcomes"] == {"order.submitted": 1, "order.unconfirmed": 4}
    records = outcomes(tmp_path)
    assert all("stopped answering" in r["message"] for r in records[1:])
    assert in_plan_order(records)
    assert_journal_complete(tmp_path)


# --------------------------------------------------------------------------- plan order
BIG_PLAN_HEADER = (
    "id,symbol,side,quantity,order_type,limit_price,stop_price,tif,take_profit,stop_loss"
)


def big_plan(tmp_path: Path, rows: int) -> Path:
    """``rows`` rows over the simulator's contracts; every 5th a bracket, every 7th an
    unknown symbol (rejected without being sent)."""
    lines = [BIG_PLAN_HEADER]
    for i in range(rows):
        if i % 7 == 6:
            lines.append(f"r{i},NOPE,BUY,1,LMT,10,,DAY,,")
        elif i % 5 == 4:
            lines.append(f"r{i},SPY,BUY,1,LMT,561,,DAY,575,550")
        else:
            lines.append(f"r{i},{('AAPL', 'MSFT', 'IBM')[i % 3]},BUY,1,LMT,100,,DAY,,")
    path = tmp_path / "big.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_window_plan_order(fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path) -> None:
    """30 rows, 20 ms per reply, window 4: rows really overlap (a row is sent before the
    one ahead is answered), yet outcomes and summary are in plan order, each bracket's
    legs go out back to back (transmit False, False, True), every row once; exit 3 for
    the unknown symbols only."""
    gw = fake_gateway
    plan = big_plan(tmp_path, 30)
    gw.set_scenario("slow:0.02")
    cmd = [*submit_cmd(gw)[:2], "--plan", str(plan), "--port", str(gw.port)]
    env = job_env(tmp_path, bot_api.url, IBKR_ORDER_WINDOW="4", IBKR_CONNECT_TIMEOUT="5")
    run = run_job(cmd, env, tmp_path)
    assert run.code == EXPECTED["window_plan_order"], run.stderr
    records = journal_records(tmp_path)
    done = [r for r in records if r["event"] in OUTCOMES]
    assert [r["line"] for r in done] == list(range(2, 32))  # plan order, every row
    assert {r["event"] for r in done if r["contract"]["symbol"] == "NOPE"} == {"order.rejected"}
    assert {r["event"] for r in done if r["contract"]["symbol"] != "NOPE"} == {"order.submitted"}
    events = [
        (r["event"], r["order_ref"]) for r in records if r["event"] in OUTCOMES | {"order.sending"}
    ]
    overlapped = any(a == b == "order.sending" for (a, _), (b, _) in itertools.pairwise(events))
    assert overlapped, events
    summary = [line for line in run.stdout.splitlines() if "line " in line]
    assert [int(re.search(r"line (\d+)", s).group(1)) for s in summary] == list(range(2, 32))  # type: ignore[union-attr]
    sent = placed(gw)
    assert len({p.order_ref for p in sent}) == len(sent)
    for i, p in enumerate(sent):
        if p.parent_id == 0 and not p.transmit:  # a bracket's parent
            tp, sl = sent[i + 1], sent[i + 2]
            assert (tp.parent_id, sl.parent_id) == (p.order_id, p.order_id)
            assert (tp.transmit, sl.transmit) == (False, True)
            assert (tp.order_ref, sl.order_ref) == (f"{p.order_ref}:tp", f"{p.order_ref}:sl")
    assert_journal_complete(tmp_path)


# --------------------------------------------------------------------------- close_positions
CLOSE_SYMBOLS = [symbol for symbol, _, _ in POSITIONS]


def close_moc(gw: FakeGateway) -> list[str]:
    return [*close_cmd(gw), "--moc"]


def closes(tmp_path: Path) -> list[dict[str, Any]]:
    """The close runs' outcome records (cancels excluded: there are none here)."""
    return [r for r in outcomes(tmp_path) if r["order_ref"].startswith("close:")]


def assert_closed_once(gw: FakeGateway) -> None:
    """One closing order per position reached the gateway, and rests there once."""
    refs = [p.order_ref for p in placed(gw)]
    assert len(refs) == len(set(refs)) == len(POSITIONS), refs
    assert sorted(ref.rsplit(":", 1)[1] for ref in refs) == sorted(CLOSE_SYMBOLS)
    assert Counter(o.order_ref for o in gw.state.order_list()) == Counter(refs)


@pytest.mark.parametrize(
    ("row", "window"),
    [
        pytest.param("close_all_in_flight", 8, id="close_all_in_flight"),
        pytest.param("close_window_full", 2, id="close_window_full"),
    ],
)
def test_close_window_kill_then_rerun(
    row: str,
    window: int,
    fake_gateway: FakeGateway,
    bot_api: BotApi,
    tmp_path: Path,
    running: Callable[..., Running],
) -> None:
    """SIGKILL with several closing orders sent and unanswered: each was announced by
    ``order.sending`` (same order id) before it reached the gateway; once the gateway
    has them, a re-run skips those (their closing orderRef is pending) and closes only
    the positions never sent: each position closed once."""
    gw = with_positions(fake_gateway)
    gw.hold_orders(after=0)
    in_flight = min(window, len(POSITIONS))
    env = job_env(tmp_path, bot_api.url, IBKR_ACK_TIMEOUT="60", IBKR_ORDER_WINDOW=str(window))
    job = running(close_moc(gw), env, tmp_path)
    held(gw, in_flight)
    run, _ = job.signal_and_wait(signal.SIGKILL)
    assert run.code == EXPECTED[row]
    sent = placed(gw)
    assert len(sent) == in_flight  # the window was full: nothing else went out
    sending = {
        r["order_ref"]: r["order_id"]
        for r in journal_records(tmp_path)
        if r["event"] == "order.sending"
    }
    assert {p.order_ref: p.order_id for p in sent} == sending  # announced before sent
    assert gw.release_orders() == in_flight  # the gateway did get them: now working

    rerun = run_job(close_moc(gw), job_env(tmp_path, bot_api.url), tmp_path)
    assert rerun.code == 0, rerun.stderr
    unsent = len(POSITIONS) - in_flight
    expected = f"{in_flight} skipped" + (f", {unsent} submitted" if unsent else "")
    assert f"result: {expected}; exit 0" in rerun.stdout, rerun.stdout
    records = closes(tmp_path)
    assert [r["contract"]["symbol"] for r in records] == CLOSE_SYMBOLS  # position order
    assert [r["event"] for r in records] == ["order.skipped"] * in_flight + [
        "order.submitted"
    ] * unsent
    assert_closed_once(gw)


def test_close_window_sigterm(
    fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path, running: Callable[..., Running]
) -> None:
    """SIGTERM with the three closing orders in flight: exit 143 at once, each journaled
    unconfirmed (position order, the gateway's order ids, the cause); the re-run after
    the gateway answered them skips all three: no position closed twice."""
    gw = with_positions(fake_gateway)
    gw.hold_orders(after=0)
    env = job_env(tmp_path, bot_api.url, IBKR_ACK_TIMEOUT="60", IBKR_ORDER_WINDOW="8")
    job = running(close_moc(gw), env, tmp_path)
    held(gw, len(POSITIONS))
    records = terminated_with_three_in_flight(
        gw, job, "close_positions.py", EXPECTED["close_window_sigterm"], closes, tmp_path
    )
    assert [r["contract"]["symbol"] for r in records] == CLOSE_SYMBOLS

    rerun = run_job(close_moc(gw), job_env(tmp_path, bot_api.url), tmp_path)
    assert rerun.code == 0, rerun.stderr
    assert "result: 3 skipped; exit 0" in rerun.stdout, rerun.stdout
    assert_closed_once(gw)


# --------------------------------------------------------------------------- the table
def test_the_window_rows_state_what_the_tests_assert() -> None:
    """docs/reliability.md has a row per entry of ``EXPECTED``, naming its test here
    and stating the exit code that test asserts."""
    check_table(EXPECTED, defined_tests(__file__))

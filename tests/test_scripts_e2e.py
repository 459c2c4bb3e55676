"""submit_orders / close_positions end to end: real client library, real sockets.

The simulated gateway runs in this process (``FakeGateway``); the scripts run in-process
through ``main()`` where an exit code is all that matters, and as subprocesses where a
real process is the point (SIGTERM, the wrapper scripts, the legacy example). Timeouts
are short through the environment; nothing sleeps: waits are on gateway events.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loadslack import Load

from ibkr_resilience._app.jobs import close as close_job
from ibkr_resilience._app.jobs import orders as orders_module
from ibkr_resilience._app.jobs import submit as submit_job
from ibkr_resilience._app.jobs.close import close_ref, trading_date
from ibkr_resilience._app.jobs.journal import RUN_START, SENDING, read_journal
from ibkr_resilience._app.jobs.plan import load_plan
from ibkr_resilience._connect import compat
from ibkr_resilience._connect.compat import IB
from ibkr_resilience.simulator import FakeGateway, SimPosition

REPO = Path(__file__).resolve().parents[1]
PLAN = REPO / "docs" / "examples" / "plan.csv"
SUBMIT_SCRIPT = REPO / "scripts" / "paper_trading" / "submit_orders.py"
ACCOUNT = "DU1234567"
ORDER_REF_FIELD = 26  # index of orderRef in a recorded placeOrder message


@pytest.fixture(autouse=True)
def _drop_log_handlers() -> Iterator[None]:
    """``main()`` configures logging onto this test's captured stderr; unhook it after
    the test so later tests do not log into a closed capture stream."""
    yield
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_ibkr_resilience_handler", False)]:
        root.removeHandler(handler)
        handler.close()


def script_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A clean environment: short timeouts, JSON logs, no Telegram (no internet)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "IBKR_CONNECT_TIMEOUT": "1",
        "IBKR_CONNECT_MAX_TIME": "5",
        "IBKR_ACK_TIMEOUT": "3",
        "IBKR_LOG_FORMAT": "json",
    }
    env.update(extra)
    return env


def submit(
    gw: FakeGateway,
    tmp_path: Path,
    *extra: str,
    plan: Path = PLAN,
    env: dict[str, str] | None = None,
) -> int:
    args = ["--port", str(gw.port), "--plan", str(plan), "--journal", str(tmp_path / "j.jsonl")]
    return submit_job.main([*args, *extra], env=env or script_env(tmp_path))


def close(gw: FakeGateway, tmp_path: Path, *extra: str) -> int:
    args = ["--port", str(gw.port), "--journal", str(tmp_path / "j.jsonl")]
    return close_job.main([*args, *extra], env=script_env(tmp_path))


def journal(tmp_path: Path) -> list[dict[str, Any]]:
    """The outcome records (``run.start`` and ``order.sending``: test_journal_records.py)."""
    records = read_journal(tmp_path / "j.jsonl").records
    return [r for r in records if r["event"] not in (RUN_START, SENDING)]


def placed_refs(gw: FakeGateway, client_id: int | None = None) -> Counter[str]:
    return Counter(m.fields[ORDER_REF_FIELD] for m in gw.messages("placeOrder", client_id))


def plan_refs() -> list[str]:
    return [ref for row in load_plan(PLAN) for ref in row.order_refs]


def open_orders(gw: FakeGateway) -> list[Any]:
    return gw.state.open_orders()


def positions(gw: FakeGateway) -> dict[str, float]:
    return {p.symbol: p.quantity for p in gw.state.position_list() if p.quantity}


# --------------------------------------------------------------------------- submit_orders
def test_full_plan_is_placed(
    fake_gateway: FakeGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert submit(fake_gateway, tmp_path) == 0
    assert placed_refs(fake_gateway) == Counter(plan_refs())  # 4 singles + a 3-leg bracket
    states = {o.order_ref: o.status for o in fake_gateway.state.order_list()}
    assert states[load_plan(PLAN).orders[0].order_ref] == "Filled"  # AAPL MKT
    records = journal(tmp_path)
    assert [r["event"] for r in records] == ["order.submitted"] * 5
    assert all(isinstance(r["order_id"], int) and r["perm_id"] for r in records)
    bracket_legs = [leg["order_ref"] for leg in records[-1]["legs"]]
    assert bracket_legs == list(load_plan(PLAN).orders[-1].order_refs)
    out = capsys.readouterr().out
    assert "result: 5 submitted; exit 0" in out


def test_same_plan_rerun_places_nothing_new(fake_gateway: FakeGateway, tmp_path: Path) -> None:
    assert submit(fake_gateway, tmp_path) == 0
    sent = len(fake_gateway.messages("placeOrder"))
    assert submit(fake_gateway, tmp_path) == 0
    assert len(fake_gateway.messages("placeOrder")) == sent == len(plan_refs())
    second = [r for r in journal(tmp_path)][5:]
    assert [r["event"] for r in second] == ["order.skipped"] * 5
    # Skipped rows carry the ids of what the account already has.
    first_ids = [r["order_id"] for r in journal(tmp_path)[:5]]
    assert [r["order_id"] for r in second] == first_ids


def test_sigterm_mid_run_then_rerun_places_every_order_once(tmp_path: Path) -> None:
    """Killed while waiting for the 3rd order's acknowledgement; the re-run completes."""
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with FakeGateway() as gw:
        gw.hold_orders(after=2)  # the 3rd order reaches the gateway and is not answered
        cmd = [
            sys.executable,
            str(SUBMIT_SCRIPT),
            "--plan",
            str(PLAN),
            "--port",
            str(gw.port),
            "--journal",
            str(tmp_path / "j.jsonl"),
        ]
        with out.open("w") as o, err.open("w") as e:
            proc = subprocess.Popen(
                cmd,
                cwd=tmp_path,
                stdout=o,
                stderr=e,
                # One order in flight; the windowed kill: test_fault_matrix_window.py.
                env=script_env(tmp_path, IBKR_ACK_TIMEOUT="30", IBKR_ORDER_WINDOW="1"),
            )
            try:
                # hard deadlines, the interpreter's start-up on a loaded machine included
                assert gw.wait_for(lambda: len(gw.events("sim.order_held")) == 1, timeout=60)
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=30) == 143, err.read_text()
            finally:
                if proc.poll() is None:
                    proc.kill()
        assert "terminated (SIGTERM)" in err.read_text()
        assert "Traceback" not in err.read_text()
        assert "1 unconfirmed" in out.read_text()
        assert gw.wait_for(lambda: gw.connection_count() == 0, timeout=5)
        assert gw.release_orders() == 1  # the gateway did get it: it now rests in the book

        assert submit(gw, tmp_path) == 0

        refs = plan_refs()
        assert placed_refs(gw) == Counter(refs)  # every order sent exactly once overall
        assert Counter(o.order_ref for o in gw.state.order_list()) == Counter(refs)
    rows = load_plan(PLAN).orders
    events: dict[str, list[str]] = {row.order_ref: [] for row in rows}
    for record in journal(tmp_path):
        events[record["order_ref"]].append(record["event"])
    assert events == {
        rows[0].order_ref: ["order.submitted", "order.skipped"],
        rows[1].order_ref: ["order.submitted", "order.skipped"],
        rows[2].order_ref: ["order.unconfirmed", "order.skipped"],
        rows[3].order_ref: ["order.submitted"],
        rows[4].order_ref: ["order.submitted"],
    }
    held = next(r for r in journal(tmp_path) if r["event"] == "order.unconfirmed")
    in_gateway = {o.order_ref: o.order_id for o in gw.state.order_list()}
    assert held["order_id"] == in_gateway[rows[2].order_ref]


@contextlib.contextmanager
def dropping_when_an_order_is_held(gw: FakeGateway) -> Iterator[None]:
    """Inside the block, another thread drops every connection once the gateway holds an
    order (``gw.hold_orders``); the block's end waits for that thread."""

    def drop_when_held() -> None:
        if gw.wait_for(lambda: len(gw.events("sim.order_held")) == 1, timeout=10):
            gw.drop_connections()

    dropper = threading.Thread(target=drop_when_held)
    dropper.start()
    try:
        yield
    finally:
        dropper.join()


def test_gateway_lost_mid_run_exits_1_and_journals_the_order_in_flight(
    fake_gateway: FakeGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gw = fake_gateway
    gw.hold_orders(after=1)
    env = script_env(tmp_path, IBKR_ACK_TIMEOUT="20", IBKR_ORDER_WINDOW="1")  # one in flight
    with dropping_when_an_order_is_held(gw):
        assert submit(gw, tmp_path, env=env) == 1
    ended = time.monotonic()
    [dropped] = [e for e in gw.events("sim.connection.close") if e["reason"] == "dropped by test"]
    assert ended - dropped["at"] < 3  # the loss ended the wait, not the 20 s deadline
    assert len(gw.messages("placeOrder")) == 2
    records = journal(tmp_path)
    assert [r["event"] for r in records] == ["order.submitted", "order.unconfirmed"]
    assert "connection was lost before the gateway confirmed" in records[1]["message"]
    assert "lost the gateway" in capsys.readouterr().err


def test_the_ack_wait_ends_cleanly_when_the_gateway_is_lost(fake_gateway: FakeGateway) -> None:
    """The ack wait (``wait_for_update``) returns (the order still pending) when the socket
    drops, and raises nothing, on every Python (3.12's ``asyncio.wait_for`` let the drop
    escape as ``ConnectionError`` through ``ib_insync.util.run``)."""
    gw = fake_gateway
    gw.hold_orders(after=0)
    ib = IB()
    ib.connect("127.0.0.1", gw.port, clientId=10, timeout=5)
    try:
        trade = ib.placeOrder(
            compat.Stock("AAPL", "SMART", "USD"), compat.LimitOrder("BUY", 1, 100.0)
        )
        with dropping_when_an_order_is_held(gw):
            orders_module.wait_for_update(
                ib, lambda: orders_module.trade_outcome(trade) != "pending", 20
            )
        ended = time.monotonic()
        assert gw.events("sim.order_held")  # the drop came while the order was unanswered
        [dropped] = gw.events("sim.connection.close")
        assert ended - dropped["at"] < 3  # ended by the loss, not by the 20 s deadline
        assert not ib.isConnected()
        assert orders_module.trade_outcome(trade) == "pending"
        assert "connection was lost" in orders_module.unconfirmed_message(ib, 20)
    finally:
        ib.disconnect()


BAD_PLAN = """\
id,symbol,side,quantity,order_type,limit_price,stop_price,tif,take_profit,stop_loss
a,AAPL,BUY,10,MKT,,,DAY,,
b,MSFT,HOLD,5,LMT,405,,DAY,,
c,IBM,BUY,0,LMT,,,DAY,,
d,SPY,BUY,3,LMT,561,,DAY,550,575
a,TSLA,BUY,1,MKT,,,DAY,,
"""


def test_bad_plan_exits_2_without_touching_the_gateway(
    fake_gateway: FakeGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = tmp_path / "bad.csv"
    plan.write_text(BAD_PLAN)
    assert submit(fake_gateway, tmp_path, plan=plan) == 2
    err = capsys.readouterr().err
    assert "invalid order plan" in err and "Traceback" not in err
    for line in (
        "line 3: side 'HOLD'",
        "line 4: quantity '0'",
        "line 4: LMT order needs",
        "line 5: BUY bracket legs",
        "line 6: duplicate id 'a'",
    ):
        assert line in err
    assert fake_gateway.messages() == []
    assert fake_gateway.events("sim.connection.open") == []
    assert not (tmp_path / "j.jsonl").exists()


def test_unknown_symbol_fails_that_row_only(fake_gateway: FakeGateway, tmp_path: Path) -> None:
    plan = tmp_path / "mixed.csv"
    plan.write_text("id,symbol,side,quantity,order_type\nok,AAPL,BUY,1,MKT\nbad,ZZZZ,BUY,1,MKT\n")
    assert submit(fake_gateway, tmp_path, plan=plan) == 3
    assert [
        m.fields[ORDER_REF_FIELD].rsplit(":", 1)[1] for m in fake_gateway.messages("placeOrder")
    ] == ["ok"]
    ok, bad = journal(tmp_path)
    assert ok["event"] == "order.submitted"
    assert bad["event"] == "order.rejected" and bad["order_id"] is None
    assert "ZZZZ" in bad["message"] and "error 200" in bad["message"]


def test_rejected_orders_exit_3(
    fake_gateway: FakeGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_gateway.reject_orders()
    assert submit(fake_gateway, tmp_path) == 3
    records = journal(tmp_path)
    assert [r["event"] for r in records] == ["order.rejected"] * 5
    assert all("error 201" in r["message"] for r in records)
    assert "5 rejected; exit 3" in capsys.readouterr().out


def test_live_account_exits_4_and_sends_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeGateway(accounts=["U1234567"]) as gw:
        assert submit(gw, tmp_path) == 4
        assert gw.messages("placeOrder") == []
        assert gw.messages("reqContractDetails") == []
    assert "live account refused" in capsys.readouterr().err
    assert journal(tmp_path) == []


def test_gateway_restarting_at_start_then_places_all(tmp_path: Path) -> None:
    with FakeGateway(scenario="restart:1") as gw:
        load = Load()
        assert submit(gw, tmp_path) == 0
        done = time.monotonic()
        assert gw.events("sim.restarted")
        # Measured from the port opening again (the gateway's record), not from the start
        # of the run: connected within one refused interval, the plan placed soon after.
        [reopened] = [e["at"] for e in gw.events("sim.listening")][1:]  # [0]: the start
        first_open = min(e["at"] for e in gw.events("sim.connection.open"))
        assert 0 <= first_open - reopened < 0.5 + load.slack(0.25), load
        assert done - reopened < load.slack(3)
        assert placed_refs(gw) == Counter(plan_refs())


def test_gateway_down_exits_1(
    fake_gateway: FakeGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_gateway.down()
    env = script_env(tmp_path, IBKR_CONNECT_MAX_TIME="1")
    assert submit(fake_gateway, tmp_path, env=env) == 1
    assert "could not connect" in capsys.readouterr().err
    assert journal(tmp_path) == []


def test_dry_run_places_nothing(fake_gateway: FakeGateway, tmp_path: Path) -> None:
    assert submit(fake_gateway, tmp_path, "--dry-run") == 0
    assert fake_gateway.messages("placeOrder") == []
    assert fake_gateway.messages("reqContractDetails")  # it did qualify
    records = journal(tmp_path)
    assert [r["event"] for r in records] == ["order.dry_run"] * 5
    assert all(r["order_id"] is None for r in records)


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        ([], {"IBKR_PORT": "seventy"}, "IBKR_PORT='seventy'"),
        ([], {"IBKR_ACK_TIMEOUT": "0"}, "IBKR_ACK_TIMEOUT='0'"),
        ([], {"IBKR_LOG_LEVEL": "LOUD"}, "IBKR_LOG_LEVEL='LOUD'"),
        (["--ack-timeout", "-1"], {}, "--ack-timeout"),
        (["--journal", "/proc/nope/j.jsonl"], {}, "cannot open journal"),
    ],
)
def test_bad_configuration_exits_2_with_one_line(
    fake_gateway: FakeGateway,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    env: dict[str, str],
    needle: str,
) -> None:
    argv = [
        "--plan",
        str(PLAN),
        "--port",
        str(fake_gateway.port),
        "--journal",
        str(tmp_path / "j.jsonl"),
        *args,
    ]
    assert submit_job.main(argv, env=script_env(tmp_path, **env)) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    human = [line for line in err.splitlines() if not line.startswith("{")]
    assert len([line for line in human if "error" in line]) == 1
    assert fake_gateway.events("sim.connection.open") == []


def test_help_lists_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert submit_job.main(["--help"]) == 0
    assert close_job.main(["--help"]) == 0
    out = capsys.readouterr().out
    for code in ("0 ", "1 ", "2 ", "3 ", "4 ", "130", "143"):
        assert f"\n  {code}" in out


def test_ctrl_c_exits_130(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(submit_job, "load_plan", interrupted)
    assert submit_job.main(["--plan", str(PLAN)], env=script_env(tmp_path)) == 130


# --------------------------------------------------------------------------- close_positions
def closes(gw: FakeGateway) -> dict[str, tuple[str, float, str]]:
    """client 11's orders by ref: (action, quantity, order type)."""
    return {
        o.order_ref: (o.action, o.quantity, o.order_type)
        for o in gw.state.order_list()
        if o.client_id == 11
    }


def test_close_positions_without_open_orders(tmp_path: Path) -> None:
    start = [SimPosition(ACCOUNT, "AAPL", 100, 150.0), SimPosition(ACCOUNT, "MSFT", -5, 400.0)]
    with FakeGateway(positions=start) as gw:
        assert close(gw, tmp_path) == 0
        day = trading_date()
        assert closes(gw) == {
            close_ref("AAPL", day): ("SELL", 100, "MKT"),
            close_ref("MSFT", day): ("BUY", 5, "MKT"),
        }
        assert positions(gw) == {}
        assert gw.messages("cancelOrder") == [] and gw.messages("reqGlobalCancel") == []
    records = journal(tmp_path)
    assert [(r["event"], r["contract"]["symbol"], r["quantity"]) for r in records] == [
        ("order.submitted", "AAPL", 100),
        ("order.submitted", "MSFT", 5),
    ]


def test_close_cancels_other_clients_orders_first(
    fake_gateway: FakeGateway, tmp_path: Path
) -> None:
    assert submit(fake_gateway, tmp_path) == 0  # AAPL+SPY filled; MSFT, IBM, SPY bracket rest
    assert positions(fake_gateway) == {"AAPL": 10, "SPY": 2}
    assert len(open_orders(fake_gateway)) == 5
    assert close(fake_gateway, tmp_path) == 0
    assert open_orders(fake_gateway) == []
    assert positions(fake_gateway) == {}
    assert sorted(closes(fake_gateway).values()) == [("SELL", 2, "MKT"), ("SELL", 10, "MKT")]
    # Every cancel was confirmed before the first closing order went out.
    cancels = fake_gateway.messages("cancelOrder")
    first_close = fake_gateway.messages("placeOrder", client_id=11)[0]
    assert cancels and all(c.client_id == 10 for c in cancels)  # via the owner's client id
    assert max(c.at for c in cancels) < first_close.at
    events = Counter(r["event"] for r in journal(tmp_path)[5:])
    assert events == {"order.cancelled": 5, "order.submitted": 2}


def test_close_only_the_given_symbols(fake_gateway: FakeGateway, tmp_path: Path) -> None:
    assert submit(fake_gateway, tmp_path) == 0
    assert close(fake_gateway, tmp_path, "--symbols", "aapl,msft") == 0
    assert positions(fake_gateway) == {"SPY": 2}
    left = sorted(o.symbol for o in open_orders(fake_gateway))
    assert left == ["IBM", "SPY", "SPY", "SPY"]  # MSFT's resting order was cancelled
    assert list(closes(fake_gateway).values()) == [("SELL", 10, "MKT")]


def test_close_moc_rerun_skips_the_pending_closing_order(tmp_path: Path) -> None:
    with FakeGateway(positions=[SimPosition(ACCOUNT, "AAPL", 100, 150.0)]) as gw:
        assert close(gw, tmp_path, "--moc") == 0
        assert list(closes(gw).values()) == [("SELL", 100, "MOC")]
        assert close(gw, tmp_path, "--moc") == 0
        assert len(gw.messages("placeOrder")) == 1
        assert gw.messages("cancelOrder") == []  # the pending close is ours: kept
        assert [o.status for o in open_orders(gw)] == ["Submitted"]
    assert [r["event"] for r in journal(tmp_path)] == ["order.submitted", "order.skipped"]


@contextlib.contextmanager
def an_owner_protecting_aapl(gw: FakeGateway) -> Iterator[None]:
    """Client 10 stays connected inside the block, with its stop "protect" on 100 AAPL open."""
    owner = IB()
    owner.connect("127.0.0.1", gw.port, clientId=10, timeout=2)
    try:
        stop = compat.StopOrder("SELL", 100, 140.0, orderRef="protect")
        owner.placeOrder(compat.Stock("AAPL", "SMART", "USD"), stop)
        assert gw.wait_for(lambda: len(open_orders(gw)) == 1, timeout=5)
        yield
    finally:
        owner.disconnect()


def test_close_refuses_a_symbol_whose_order_owner_is_connected(tmp_path: Path) -> None:
    with FakeGateway(
        positions=[SimPosition(ACCOUNT, "AAPL", 100, 150.0), SimPosition(ACCOUNT, "MSFT", 5, 400.0)]
    ) as gw:
        with an_owner_protecting_aapl(gw):
            assert close(gw, tmp_path) == 3
        assert [o.order_ref for o in open_orders(gw)] == ["protect"]  # not touched
        assert positions(gw) == {"AAPL": 100}  # not closed under a live stop
        assert list(closes(gw).values()) == [("SELL", 5, "MKT")]  # MSFT was still closed
    records = {r["event"]: r for r in journal(tmp_path)}
    assert "client id 10" in records["order.not_placed"]["message"]
    assert records["order.cancel_failed"]["order_ref"] == "protect"


def test_close_global_cancel_handles_a_connected_owner(tmp_path: Path) -> None:
    with FakeGateway(positions=[SimPosition(ACCOUNT, "AAPL", 100, 150.0)]) as gw:
        with an_owner_protecting_aapl(gw):
            assert close(gw, tmp_path, "--global-cancel") == 0
        assert len(gw.messages("reqGlobalCancel")) == 1
        assert open_orders(gw) == [] and positions(gw) == {}


def test_close_dry_run_changes_nothing(fake_gateway: FakeGateway, tmp_path: Path) -> None:
    assert submit(fake_gateway, tmp_path) == 0
    assert close(fake_gateway, tmp_path, "--dry-run") == 0
    assert len(open_orders(fake_gateway)) == 5
    assert positions(fake_gateway) == {"AAPL": 10, "SPY": 2}
    assert fake_gateway.messages("placeOrder", client_id=11) == []
    assert fake_gateway.messages("cancelOrder") == []
    assert Counter(r["event"] for r in journal(tmp_path)[5:]) == {"order.dry_run": 7}


def test_close_bad_symbol_exits_2(fake_gateway: FakeGateway, tmp_path: Path) -> None:
    assert close(fake_gateway, tmp_path, "--symbols", "AAPL,no way!") == 2
    assert fake_gateway.events("sim.connection.open") == []


# --------------------------------------------------------------------------- legacy
def test_legacy_example_works_with_the_real_client(
    fake_gateway: FakeGateway, tmp_path: Path
) -> None:
    fake_gateway.state.set_position(SimPosition(ACCOUNT, "AAPL", 7, 150.0))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "IBKR_CONNECT_TIMEOUT": "2",
        "IBKR_CONNECT_MAX_RETRIES": "2",
    }
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "docs" / "examples" / "legacy_connect.py"),
            str(fake_gateway.port),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "connected: account DU1234567, 1 positions" in result.stdout
    assert "disconnected: True" in result.stdout
    assert [m.client_id for m in fake_gateway.messages("startApi")] == [10]
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert any(line["event"] == "ibkr.connect.success" for line in lines), result.stderr

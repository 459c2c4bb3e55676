"""Fault-matrix rows for edited plans (issue 11 item 3): one plan file run again after
it was edited, with ``--amend``, and on a later day.

Each row runs ``submit_orders.py`` as cron does (a subprocess, the real client, the
simulated gateway, the loopback Bot API) and checks the exit code, the summary, the
journal and what the gateway received. The rows are in docs/reliability.md
("Edited plans"); :func:`test_the_plan_rows_are_in_the_reliability_table` checks them.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from test_fault_matrix import (
    SUBMIT,
    Run,
    check_table,
    defined_tests,
    gateway_closed_cleanly,
    job_env,
    journal_records,
    no_secret_leaked,
    run_job,
)

from ibkr_resilience.simulator import FakeGateway, PlaceOrder
from ibkr_resilience.testing import BotApi

# Row id -> exit code; docs/reliability.md states the same.
EXPECTED_PLANS: dict[str, int] = {
    "edited_plan_rerun": 3,
    "amend_working_order": 0,
    "later_day_rerun": 0,
    "row_inserted_without_ids": 3,
    "id_retyped_in_other_case": 0,
}

HEADER = "id,symbol,side,quantity,order_type,limit_price,tif"
PLAN = {
    "aapl": "aapl,AAPL,BUY,10,LMT,190,DAY",
    "msft": "msft,MSFT,BUY,5,LMT,405,DAY",
    "ibm": "ibm,IBM,BUY,51,LMT,212,DAY",  # the typo: 51 meant 15
    "spy": "spy,SPY,BUY,2,LMT,561,DAY",
}


def write_plan(tmp_path: Path, *rows: str, header: str = HEADER) -> Path:
    path = tmp_path / "plans" / "2026-11-30.csv"
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def submit(gw: FakeGateway, plan: Path, tmp_path: Path, bot: BotApi, *extra: str) -> Run:
    cmd = [sys.executable, str(SUBMIT), "--plan", str(plan), "--port", str(gw.port), *extra]
    run = run_job(cmd, job_env(tmp_path, bot.url), tmp_path)
    assert "Traceback" not in run.stderr, run.stderr
    no_secret_leaked(run)
    return run


def sent(gw: FakeGateway) -> list[PlaceOrder]:
    return [r.request for r in gw.messages("placeOrder") if isinstance(r.request, PlaceOrder)]


NOT_OUTCOMES = {"run.start", "order.sending", "order.amending"}
"""Records before the outcome; tests/test_fault_matrix_records.py checks them."""


def events_of(records: list[dict[str, Any]], run_id: str) -> Counter[str]:
    """The run's outcome records, by event."""
    return Counter(
        r["event"] for r in records if r["run_id"] == run_id and r["event"] not in NOT_OUTCOMES
    )


def last_run_id(tmp_path: Path) -> str:
    return str(journal_records(tmp_path)[-1]["run_id"])


def test_edited_plan_rerun(fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path) -> None:
    """One row's typo fixed, a row moved, a row added, a row removed: the re-run places
    only the new row; the fixed row is reported "changed after it was placed: not
    re-placed" (exit 3), the removed row is reported and its order left working."""
    gw = fake_gateway
    plan = write_plan(tmp_path, PLAN["aapl"], PLAN["msft"], PLAN["ibm"], PLAN["spy"])
    first = submit(gw, plan, tmp_path, bot_api)
    assert first.code == 0, first.stdout + first.stderr
    assert len(sent(gw)) == 4
    ibm_id = next(o.order_id for o in sent(gw) if o.order_ref.endswith(":ibm"))

    edited = write_plan(
        tmp_path,
        "tsla,TSLA,BUY,1,LMT,250,DAY",  # added
        PLAN["ibm"].replace(",51,", ",15,"),  # typo fixed
        PLAN["msft"],  # moved up
        PLAN["aapl"],
        # spy removed
    )
    second = submit(gw, edited, tmp_path, bot_api)
    assert second.code == EXPECTED_PLANS["edited_plan_rerun"], second.stdout + second.stderr
    orders = sent(gw)
    assert len(orders) == 5 and orders[-1].order_ref.endswith(":tsla"), orders
    assert Counter(o.order_ref for o in orders).most_common(1)[0][1] == 1  # no ref twice
    assert "changed after it was placed: not re-placed (quantity 51 -> 15)" in second.stdout
    assert "removed from the plan after it was placed" in second.stdout
    records = journal_records(tmp_path)
    run_id = last_run_id(tmp_path)
    assert events_of(records, run_id) == Counter(
        {"order.submitted": 1, "order.changed": 1, "order.skipped": 2, "order.removed": 1}
    )
    changed = next(r for r in records if r["event"] == "order.changed")
    assert changed["order_id"] == ibm_id and changed["quantity"] == 15
    assert changed["placed_fingerprint"] != changed["fingerprint"]
    # The removed row's order is known from the gateway; what it was placed with, from
    # the journal.
    placed_spy = next(
        r for r in records if r["event"] == "order.submitted" and r["order_ref"].endswith(":spy")
    )
    removed = next(r for r in records if r["event"] == "order.removed")
    assert removed["placed_fingerprint"] == placed_spy["fingerprint"] is not None
    # The gateway still has the IBM order as placed, and the removed SPY order working.
    by_ref = {o.order_ref.rpartition(":")[2]: o for o in gw.state.order_list()}
    assert by_ref["ibm"].quantity == 51
    assert by_ref["spy"].status == "Submitted"
    assert gw.messages("cancelOrder") == []

    third = submit(gw, edited, tmp_path, bot_api)  # still reported, still nothing placed
    assert third.code == 3 and len(sent(gw)) == 5
    gateway_closed_cleanly(gw)


def test_amend_working_order(fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path) -> None:
    """A working order's row changed (quantity and limit price): without ``--amend`` it is
    reported (exit 3); with it, the order is modified in place (placeOrder with the same
    order id, same perm id at the gateway) and journaled ``order.amended`` (exit 0); a
    run after that skips it."""
    gw = fake_gateway
    plan = write_plan(tmp_path, PLAN["aapl"], PLAN["msft"])
    assert submit(gw, plan, tmp_path, bot_api).code == 0
    (before,) = [o for o in gw.state.order_list() if o.symbol == "MSFT"]
    edited = write_plan(tmp_path, PLAN["aapl"], "msft,MSFT,BUY,7,LMT,404.5,DAY")

    reported = submit(gw, edited, tmp_path, bot_api)
    assert reported.code == 3 and len(sent(gw)) == 2
    assert "--amend modifies the working order in place" in reported.stdout

    amended = submit(gw, edited, tmp_path, bot_api, "--amend")
    assert amended.code == EXPECTED_PLANS["amend_working_order"], amended.stdout + amended.stderr
    orders = sent(gw)
    assert len(orders) == 3 and orders[-1].order_id == before.order_id
    (after,) = [o for o in gw.state.order_list() if o.symbol == "MSFT"]
    assert (after.order_id, after.perm_id) == (before.order_id, before.perm_id)
    assert (after.quantity, after.lmt_price, after.status) == (7, 404.5, "Submitted")
    assert len(gw.state.order_list()) == 2  # modified, not added
    run_id = last_run_id(tmp_path)
    assert events_of(journal_records(tmp_path), run_id) == Counter(
        {"order.skipped": 1, "order.amended": 1}
    )
    # The modification was announced (fsynced) before it was handed to the client.
    msft = [
        r for r in journal_records(tmp_path) if r["run_id"] == run_id and r.get("row_id") == "msft"
    ]
    assert [r["event"] for r in msft] == ["order.amending", "order.amended"]
    assert msft[0]["order_id"] == before.order_id and msft[0]["quantity"] == 7

    again = submit(gw, edited, tmp_path, bot_api)
    assert again.code == 0 and len(sent(gw)) == 3
    assert events_of(journal_records(tmp_path), last_run_id(tmp_path)) == Counter(
        {"order.skipped": 2}
    )
    gateway_closed_cleanly(gw)


def test_later_day_rerun(fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path) -> None:
    """Yesterday's run placed every row (one never confirmed); today the gateway has
    neither those orders (DAY orders expired) nor their executions (same-day only). The
    journal remembers: nothing is placed again, each row is skipped as placed on its day
    (an unconfirmed row is placed again only on its own day, when the gateway's
    executions can still show it)."""
    gw = fake_gateway
    plan = write_plan(tmp_path, PLAN["aapl"], PLAN["msft"])
    assert submit(gw, plan, tmp_path, bot_api).code == 0
    journal = tmp_path / "journal.jsonl"
    yesterday = f"{datetime.now(UTC) - timedelta(days=1):%Y-%m-%d}"
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    for record in lines:  # as if written yesterday; MSFT's ack never came
        record["time"] = re.sub(r"^\d{4}-\d{2}-\d{2}", yesterday, record["time"])
        if record.get("row_id") == "msft":
            record["event"] = "order.unconfirmed"
    journal.write_text("".join(json.dumps(r) + "\n" for r in lines))
    with gw.state.lock:
        gw.state.orders.clear()
        gw.state.executions.clear()

    rerun = submit(gw, plan, tmp_path, bot_api)
    assert rerun.code == EXPECTED_PLANS["later_day_rerun"], rerun.stdout + rerun.stderr
    assert len(sent(gw)) == 2  # yesterday's two, nothing today
    assert f"already placed (submitted on {yesterday}, journal)" in rerun.stdout
    assert f"already placed (unconfirmed on {yesterday}, journal)" in rerun.stdout
    assert events_of(journal_records(tmp_path), last_run_id(tmp_path)) == Counter(
        {"order.skipped": 2}
    )
    gateway_closed_cleanly(gw)


def test_the_plan_rows_are_in_the_reliability_table() -> None:
    """docs/reliability.md has a row per entry of ``EXPECTED_PLANS``, naming its test here
    and stating the exit code that test asserts."""
    check_table(EXPECTED_PLANS, defined_tests(__file__))


def test_row_inserted_without_ids(
    fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path
) -> None:
    """A plan without an id column: its rows are numbered by position, so a row inserted
    on top shifts every number. The shifted rows are reported changed, and the last one,
    under a number never used, is recognised by its content as already placed: no
    order is placed twice (before: a second, identical MSFT order)."""
    gw = fake_gateway
    header = "symbol,side,quantity,order_type,limit_price"
    aapl, msft, ibm = "AAPL,BUY,1,LMT,100", "MSFT,BUY,2,LMT,200", "IBM,BUY,3,LMT,150"
    assert submit(gw, write_plan(tmp_path, aapl, msft, header=header), tmp_path, bot_api).code == 0
    shifted = submit(gw, write_plan(tmp_path, ibm, aapl, msft, header=header), tmp_path, bot_api)
    assert shifted.code == EXPECTED_PLANS["row_inserted_without_ids"], shifted.stdout
    assert len(sent(gw)) == 2  # nothing new reached the gateway
    symbols = Counter(o.symbol for o in gw.state.order_list())
    assert symbols == Counter({"AAPL": 1, "MSFT": 1})
    assert events_of(journal_records(tmp_path), last_run_id(tmp_path)) == Counter(
        {"order.changed": 2, "order.skipped": 1}
    )
    assert "rows without an id are numbered by position and moved" in shifted.stdout


def test_id_retyped_in_other_case(
    fake_gateway: FakeGateway, bot_api: BotApi, tmp_path: Path
) -> None:
    """Ids are case-insensitive: ``Abc-1`` re-typed as ``abc-1`` is the same row, skipped
    (before: a new orderRef, a second identical order, and the first reported removed)."""
    gw = fake_gateway
    assert (
        submit(gw, write_plan(tmp_path, "Abc-1,AAPL,BUY,1,LMT,100,DAY"), tmp_path, bot_api).code
        == 0
    )
    again = submit(gw, write_plan(tmp_path, "abc-1,AAPL,BUY,1,LMT,100,DAY"), tmp_path, bot_api)
    assert again.code == EXPECTED_PLANS["id_retyped_in_other_case"], again.stdout
    assert len(sent(gw)) == 1
    assert events_of(journal_records(tmp_path), last_run_id(tmp_path)) == Counter(
        {"order.skipped": 1}
    )

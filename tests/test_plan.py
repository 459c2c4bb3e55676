"""The order plan: every validation rule, the plan id / orderRef scheme, and the orders built."""

from __future__ import annotations

import csv
import itertools
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from ibkr_resilience._app.jobs.plan import (
    MAX_ORDER_REF_LEN,
    MAX_PLAN_BYTES,
    Limits,
    Plan,
    PlanError,
    PlannedOrder,
    check_plan_id,
    load_plan,
    parse_plan,
)
from ibkr_resilience._connect import compat

HEADER = "symbol,side,quantity,order_type,limit_price,stop_price,tif,take_profit,stop_loss"
GOOD_ROW = "AAPL,BUY,10,MKT,,,DAY,,"
REPO = Path(__file__).resolve().parents[1]
UNSET = compat.UNSET_DOUBLE


def write(tmp_path: Path, text: str, name: str = "plan.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def plan_error(tmp_path: Path, text: str) -> PlanError:
    with pytest.raises(PlanError) as info:
        load_plan(write(tmp_path, text))
    return info.value


def ids(plan: Plan) -> list[str]:
    return [o.row_id for o in plan]


# --- one bad row, one rule: the problem names the CSV line (header = line 1) ---------------

BAD_ROWS = {
    "unknown side": ("AAPL,HOLD,10,MKT,,,DAY,,", "side 'HOLD' is not one of BUY, SELL"),
    "empty side": ("AAPL,,10,MKT,,,DAY,,", "side is empty"),
    "zero quantity": ("AAPL,BUY,0,MKT,,,DAY,,", "quantity '0' must be greater than zero"),
    "negative quantity": ("AAPL,BUY,-5,MKT,,,DAY,,", "quantity '-5' must be greater than zero"),
    "non-numeric quantity": ("AAPL,BUY,ten,MKT,,,DAY,,", "quantity 'ten' is not a number"),
    "nan quantity": ("AAPL,BUY,nan,MKT,,,DAY,,", "quantity 'nan' is not a number"),
    "empty quantity": ("AAPL,BUY,,MKT,,,DAY,,", "quantity is empty"),
    "fractional quantity": ("AAPL,BUY,1.5,MKT,,,DAY,,", "must be a whole number of shares"),
    "unknown order type": ("AAPL,BUY,10,LIMIT,190,,DAY,,", "order_type 'LIMIT' is not one of"),
    "LMT without limit": ("AAPL,BUY,10,LMT,,,DAY,,", "LMT order needs a limit_price"),
    "STP LMT without limit": ("AAPL,BUY,10,STP LMT,,195,DAY,,", "STP LMT order needs a limit_"),
    "LOC without limit": ("AAPL,BUY,10,LOC,,,DAY,,", "LOC order needs a limit_price"),
    "STP without stop": ("AAPL,BUY,10,STP,,,DAY,,", "STP order needs a stop_price"),
    "STP LMT without stop": ("AAPL,BUY,10,STP LMT,196,,DAY,,", "STP LMT order needs a stop_"),
    "MKT with limit": ("AAPL,BUY,10,MKT,190,,DAY,,", "MKT order does not use a limit_price"),
    "MOC with limit": ("AAPL,BUY,10,MOC,190,,DAY,,", "MOC order does not use a limit_price"),
    "LMT with stop": ("AAPL,BUY,10,LMT,190,185,DAY,,", "LMT order does not use a stop_price"),
    "LOC with stop": ("AAPL,BUY,10,LOC,190,185,DAY,,", "LOC order does not use a stop_price"),
    "zero limit": ("AAPL,BUY,10,LMT,0,,DAY,,", "limit_price '0' must be greater than zero"),
    "negative stop": ("AAPL,SELL,10,STP,,-1,DAY,,", "stop_price '-1' must be greater than zero"),
    "text price": ("AAPL,BUY,10,LMT,abc,,DAY,,", "limit_price 'abc' is not a number"),
    "infinite price": ("AAPL,BUY,10,LMT,inf,,DAY,,", "limit_price 'inf' is not a number"),
    "zero take profit": ("AAPL,BUY,10,LMT,190,,DAY,0,180", "take_profit '0' must be greater"),
    "BUY tp below entry": ("AAPL,BUY,10,LMT,190,,DAY,185,180", "BUY bracket legs are on the wrong"),
    "BUY sl above entry": ("AAPL,BUY,10,LMT,190,,DAY,200,195", "BUY bracket legs are on the wrong"),
    "SELL tp above entry": ("AAPL,SELL,10,LMT,190,,DAY,200,195", "SELL bracket legs are on the"),
    "SELL sl below entry": ("AAPL,SELL,10,LMT,190,,DAY,180,185", "SELL bracket legs are on the"),
    "BUY MKT tp below sl": ("AAPL,BUY,10,MKT,,,DAY,180,200", "need take_profit (180) > stop_loss"),
    "SELL MKT tp above sl": ("AAPL,SELL,10,MKT,,,DAY,200,180", "need take_profit (200) < stop_"),
    "BUY STP tp below stop": ("AAPL,BUY,10,STP,,195,DAY,190,180", "> stop_price (195) >"),
    "BUY STP LMT sl above limit": (
        "AAPL,BUY,10,STP LMT,196,195,DAY,210,197",
        "> limit_price (196)",
    ),
    "tp without sl": ("AAPL,BUY,10,LMT,190,,DAY,200,", "a bracket needs both take_profit and"),
    "sl without tp": ("AAPL,BUY,10,LMT,190,,DAY,,180", "a bracket needs both take_profit and"),
    "bracket on MOC": ("AAPL,BUY,10,MOC,,,DAY,200,180", "cannot be attached to a MOC order"),
    "bracket on LOC": ("AAPL,BUY,10,LOC,190,,DAY,200,180", "cannot be attached to a LOC order"),
    "bracket OPG": ("AAPL,BUY,10,LMT,190,,OPG,200,180", "a bracket must be DAY or GTC, not OPG"),
    "unknown tif": ("AAPL,BUY,10,MKT,,,IOC,,", "tif 'IOC' is not one of DAY, GTC, OPG"),
    "OPG on STP": ("AAPL,SELL,10,STP,,180,OPG,,", "tif OPG is not allowed for STP orders"),
    "OPG on STP LMT": ("AAPL,SELL,10,STP LMT,179,180,OPG,,", "tif OPG is not allowed for STP"),
    "GTC on MOC": ("AAPL,BUY,10,MOC,,,GTC,,", "tif GTC is not allowed for MOC orders"),
    "OPG on LOC": ("AAPL,BUY,10,LOC,190,,OPG,,", "tif OPG is not allowed for LOC orders"),
    "empty symbol": (",BUY,10,MKT,,,DAY,,", "symbol is empty"),
    "bad symbol": ("AAPL!,BUY,10,MKT,,,DAY,,", "symbol 'AAPL!' is not a ticker symbol"),
    "too many cells": ("AAPL,BUY,10,MKT,,,DAY,,,x", "value 'x' in a column with no header"),
}


@pytest.mark.parametrize("row, message", BAD_ROWS.values(), ids=BAD_ROWS.keys())
def test_each_rule_reports_the_bad_rows_line(tmp_path: Path, row: str, message: str) -> None:
    err = plan_error(tmp_path, f"{HEADER}\n{GOOD_ROW}\n{row}\n{GOOD_ROW}\n")
    assert any(p.startswith("line 3: ") and message in p for p in err.problems), err.problems
    assert all(p.startswith("line 3: ") for p in err.problems), "good rows must not be blamed"


OPTIONAL_COLUMN_ROWS = {
    "sec_type not STK": ("sec_type", "OPT", "sec_type 'OPT' is not one of STK"),
    "bad currency": ("currency", "US", "currency 'US' is not a 3-letter currency code"),
    "bad exchange": ("exchange", "SM ART", "exchange 'SM ART' is not an exchange code"),
    "id with colon": ("id", "a:b", "id 'a:b' must be 1-14 letters"),
    "id too long": ("id", "x" * 15, "must be 1-14 letters"),
}


@pytest.mark.parametrize(
    "column, value, message", OPTIONAL_COLUMN_ROWS.values(), ids=OPTIONAL_COLUMN_ROWS.keys()
)
def test_optional_column_rules(tmp_path: Path, column: str, value: str, message: str) -> None:
    text = f"symbol,side,quantity,order_type,{column}\nAAPL,BUY,1,MKT,\nAAPL,BUY,1,MKT,{value}\n"
    err = plan_error(tmp_path, text)
    assert len(err.problems) == 1, err.problems
    assert err.problems[0].startswith("line 3: ") and message in err.problems[0]


def test_duplicate_ids_name_both_lines_case_insensitively(tmp_path: Path) -> None:
    text = (
        "id,symbol,side,quantity,order_type\n"
        "a1,AAPL,BUY,1,MKT\nb,MSFT,BUY,1,MKT\nA1,IBM,BUY,1,MKT\n"
    )
    err = plan_error(tmp_path, text)
    assert err.problems == ["line 4: duplicate id 'A1' (first used on line 2)"]


def test_explicit_id_colliding_with_a_default_row_number_is_a_duplicate(tmp_path: Path) -> None:
    text = "id,symbol,side,quantity,order_type\n,AAPL,BUY,1,MKT\n1,MSFT,BUY,1,MKT\n"
    err = plan_error(tmp_path, text)
    assert err.problems == ["line 3: duplicate id '1' (first used on line 2)"]


@pytest.mark.parametrize("column", ["symbol", "side", "quantity", "order_type"])
def test_missing_required_column_is_reported_once_on_the_header(
    tmp_path: Path, column: str
) -> None:
    columns = ["symbol", "side", "quantity", "order_type"]
    values = {"symbol": "AAPL", "side": "BUY", "quantity": "1", "order_type": "MKT"}
    kept = [c for c in columns if c != column]
    rows = "\n".join(",".join(values[c] for c in kept) for _ in range(3))
    err = plan_error(tmp_path, f"{','.join(kept)}\n{rows}\n")
    assert err.problems == [f"line 1: missing required column '{column}'"]


def test_unknown_column_suggests_the_close_match_and_rows_are_still_checked(
    tmp_path: Path,
) -> None:
    err = plan_error(tmp_path, f"{HEADER},limit_prce\n{GOOD_ROW},190\nAAPL,BUY,0,MKT,,,DAY,,,\n")
    assert err.problems == [
        "line 1: unknown column 'limit_prce' (did you mean 'limit_price'?)",
        "line 3: quantity '0' must be greater than zero",
    ]


def test_duplicate_column(tmp_path: Path) -> None:
    err = plan_error(tmp_path, "symbol,side,side,quantity,order_type\nAAPL,BUY,BUY,1,MKT\n")
    assert err.problems == ["line 1: column 'side' appears twice"]


def test_every_problem_of_every_row_in_one_error(tmp_path: Path) -> None:
    text = (
        f"{HEADER}\n{GOOD_ROW}\n"
        "AAPL,HOLD,10,MKT,,,DAY,,\n"  # line 3
        "\n"  # line 4: blank, skipped
        "MSFT,BUY,-1,LMT,,,DAY,,\n"  # line 5: two problems
        f"{GOOD_ROW}\n"
        "SPY,SELL,1,LMT,500,,DAY,510,490\n"  # line 7
    )
    err = plan_error(tmp_path, text)
    assert [p.split(":")[0] for p in err.problems] == ["line 3", "line 5", "line 5", "line 7"]
    summary, *details = str(err).splitlines()
    assert summary == f"invalid order plan {tmp_path / 'plan.csv'}: 4 problems on 3 lines (3, 5, 7)"
    assert [d.strip() for d in details] == err.problems
    assert isinstance(err, ValueError)


def test_line_numbers_follow_multi_line_quoted_cells(tmp_path: Path) -> None:
    text = 'id,symbol,side,quantity,order_type\n"a\nb",AAPL,BUY,1,MKT\nx,MSFT,BUY,0,MKT\n'
    err = plan_error(tmp_path, text)
    assert "line 2: id 'a\\nb' must be 1-14 letters, digits, '_', '.' or '-'" in err.problems
    assert "line 4: quantity '0' must be greater than zero" in err.problems


# --- file-level problems: one-line messages -----------------------------------------------


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    err = plan_error(tmp_path, text)
    assert "is empty" in str(err) and "\n" not in str(err)
    assert err.problems == [str(err)]


def test_header_without_orders(tmp_path: Path) -> None:
    err = plan_error(tmp_path, f"{HEADER}\n\n")
    assert err.problems == ["line 1: the plan has a header but no orders"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PlanError) as info:
        load_plan(tmp_path / "nope.csv")
    assert (
        str(info.value)
        == f"cannot read order plan {tmp_path / 'nope.csv'}: No such file or directory"
    )


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="cannot read order plan"):
        load_plan(tmp_path)


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "plan.csv"
    path.write_bytes(f"{HEADER}\n".encode() + "MÜNCHEN,BUY,1,MKT,,,DAY,,\n".encode("latin-1"))
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert "\n" not in str(info.value)
    assert re.fullmatch(
        r"order plan .* is not UTF-8 text \(byte 0xdc at offset \d+\).*", str(info.value)
    )


# --- a valid plan --------------------------------------------------------------------------

ALL_TYPES = """\
# Monday's plan; comments and blank lines are ignored
Symbol , SIDE,Quantity,Order Type,limit_price,stop_price,TIF,take_profit,stop_loss,\
exchange,currency,sec_type,id
aapl,buy,10,mkt,,,,,,,,,
MSFT, Sell ,5,lmt, 405.5 ,,gtc,,,,,,m1

IBM,BUY,3,STP,,215,DAY,,,NYSE,usd,stk,
SPY,SELL,2,stp_lmt,549.5,550,DAY,,,,,,
AMZN,BUY,4,MOC,,,DAY,,,,,,
TSLA,SELL,6,LOC,251,,,,,,,,
SPY,BUY,3,LMT,561,,DAY,575,550,,,,br
"""


def test_valid_plan_with_every_order_type_and_a_bracket(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, ALL_TYPES))
    assert len(plan) == 7
    assert ids(plan) == ["1", "m1", "3", "4", "5", "6", "br"]  # default id: data row number
    assert [o.line for o in plan] == [3, 4, 6, 7, 8, 9, 10]
    aapl, msft, ibm, spy, amzn, tsla, bracket = plan
    assert (aapl.symbol, aapl.side, aapl.quantity, aapl.order_type) == ("AAPL", "BUY", 10, "MKT")
    assert (aapl.tif, aapl.exchange, aapl.currency, aapl.sec_type) == ("DAY", "SMART", "USD", "STK")
    assert (msft.side, msft.limit_price, msft.tif) == ("SELL", 405.5, "GTC")
    assert (ibm.order_type, ibm.stop_price, ibm.exchange) == ("STP", 215.0, "NYSE")
    assert (spy.order_type, spy.limit_price, spy.stop_price) == ("STP LMT", 549.5, 550.0)
    assert (amzn.order_type, amzn.limit_price) == ("MOC", None)
    assert (tsla.order_type, tsla.limit_price, tsla.tif) == ("LOC", 251.0, "DAY")
    assert (bracket.take_profit, bracket.stop_loss, bracket.is_bracket) == (575.0, 550.0, True)
    assert not aapl.is_bracket


def test_example_plans_are_valid_and_identical() -> None:
    example = REPO / "docs" / "examples" / "plan.csv"
    packaged = REPO / "ibkr_resilience" / "data" / "example_plan.csv"
    assert example.read_bytes() == packaged.read_bytes()
    plan = load_plan(example)
    assert {o.symbol for o in plan} <= {"AAPL", "MSFT", "SPY", "IBM", "AMZN", "TSLA"}
    assert {o.order_type for o in plan} == {"MKT", "LMT"}
    assert sum(o.is_bracket for o in plan) == 1


def test_bom_is_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "plan.csv"
    path.write_bytes(b"\xef\xbb\xbf" + f"{HEADER}\n{GOOD_ROW}\n".encode())
    assert load_plan(path).orders[0].symbol == "AAPL"


# --- plan id and orderRef --------------------------------------------------------------------


def test_plan_id_is_stable_across_loads(tmp_path: Path) -> None:
    path = write(tmp_path, ALL_TYPES)
    first, second = load_plan(path), load_plan(path)
    assert first.plan_id == second.plan_id
    assert [o.order_ref for o in first] == [o.order_ref for o in second]
    assert re.fullmatch(r"plan-[0-9a-f]{8}", first.plan_id)
    assert first.orders[1].order_ref == f"{first.plan_id}:m1"


def test_plan_id_survives_edits_and_the_row_fingerprint_follows_the_content(
    tmp_path: Path,
) -> None:
    """Item 3 of issue 11: the id names the plan, not its content, so every row keeps its
    orderRef when another row is edited; the edited row's fingerprint changes."""
    before = load_plan(write(tmp_path, ALL_TYPES))
    after = load_plan(write(tmp_path, ALL_TYPES.replace("aapl,buy,10", "aapl,buy,11")))
    assert before.plan_id == after.plan_id
    assert [o.order_ref for o in before] == [o.order_ref for o in after]
    changed = [
        o.row_id for o, n in zip(before, after, strict=True) if o.fingerprint != n.fingerprint
    ]
    assert len(changed) == 1
    assert after.orders[0].journal_fields()["fingerprint"] == after.orders[0].fingerprint


def test_same_file_name_in_two_directories_is_two_plans(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = load_plan(write(tmp_path / "a", ALL_TYPES, "2026-11-30.csv"))
    b = load_plan(write(tmp_path / "b", ALL_TYPES, "2026-11-30.csv"))
    assert a.plan_id.startswith("2026-11-30-") and b.plan_id.startswith("2026-11-30-")
    assert a.plan_id != b.plan_id


def test_a_symlink_names_the_plan_it_points_to(tmp_path: Path) -> None:
    target = write(tmp_path, ALL_TYPES, "2026-11-30.csv")
    (tmp_path / "today.csv").symlink_to(target)
    assert load_plan(tmp_path / "today.csv").plan_id == load_plan(target).plan_id


def test_explicit_plan_id_is_used_verbatim_and_checked(tmp_path: Path) -> None:
    path = write(tmp_path, ALL_TYPES)
    plan = load_plan(path, plan_id="momentum-2026-11-30")
    assert plan.orders[0].order_ref.startswith("momentum-2026-11-30:")
    assert check_plan_id("A.b_c-1") == "A.b_c-1"
    for bad in ("", "-x", "a:b", "x" * 22, "a b"):
        with pytest.raises(ValueError, match="plan id"):
            check_plan_id(bad)


def test_fingerprint_ignores_position_and_number_format() -> None:
    one = parse_plan("id,symbol,side,quantity,order_type,limit_price\na,AAPL,BUY,10,LMT,190\n")
    two = parse_plan(
        "# moved\nid,symbol,side,quantity,order_type,limit_price\n"
        "b,MSFT,SELL,1,MKT,\na,aapl,buy,10.0,lmt,190.00\n"
    )
    assert one.orders[0].fingerprint == two.orders[1].fingerprint
    assert one.orders[0].line != two.orders[1].line


def test_plan_id_changes_with_the_file_name_even_past_the_visible_stem(tmp_path: Path) -> None:
    monday = load_plan(write(tmp_path, ALL_TYPES, "orders-2024-05-06.csv"))
    tuesday = load_plan(write(tmp_path, ALL_TYPES, "orders-2024-05-07.csv"))
    assert monday.plan_id.startswith("orders-2024-")
    assert monday.plan_id != tuesday.plan_id


def test_plan_id_ignores_formatting(tmp_path: Path) -> None:
    plain = "symbol,side,quantity,order_type,limit_price\nAAPL,BUY,10,LMT,190\nMSFT,SELL,5,MKT,\n"
    styled = (
        "# reformatted\r\nOrder_Type , limit_price,SYMBOL,side,quantity,tif\r\n"
        "lmt,190.00,aapl, buy ,10,DAY\r\n\r\nMKT,,msft,Sell,5.0,\r\n"
    )
    assert parse_plan(plain).plan_id == parse_plan(styled).plan_id


def test_order_refs_stay_short_and_plain(tmp_path: Path) -> None:
    name = "A very long plan name, with (odd) characters! 2024.csv"
    text = f"id,{HEADER}\n{'x' * 14},AAPL,BUY,10,LMT,190,,DAY,200,180\n"
    plan = load_plan(write(tmp_path, text, name))
    refs = plan.orders[0].order_refs
    assert len(refs) == 3
    for ref in refs:
        assert len(ref) <= MAX_ORDER_REF_LEN
        assert re.fullmatch(r"[a-z0-9-]+:[A-Za-z0-9_.-]+(:tp|:sl)?", ref), ref


def test_by_ref_maps_every_leg_to_its_row(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, ALL_TYPES))
    refs = plan.by_ref()
    bracket = plan.orders[-1]
    assert refs[f"{bracket.order_ref}:tp"] is bracket
    assert refs[f"{bracket.order_ref}:sl"] is bracket
    assert len(refs) == 7 + 2


# --- orders and contracts --------------------------------------------------------------------


def build(order: PlannedOrder, start: int = 100) -> list[compat.Order]:
    return order.build_orders(itertools.count(start).__next__, account="DU1234567")


EXPECTED_ENTRY = {  # row id -> (class, orderType, lmtPrice, auxPrice)
    "1": (compat.MarketOrder, "MKT", UNSET, UNSET),
    "m1": (compat.LimitOrder, "LMT", 405.5, UNSET),
    "3": (compat.StopOrder, "STP", UNSET, 215.0),
    "4": (compat.StopLimitOrder, "STP LMT", 549.5, 550.0),
    "5": (compat.Order, "MOC", UNSET, UNSET),
    "6": (compat.Order, "LOC", 251.0, UNSET),
}


def test_plain_orders_map_every_type(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, ALL_TYPES))
    for row in plan.orders[:-1]:
        (order,) = build(row)
        cls, order_type, lmt, aux = EXPECTED_ENTRY[row.row_id]
        assert type(order) is cls, row.row_id
        assert (order.orderType, order.lmtPrice, order.auxPrice) == (order_type, lmt, aux)
        assert (order.action, order.totalQuantity, order.tif) == (row.side, row.quantity, row.tif)
        assert (order.orderRef, order.account, order.orderId) == (row.order_ref, "DU1234567", 100)
        assert order.transmit and order.parentId == 0 and not order.ocaGroup


def test_bracket_legs_are_linked_and_transmit_last(tmp_path: Path) -> None:
    bracket = load_plan(write(tmp_path, ALL_TYPES)).orders[-1]
    parent, take_profit, stop_loss = build(bracket, start=7)
    assert [o.orderId for o in (parent, take_profit, stop_loss)] == [7, 8, 9]
    assert [o.transmit for o in (parent, take_profit, stop_loss)] == [False, False, True]
    assert [o.parentId for o in (parent, take_profit, stop_loss)] == [0, 7, 7]
    assert [o.orderRef for o in (parent, take_profit, stop_loss)] == list(bracket.order_refs)
    assert (parent.orderType, parent.action, parent.lmtPrice) == ("LMT", "BUY", 561.0)
    assert (take_profit.orderType, take_profit.action, take_profit.lmtPrice) == ("LMT", "SELL", 575)
    assert (stop_loss.orderType, stop_loss.action, stop_loss.auxPrice) == ("STP", "SELL", 550)
    assert take_profit.ocaGroup == stop_loss.ocaGroup != ""
    assert take_profit.ocaType == stop_loss.ocaType == 2
    assert {o.totalQuantity for o in (parent, take_profit, stop_loss)} == {3}
    assert {o.account for o in (parent, take_profit, stop_loss)} == {"DU1234567"}
    assert {o.tif for o in (parent, take_profit, stop_loss)} == {"DAY"}


def test_sell_bracket_exits_with_buy_orders() -> None:
    plan = parse_plan(f"{HEADER}\nAAPL,SELL,2,MKT,,,GTC,180,200\n")
    parent, take_profit, stop_loss = build(plan.orders[0])
    assert (parent.action, take_profit.action, stop_loss.action) == ("SELL", "BUY", "BUY")
    assert (take_profit.lmtPrice, stop_loss.auxPrice) == (180.0, 200.0)
    assert {o.tif for o in (parent, take_profit, stop_loss)} == {"GTC"}


def test_contracts_are_stocks_one_per_distinct_key(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, ALL_TYPES))
    contracts = plan.contracts()
    assert list(contracts) == [
        ("AAPL", "STK", "SMART", "USD"),
        ("MSFT", "STK", "SMART", "USD"),
        ("IBM", "STK", "NYSE", "USD"),
        ("SPY", "STK", "SMART", "USD"),
        ("AMZN", "STK", "SMART", "USD"),
        ("TSLA", "STK", "SMART", "USD"),
    ]
    ibm = contracts[("IBM", "STK", "NYSE", "USD")]
    assert isinstance(ibm, compat.Stock)
    assert (ibm.symbol, ibm.secType, ibm.exchange, ibm.currency) == ("IBM", "STK", "NYSE", "USD")
    assert plan.orders[0].contract() is not plan.orders[0].contract()  # fresh each call


def test_journal_fields_are_plain_json(tmp_path: Path) -> None:
    bracket = load_plan(write(tmp_path, ALL_TYPES)).orders[-1]
    fields = json.loads(json.dumps(bracket.journal_fields()))
    assert fields["order_ref"] == bracket.order_ref
    assert fields["contract"] == {
        "symbol": "SPY",
        "sec_type": "STK",
        "exchange": "SMART",
        "currency": "USD",
    }
    assert (fields["side"], fields["quantity"], fields["take_profit"]) == ("BUY", 3, 575.0)


def test_load_plan_accepts_str_paths(tmp_path: Path) -> None:
    src = REPO / "docs" / "examples" / "plan.csv"
    shutil.copy(src, tmp_path / "plan.csv")
    assert load_plan(str(tmp_path / "plan.csv")).plan_id == load_plan(tmp_path / "plan.csv").plan_id
    assert load_plan(str(src)).orders == load_plan(src).orders


# -- hostile numbers, huge cells and the fat-finger guard --------------------------------------
PRICED_HEADER = "symbol,side,quantity,order_type,limit_price\n"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("AAPL,BUY,1e400,MKT,", "quantity '1e400' is out of range"),
        ("AAPL,BUY,10,LMT,1e-400", "limit_price '1e-400' is out of range"),
        ("AAPL,BUY,10,LMT,1e400", "limit_price '1e400' is out of range"),
    ],
)
def test_numbers_that_overflow_or_underflow_are_errors(row: str, message: str) -> None:
    with pytest.raises(PlanError) as info:
        parse_plan(PRICED_HEADER + row + "\n")
    assert message in str(info.value)


def test_a_cell_over_the_csv_field_limit_is_one_clear_error() -> None:
    huge = "A" * (csv.field_size_limit() + 10)
    with pytest.raises(PlanError) as info:
        parse_plan(PRICED_HEADER + f'"{huge}",BUY,1,MKT,\n')
    assert str(info.value).startswith(
        "invalid order plan plan: line 2 is not readable as CSV: field larger"
    )
    assert huge not in str(info.value)


def test_the_fat_finger_guard_names_the_row_and_the_setting() -> None:
    text = PRICED_HEADER + "AAPL,BUY,100,LMT,150\nAAPL,BUY,20000,MKT,\nMSFT,BUY,5000,LMT,400\n"
    with pytest.raises(PlanError) as info:
        parse_plan(text)
    problems = info.value.problems
    assert problems == [
        "line 3: quantity 20000 is over the per-order limit of 10000 shares "
        "(IBKR_MAX_ORDER_QUANTITY)",
        "line 4: notional 5000 x 400 = 2,000,000 is over the per-order limit of 1,000,000 "
        "(IBKR_MAX_ORDER_NOTIONAL)",
    ]
    assert len(parse_plan(text, limits=Limits(50_000, 5_000_000.0))) == 3


def test_a_plan_that_is_a_device_or_a_fifo_is_refused_without_reading_it(tmp_path: Path) -> None:
    """``--plan /dev/zero`` would read forever, a FIFO with no writer would block."""
    fifo = tmp_path / "plan.csv"
    os.mkfifo(fifo)
    for path in ("/dev/zero", str(fifo)):
        with pytest.raises(PlanError) as info:
            load_plan(path)
        assert "is not a regular file" in str(info.value)


def test_a_plan_over_the_size_cap_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.csv"
    with open(big, "wb") as f:
        f.truncate(MAX_PLAN_BYTES + 1)
    with pytest.raises(PlanError) as info:
        load_plan(big)
    assert f"(cap {MAX_PLAN_BYTES})" in str(info.value)

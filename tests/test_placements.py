"""The journal's memory of a plan and the per-row decision (``_app/jobs/placements.py``):
unit tests of the rules in docs/order-plan.md "Edited plans"."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ibkr_resilience._app.jobs.placements import read_placements, removed_refs, review
from ibkr_resilience._app.jobs.plan import PlannedOrder, parse_plan

TODAY = "2026-11-30"
PLAN = (
    "id,symbol,side,quantity,order_type,limit_price\na,AAPL,BUY,10,LMT,190\nb,MSFT,BUY,5,LMT,405\n"
)


def rows(text: str = PLAN) -> list[PlannedOrder]:
    return list(parse_plan(text, plan_id="p1"))


def record(row: PlannedOrder, event: str, day: str = TODAY, **extra: Any) -> dict[str, Any]:
    return {"time": f"{day}T10:00:00.000Z", "event": event, **row.journal_fields(), **extra}


def write(tmp_path: Path, *records: dict[str, Any], raw: str = "") -> Path:
    path = tmp_path / "journal.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + raw)
    return path


def test_latest_record_decides_and_a_rejection_clears_the_row(tmp_path: Path) -> None:
    a, b = rows()
    path = write(
        tmp_path,
        record(a, "order.sending"),
        record(a, "order.submitted", order_id=7),
        record(b, "order.sending"),
        record(b, "order.rejected"),
        {**record(a, "order.submitted"), "plan_id": "other"},
        raw='{"time": "2026-11-30T10:00:00.000Z", "event": "order.subm',  # torn line
    )
    placed = read_placements(path, "p1")
    assert set(placed) == {a.order_ref}
    assert placed[a.order_ref].order_id == 7
    assert placed[a.order_ref].fingerprint == a.fingerprint


def test_missing_journal_is_empty(tmp_path: Path) -> None:
    assert read_placements(tmp_path / "none.jsonl", "p1") == {}


def test_unconfirmed_today_and_not_at_the_gateway_is_placed_again(tmp_path: Path) -> None:
    a, _ = rows()
    today = read_placements(write(tmp_path, record(a, "order.unconfirmed")), "p1")
    assert review(a, {}, today[a.order_ref], TODAY).action == "place"
    earlier = read_placements(write(tmp_path, record(a, "order.unconfirmed", "2026-11-29")), "p1")
    assert review(a, {}, earlier[a.order_ref], TODAY).action == "skip"


def test_changed_content_is_reported_with_what_changed(tmp_path: Path) -> None:
    a, _ = rows()
    (edited, _) = rows(PLAN.replace("a,AAPL,BUY,10,LMT,190", "a,AAPL,BUY,12,LMT,191"))
    placed = read_placements(write(tmp_path, record(a, "order.submitted")), "p1")
    seen = review(edited, {}, placed[a.order_ref], TODAY)
    assert seen.action == "changed"
    assert seen.changes == ("quantity 10 -> 12", "limit_price 190 -> 191")
    assert seen.placed_fingerprint == a.fingerprint != edited.fingerprint


def test_changed_record_keeps_the_content_that_was_placed(tmp_path: Path) -> None:
    """An ``order.changed`` record carries the new row; what was placed stays the old."""
    a, _ = rows()
    (edited, _) = rows(PLAN.replace(",10,", ",12,"))
    path = write(tmp_path, record(a, "order.submitted"), record(edited, "order.changed"))
    assert read_placements(path, "p1")[a.order_ref].fingerprint == a.fingerprint


def test_removed_rows_come_from_the_journal_and_the_gateway(tmp_path: Path) -> None:
    a, b = rows()
    placed = read_placements(write(tmp_path, record(a, "order.submitted")), "p1")
    assert set(removed_refs("p1", [b], {}, placed)) == {a.order_ref}
    assert removed_refs("p1", [a, b], {}, placed) == {}

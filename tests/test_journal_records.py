"""No order without a record: ``run.start`` proves the journal writable before connecting,
``order.sending`` precedes every placeOrder (submit and close), and a journal failure once
connected names the orders whose outcome is missing (exit 7)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_scripts_e2e import PLAN, script_env

from ibkr_resilience._app.jobs import close as close_job
from ibkr_resilience._app.jobs import submit as submit_job
from ibkr_resilience._app.jobs.exits import ExitCode, UnrecordedOrders, stop_on_journal_failure
from ibkr_resilience._app.jobs.journal import (
    RUN_START,
    SENDING,
    SUBMITTED,
    Journal,
    JournalError,
    read_journal,
)
from ibkr_resilience.simulator import FakeGateway, PlaceOrder


def records(path: Path) -> list[dict[str, Any]]:
    return read_journal(path).records


def test_run_start_on_a_journal_that_takes_no_byte_fails() -> None:
    with Journal("/dev/full") as journal, pytest.raises(JournalError) as caught:
        journal.start_run(host="127.0.0.1", port=4002)
    assert str(caught.value) == "cannot write journal /dev/full: No space left on device"


def test_sending_is_unrecorded_until_its_outcome_is_written(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.jsonl") as journal:
        journal.sending(order_ref="p:a", order_id=7)
        legs = [{"order_ref": "p:b", "order_id": 8}, {"order_ref": "p:b:tp", "order_id": 9}]
        journal.sending(order_ref="p:b", order_id=8, legs=legs)
        assert journal.unrecorded() == [("p:a", 7), ("p:b", 8), ("p:b:tp", 9)]
        journal.append(SUBMITTED, order_ref="p:a", order_id=7)
        assert journal.unrecorded() == [("p:b", 8), ("p:b:tp", 9)]
        journal.append("gateway.connectivity", code=1100)  # no order_ref: changes nothing
        assert journal.unrecorded() == [("p:b", 8), ("p:b:tp", 9)]


def test_a_batch_left_open_by_a_signal_is_written_when_the_journal_closes(
    tmp_path: Path,
) -> None:
    """A signal turned into an exception can land between a batch's start and its
    owner's bookkeeping: the batch is then never ended, and every later outcome record
    (the interrupted run's ``order.unconfirmed``) would stay held in it. Closing the
    journal writes them, and a failure of that write does not replace the exception
    that is ending the run."""
    path = tmp_path / "j.jsonl"
    with Journal(path) as journal:
        journal.sending(order_ref="p:a", order_id=7)
        # Started, and its owner lost it (a traceback's frame still holds it).
        orphan = journal.batch()
        orphan.__enter__()
        journal.append("order.unconfirmed", order_ref="p:a", order_id=7)
        assert [r["event"] for r in records(path)] == [SENDING]
    assert [r["event"] for r in records(path)] == [SENDING, "order.unconfirmed"]
    del orphan

    with pytest.raises(SystemExit), Journal("/dev/full") as full:
        orphan = full.batch()
        orphan.__enter__()
        full.append("order.unconfirmed", order_ref="p:a", order_id=7)
        raise SystemExit(143)


class _Sent:
    def __init__(self, orders: list[tuple[str, int | None]]) -> None:
        self.orders = orders

    def unrecorded(self) -> list[tuple[str, int | None]]:
        return self.orders


def test_a_journal_failure_once_connected_is_exit_7_naming_the_orders() -> None:
    sent = _Sent([("plan-1:msft", 9), ("plan-1:msft:tp", None)])
    with pytest.raises(UnrecordedOrders) as caught, stop_on_journal_failure(sent):
        raise JournalError("cannot write journal /j: File too large")
    assert caught.value.code is ExitCode.UNRECORDED and int(ExitCode.UNRECORDED) == 7
    text = str(caught.value)
    assert "(cannot write journal /j: File too large)" in text
    assert "placing stopped at once" in text
    assert (
        "orders may be live and unrecorded: plan-1:msft (order id 9), "
        "plan-1:msft:tp (order id unknown)"
    ) in text


def test_a_journal_failure_with_every_sent_order_recorded_says_so() -> None:
    with (
        pytest.raises(UnrecordedOrders, match="no order sent is missing from it"),
        stop_on_journal_failure(_Sent([])),
    ):
        raise JournalError("cannot write journal /j: No space left on device")


def test_every_placed_order_was_announced_before_it_reached_the_gateway(
    fake_gateway: FakeGateway, tmp_path: Path
) -> None:
    """Submit then close: ``run.start`` first in each run; each placeOrder the gateway
    received has an earlier ``order.sending`` with its orderRef and order id, and an
    outcome after it."""
    gw = fake_gateway
    journal = tmp_path / "j.jsonl"
    common = ["--port", str(gw.port), "--journal", str(journal)]
    assert submit_job.main([*common, "--plan", str(PLAN)], env=script_env(tmp_path)) == 0
    assert close_job.main(common, env=script_env(tmp_path)) == 0
    got = records(journal)
    starts = [r for r in got if r["event"] == RUN_START]
    assert [r["script"] for r in starts] == ["submit_orders.py", "close_positions.py"]
    assert starts[0]["port"] == gw.port and starts[0]["client_id"] == 10
    assert starts[1]["client_id"] == 11 and starts[0]["dry_run"] is False
    announced: dict[str, int] = {}
    for record in got:
        if record["event"] == SENDING:
            for leg in record.get("legs") or [record]:
                announced[leg["order_ref"]] = leg["order_id"]
    sent = [m.request for m in gw.messages("placeOrder") if isinstance(m.request, PlaceOrder)]
    closing = [o for o in sent if o.order_ref.startswith("close:")]
    assert len(sent) == 7 + len(closing) and closing  # the plan's, then the closing orders
    for order in sent:
        assert announced.get(order.order_ref) == order.order_id, order.order_ref
    order_events = [r["event"] for r in got if r["event"] not in (RUN_START,)]
    sending_refs = [r["order_ref"] for r in got if r["event"] == SENDING]
    outcome_refs = [r["order_ref"] for r in got if r["event"] == SUBMITTED]
    assert sending_refs == outcome_refs  # each announced row has its outcome, in order
    assert order_events[0] == SENDING
    # Each outcome after its own announcement (with the order window, other rows'
    # announcements may come between).
    position = {(r["event"], r.get("order_ref")): i for i, r in enumerate(got)}
    for ref in sending_refs:
        assert position[(SENDING, ref)] < position[(SUBMITTED, ref)], ref

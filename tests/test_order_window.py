"""The order window on its own (``_app/jobs/window.py``): a real client against the
simulated gateway; which orders are answered is chosen with ``hold_orders``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from client_helpers import connected_ib  # noqa: F401  (the ``ib`` fixture)

from ibkr_resilience._app.jobs.gateway_watch import GatewayWatch
from ibkr_resilience._app.jobs.journal import SENDING, SUBMITTED, Journal, read_journal
from ibkr_resilience._app.jobs.orders import trade_outcome, wait_for_update
from ibkr_resilience._app.jobs.window import OrderWindow, Unit
from ibkr_resilience._connect import compat
from ibkr_resilience.simulator import FakeGateway


class Recorder:
    """The job's side: what was announced, recorded and cut short, in order."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def record(self, unit: Unit[str], event: str, message: str) -> None:
        self.lines.append(f"{unit.key} {event}")

    def cut_short(self, unit: Unit[str], cause: str) -> None:
        self.lines.append(f"{unit.key} cut short: {cause} ({len(unit.trades)} sent)")


def window(ib: Any, size: int, rec: Recorder, timeout: float = 10) -> OrderWindow[str]:
    watch = GatewayWatch(ib, lambda code, text: None, outage_wait=1)
    return OrderWindow(
        ib,
        watch,
        size=size,
        timeout=timeout,
        record=rec.record,
        cut_short=rec.cut_short,
        stop_after=lambda trades, event: None,
    )


def place(w: OrderWindow[str], ib: Any, key: str, rec: Recorder, order_id: int = 0) -> bool:
    order = compat.LimitOrder("BUY", 1, 100.0, orderRef=key)
    order.orderId = order_id or ib.client.getReqId()
    contract = compat.Stock("AAPL", "SMART", "USD")
    return w.place(key, contract, [order], lambda: rec.lines.append(f"{key} sending"))


def test_a_full_window_waits_and_records_in_order(fake_gateway: FakeGateway, ib: Any) -> None:
    """Two in flight (held), a row with nothing to send queued behind them: nothing is
    recorded until the gateway answers; then all three, in the order they came."""
    fake_gateway.hold_orders(after=0)
    rec = Recorder()
    w = window(ib, 2, rec)
    with w:
        assert place(w, ib, "a", rec) and place(w, ib, "b", rec)
        w.then(lambda: rec.lines.append("c skipped"))
        assert fake_gateway.wait_for(lambda: len(fake_gateway.events("sim.order_held")) == 2, 5)
        assert w.in_flight == 2
        assert rec.lines == ["a sending", "b sending"]
        assert fake_gateway.release_orders() == 2
        w.drain()
    assert rec.lines == [
        "a sending",
        "b sending",
        "a order.submitted",
        "b order.submitted",
        "c skipped",
    ]
    assert w.in_flight == 0


def test_nothing_queued_records_at_once(ib: Any) -> None:
    rec = Recorder()
    window(ib, 3, rec).then(lambda: rec.lines.append("skipped"))
    assert rec.lines == ["skipped"]


def test_a_stop_records_every_unit_in_flight(fake_gateway: FakeGateway, ib: Any) -> None:
    """Ctrl-C with one unit answered and one held: the answered one is recorded as the
    gateway left it (submitted), the held one cut short with the cause; it propagates."""
    fake_gateway.hold_orders(after=1)
    rec = Recorder()
    w = window(ib, 4, rec)
    with pytest.raises(KeyboardInterrupt), w:
        place(w, ib, "a", rec)
        place(w, ib, "b", rec)
        assert w.send()  # two of four: the burst goes out only when asked (or full)
        assert fake_gateway.wait_for(lambda: len(fake_gateway.events("sim.order_held")) == 1, 5)
        trades = ib.trades()
        assert wait_for_update(ib, lambda: trade_outcome(trades[0]) == "accepted", 5)
        raise KeyboardInterrupt
    # "a" is recorded when its answer is seen: before "b" is sent, or on the way out.
    submitted = rec.lines.index("a order.submitted")
    assert submitted < len(rec.lines) - 1
    del rec.lines[submitted]
    assert rec.lines == ["a sending", "b sending", "b cut short: interrupted (Ctrl-C) (1 sent)"]
    assert w.in_flight == 0


def test_nothing_is_announced_without_a_connection(fake_gateway: FakeGateway, ib: Any) -> None:
    rec = Recorder()
    w = window(ib, 2, rec)
    ib.disconnect()
    assert not place(w, ib, "a", rec, order_id=1)
    assert rec.lines == [] and fake_gateway.messages("placeOrder") == []


def test_the_size_is_at_least_one(ib: Any) -> None:
    with pytest.raises(ValueError, match="expected an integer >= 1"):
        window(ib, 0, Recorder())


def test_a_journal_batch_writes_outcomes_together(tmp_path: Path) -> None:
    """Outcomes wait for the end of the batch (one write, one fsync); ``order.sending``
    never waits; until written, an outcome's order still counts as unrecorded."""
    path = tmp_path / "j.jsonl"

    def events() -> list[str]:
        return [r["event"] for r in read_journal(path).records]

    with Journal(path) as journal:
        journal.sending(order_ref="a", order_id=1)
        with journal.batch():
            journal.append(SUBMITTED, order_ref="a")
            assert events() == [SENDING] and journal.unrecorded() == [("a", 1)]
            journal.sending(order_ref="b", order_id=2)
            assert events() == [SENDING, SENDING]
        assert events() == [SENDING, SENDING, SUBMITTED]
        assert journal.unrecorded() == [("b", 2)]
        with pytest.raises(KeyboardInterrupt), journal.batch():
            journal.append(SUBMITTED, order_ref="b")
            raise KeyboardInterrupt
        assert events()[-1] == SUBMITTED and journal.unrecorded() == []

"""The order window's bursts on their own: the rows sent back to back are announced in one
journal write (``Journal.announcing``) before any of them is handed to the client. A real
client against the simulated gateway; the journal is a real file (or ``/dev/full``)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
from client_helpers import connected_ib  # noqa: F401  (the ``ib`` fixture)
from test_fault_matrix_window import placed

from ibkr_resilience._app.jobs.gateway_watch import GatewayWatch
from ibkr_resilience._app.jobs.journal import SENDING, SUBMITTED, Journal, JournalError
from ibkr_resilience._app.jobs.journal import read_journal as read
from ibkr_resilience._app.jobs.window import OrderWindow, Unit
from ibkr_resilience._connect import compat
from ibkr_resilience._session.signals import SignalGuard
from ibkr_resilience.simulator import FakeGateway


def window(ib: Any, size: int, journal: Journal, recorded: list[str]) -> OrderWindow[str]:
    def record(unit: Unit[str], event: str, message: str) -> None:
        journal.append(event, order_ref=unit.key)
        recorded.append(f"{unit.key} {event}")

    def cut_short(unit: Unit[str], cause: str) -> None:
        recorded.append(f"{unit.key} cut short ({len(unit.trades)} sent)")

    return OrderWindow(
        ib,
        GatewayWatch(ib, lambda code, text: None, outage_wait=1),
        size=size,
        timeout=10,
        record=record,
        cut_short=cut_short,
        stop_after=lambda trades, event: None,
        batch=journal.batch,
        announcing=journal.announcing,
    )


def place(w: OrderWindow[str], ib: Any, journal: Journal, key: str, seen: list[Any]) -> bool:
    """Queue one order; its announcement notes what the gateway had received by then."""
    order = compat.LimitOrder("BUY", 1, 100.0, orderRef=key)
    order.orderId = ib.client.getReqId()

    def announce() -> None:
        journal.sending(order_ref=key, order_id=order.orderId)
        seen.append(key)

    return w.place(key, compat.Stock("AAPL", "SMART", "USD"), [order], announce)


def received(gw: FakeGateway, ib: Any) -> list[str]:
    """The orderRefs the gateway received; one round trip first, so that anything the
    client wrote before is read (the gateway answers in order)."""
    ib.reqCurrentTime()
    return [p.order_ref for p in placed(gw)]


def test_a_burst_is_written_once_before_any_order_is_sent(
    fake_gateway: FakeGateway, ib: Any, tmp_path: Path
) -> None:
    """Window 3: the first two rows are only queued (nothing written, nothing sent); the
    third fills the room, and the three records reach the disk together, then the three
    orders go out; outcomes follow in order."""
    path = tmp_path / "j.jsonl"
    announced: list[str] = []
    recorded: list[str] = []
    with Journal(path) as journal:
        w = window(ib, 3, journal, recorded)
        with w:
            assert place(w, ib, journal, "a", announced) and place(w, ib, journal, "b", announced)
            assert announced == [] and len(read(path)) == 0 and received(fake_gateway, ib) == []
            assert w.in_flight == 0
            assert place(w, ib, journal, "c", announced)
            assert announced == ["a", "b", "c"] and w.in_flight == 3
            assert [r["event"] for r in read(path)] == [SENDING] * 3
            assert [ref for ref, _ in journal.unrecorded()] == ["a", "b", "c"]
            assert received(fake_gateway, ib) == ["a", "b", "c"]
            assert w.drain()
    assert recorded == ["a order.submitted", "b order.submitted", "c order.submitted"]
    assert [r["event"] for r in read(path)] == [SENDING] * 3 + [SUBMITTED] * 3


def test_a_failed_burst_write_sends_none_of_it(fake_gateway: FakeGateway, ib: Any) -> None:
    """The burst's write fails (``/dev/full``): the error propagates from the ``place``
    that was to send it, nothing reached the gateway, nothing counts as unrecorded, and
    the window has nothing in flight to journal on the way out."""
    recorded: list[str] = []
    with Journal("/dev/full") as journal:
        w = window(ib, 2, journal, recorded)
        with pytest.raises(JournalError, match="No space left on device"), w:
            assert place(w, ib, journal, "a", [])
            place(w, ib, journal, "b", [])
        assert received(fake_gateway, ib) == []
        assert journal.unrecorded() == [] and w.in_flight == 0 and recorded == []


def test_then_and_drain_send_a_partial_burst(
    fake_gateway: FakeGateway, ib: Any, tmp_path: Path
) -> None:
    """A row that sends nothing sends the burst queued before it first (its record comes
    after theirs); ``drain`` sends what is still queued."""
    recorded: list[str] = []
    with Journal(tmp_path / "j.jsonl") as journal:
        w = window(ib, 8, journal, recorded)
        with w:
            place(w, ib, journal, "a", [])
            w.then(lambda: recorded.append("b skipped"))
            assert received(fake_gateway, ib) == ["a"]
            place(w, ib, journal, "c", [])
            assert w.drain()
    assert recorded == ["a order.submitted", "b skipped", "c order.submitted"]
    assert [p.order_ref for p in placed(fake_gateway)] == ["a", "c"]


def test_a_burst_due_after_the_connection_is_gone_is_dropped(
    fake_gateway: FakeGateway, ib: Any, tmp_path: Path
) -> None:
    """Queued, then the connection goes: nothing is announced or sent, and ``drain``
    says so (the job then reports the lost gateway)."""
    announced: list[str] = []
    with Journal(tmp_path / "j.jsonl") as journal:
        w = window(ib, 8, journal, [])
        assert place(w, ib, journal, "a", announced)
        ib.disconnect()
        assert not w.drain()
        assert w.dropped == 1 and announced == [] and journal.unrecorded() == []
    assert fake_gateway.messages("placeOrder") == []


def test_announcing_holds_the_records_until_the_block_ends(tmp_path: Path) -> None:
    """Inside the block nothing is on disk and nothing counts as unrecorded; on the way
    out all of it is, in one write. A block that raises writes nothing."""
    path = tmp_path / "j.jsonl"
    with Journal(path) as journal:
        with journal.announcing():
            journal.sending(order_ref="a", order_id=1)
            legs = [{"order_ref": "b", "order_id": 2}, {"order_ref": "b:tp", "order_id": 3}]
            journal.sending(order_ref="b", order_id=2, legs=legs)
            assert len(read(path)) == 0 and journal.unrecorded() == []
        assert [r["order_ref"] for r in read(path)] == ["a", "b"]
        assert journal.unrecorded() == [("a", 1), ("b", 2), ("b:tp", 3)]
        with pytest.raises(KeyboardInterrupt), journal.announcing():
            journal.sending(order_ref="c", order_id=4)
            raise KeyboardInterrupt
        assert len(read(path)) == 2 and [ref for ref, _ in journal.unrecorded()] == [
            "a",
            "b",
            "b:tp",
        ]


def test_a_signal_during_the_burst_write_leaves_no_announced_row_without_an_outcome(
    fake_gateway: FakeGateway, ib: Any, tmp_path: Path
) -> None:
    """SIGTERM arrives while the burst's records are being written (the fsync is the slow
    step, so that is where a signal lands): it raises once the records are on disk *and*
    the units are in the window, before any order is sent, so the window's exit journals
    each announced unit (cut short, 0 sent) and no outcome is written twice. A newcomer
    found announced rows with no outcome, and the held outcomes written twice."""
    recorded: list[str] = []
    guard = SignalGuard()
    with Journal(tmp_path / "j.jsonl") as journal:
        w = window(ib, 2, journal, recorded)
        real_write = journal._write

        def write_then_signal(data: bytes) -> None:
            real_write(data)  # on disk, as when the signal comes during the fsync
            if b'"order.sending"' in data:
                os.kill(os.getpid(), signal.SIGTERM)

        journal._write = write_then_signal  # type: ignore[method-assign]
        guard.install()
        try:
            with pytest.raises(SystemExit) as stopped, w:
                place(w, ib, journal, "a", [])
                place(w, ib, journal, "b", [])
        finally:
            guard.restore()
        assert stopped.value.code == 143
        assert received(fake_gateway, ib) == []  # stopped before placeOrder
    assert recorded == ["a cut short (0 sent)", "b cut short (0 sent)"]
    assert [r["event"] for r in read(tmp_path / "j.jsonl")] == [SENDING, SENDING]

"""A window of orders sent and not yet acknowledged, shared by the trading jobs.

Placing one order and waiting for its acknowledgement before the next costs a gateway
round trip per row: with 50 ms per reply a 120-row plan took 2.3x a script that sends
everything and then waits (issue 13). So up to ``IBKR_ORDER_WINDOW`` units (a plan row:
one order, or a bracket's legs) are in flight at once, and the rest of the old rules hold:

* every unit is announced by the job's fsynced ``order.sending`` record before its first
  ``placeOrder`` (the ``announce`` argument of :meth:`OrderWindow.place`), so a kill at
  any point leaves the journal naming every order that may have reached the gateway;
  units that go out back to back (the window's free room, filled) are announced together,
  in one journal write and one fsync (``announcing``), and only then sent: a failed
  write sends none of them, and :meth:`OrderWindow.place` only queues a unit until then;
  the outcomes recorded while making that room go in the same write (they are held
  only while the burst is gathered, never while the window waits for the gateway);
* outcomes are recorded oldest first (the head of the window), so the journal and the
  summary stay in plan order; rows that send nothing are queued behind the units in
  flight (:meth:`OrderWindow.then`) for the same reason; the outcomes found answered
  together are written in one journal batch (``batch``: one fsync, not one each);
* a bracket's legs go out back to back in the order given (parent and first child with
  ``transmit=False``, the last child with ``transmit=True``), and count as one unit;
* nothing is sent while error 1100 is in force (:class:`.gateway_watch.GatewayWatch`):
  the client's loop is run once before each burst so that a 1100 already received is
  seen (the orders of a burst then go out within a millisecond, as a bracket's legs do);
* anything that ends the run early (a signal, a lost or silent gateway, a Read-Only 321,
  an outage past ``IBKR_OUTAGE_WAIT``, a journal failure) stops sending at once, and every
  unit still in the window gets its outcome record: ``order.submitted`` if the gateway
  had accepted all of it, ``order.rejected`` for a Read-Only refusal, otherwise
  ``order.unconfirmed`` with the cause (:meth:`OrderWindow.__exit__`).

Each unit's acknowledgement deadline runs from its own send (``IBKR_ACK_TIMEOUT``), and
restarts for every unit when an outage clears, as it did for the one order in flight.

IB's message-rate limit (50 messages per second, TWS API docs "Requests limitations") is
left to the client library: ib_insync 0.9.86 and ib_async 2.x both queue requests past
``Client.MaxRequests = 45`` per ``Client.RequestsInterval = 1`` s and send them as the
loop runs; the window never writes to the socket itself, so it cannot bypass that.
Window size 1 is the old one-at-a-time behaviour. The window counts units handed to the
client, including those its throttle still holds: counting only those on the wire would let
the rest of the plan pile up in the throttle, unbounded, for no gain in time (the throttle
sends them no sooner).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ..._connect.compat import ensure_event_loop
from ..._connect.failures import is_read_only_error
from ..._core.log import get_logger
from ..._session.signals import whole_step
from .exits import RunStopped, stop_cause
from .gateway_watch import GatewayNotAnsweringError, GatewayWatch
from .journal import REJECTED, SUBMITTED, JournalError
from .orders import classify, trade_error, trade_errors, trade_outcome, wait_for_update

__all__ = ["OrderWindow", "Unit", "pump"]

log = get_logger("ibkr_resilience.window")

K = TypeVar("K")


@dataclass
class Unit(Generic[K]):
    """One unit in flight: the job's ``key`` (a plan row), its orders, and their trades
    (one per order handed to the client, fewer if the run stopped halfway)."""

    key: K
    orders: list[Any]
    deadline: float
    """Monotonic time by which the gateway should have answered every order."""
    trades: list[Any] = field(default_factory=list)

    def settled(self) -> bool:
        return len(self.trades) == len(self.orders) and all(
            trade_outcome(t) != "pending" for t in self.trades
        )


Record = Callable[[Unit[K], str, str], None]
"""``record(unit, event, message)``: the job's outcome record for one unit."""
CutShort = Callable[[Unit[K], str], None]
"""``cut_short(unit, cause)``: the job's ``order.unconfirmed`` record when the run stops."""
StopAfter = Callable[[list[Any], str], RunStopped | None]
"""``stop_after(trades, event)``: whether a unit's outcome means no later order can succeed."""


def pump() -> None:
    """Run the client's event loop once without blocking: messages already received
    (acknowledgements, error 1100) are processed and throttled requests go out."""
    ensure_event_loop().run_until_complete(asyncio.sleep(0))


class OrderWindow(Generic[K]):
    """Up to ``size`` units in flight; use as a context manager around the sending loop
    (its exit records whatever is still in flight when the run stops early).

    ``record``, ``cut_short`` and ``stop_after`` are the job's (see :data:`Record`,
    :data:`CutShort`, :data:`StopAfter`); ``timeout`` is the ack deadline in seconds.
    """

    def __init__(
        self,
        ib: Any,
        watch: GatewayWatch,
        *,
        size: int,
        timeout: float,
        record: Record[K],
        cut_short: CutShort[K],
        stop_after: StopAfter,
        batch: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext,
        announcing: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if size < 1:
            raise ValueError(f"window size {size!r}: expected an integer >= 1")
        self.ib = ib
        self.watch = watch
        self.size = size
        self.timeout = timeout
        self._record = record
        self._cut_short = cut_short
        self._stop_after = stop_after
        self._batch = batch
        self._announcing = announcing
        self._clock = clock
        self._queue: deque[Unit[K] | Callable[[], None]] = deque()
        self._in_flight = 0
        self._pending: list[_Pending[K]] = []
        self._held: AbstractContextManager[None] | None = None
        """An open ``batch()`` holding the outcomes recorded since the last burst."""
        self._dropped = 0

    @property
    def in_flight(self) -> int:
        """Units sent whose outcome is not recorded yet."""
        return self._in_flight

    def __enter__(self) -> OrderWindow[K]:
        return self

    def __exit__(self, _type: object, exc: BaseException | None, _tb: object) -> None:
        if exc is None:
            self._release()
            return
        # The journal must hold an outcome for every unit sent; a journal that cannot be
        # written now must not hide why the run stopped (exit 7 lists what is missing).
        with contextlib.suppress(JournalError):
            self._release()
        with contextlib.suppress(JournalError):
            self._close_out(stop_cause(exc))

    @property
    def dropped(self) -> int:
        """Units handed to :meth:`place` and never sent (nor announced) because the
        connection was gone by the time their burst was due."""
        return self._dropped

    def make_room(self) -> None:
        """Record every unit already answered; block on the oldest while the window is full.

        The records of the last settling are held for the next burst's write."""
        self._hold()
        self._settle_ready()
        while self._in_flight >= self.size:
            self._release()  # nothing is held while waiting for the gateway
            self._hold()
            self._settle_next()

    def place(self, key: K, contract: Any, orders: list[Any], announce: Callable[[], None]) -> bool:
        """Queue one unit for the next burst; the burst goes out (:meth:`send`) as soon as
        it fills the window's free room, and before anything is waited for or recorded
        (:meth:`then`, :meth:`drain`). Blocks first, while the window is full.

        A burst: wait out an IB outage, ``announce()`` each unit (the job's
        ``order.sending``) inside one ``announcing()`` block (one fsync; if it raises,
        nothing of the burst is sent), then ``placeOrder`` each order in the order given.
        Returns without waiting for any acknowledgement; ``False`` if the connection is
        gone (the unit, and the rest of its burst, are then never announced nor sent).
        """
        if not self._pending:
            self.make_room()
        if not self.ib.isConnected():
            self._dropped += 1
            return False
        self._pending.append(_Pending(key, contract, orders, announce))
        if self._in_flight + len(self._pending) >= self.size:
            return self.send()
        return True

    def send(self) -> bool:
        """Announce and send the queued units now (see :meth:`place`); ``False`` if the
        connection is gone and they were dropped."""
        pending, self._pending = self._pending, []
        if not pending:
            self._release()
            return True
        pump()
        if self.watch.in_outage:
            self._release()  # waiting: write what is held first
        self.watch.wait_out_outage()  # nothing is sent while error 1100 is in force
        if not self.ib.isConnected():
            self._dropped += len(pending)
            self._release()
            return False
        deadline = self._clock() + self.timeout
        sent = [Unit(p.key, p.orders, deadline) for p in pending]
        # One step: records on disk and units in flight, or neither (a signal during the
        # fsync would otherwise leave announced units the window does not know of).
        with whole_step():
            with self._announcing():  # the held outcomes go in the same write
                for p in pending:
                    p.announce()
            self._queue.extend(sent)  # all announced: each needs an outcome record now
            self._in_flight += len(sent)
            self._release()  # nothing left to write: the batch just closes
        for unit, p in zip(sent, pending, strict=True):
            for order in p.orders:
                unit.trades.append(self.ib.placeOrder(p.contract, order))
        return True

    def then(self, record: Callable[[], None]) -> None:
        """Run ``record()`` once every unit placed before has its outcome recorded: at
        once if none is in flight (a row that sends nothing keeps its place in the plan)."""
        self.send()
        if not self._queue:
            record()
        else:
            self._queue.append(record)

    def drain(self) -> bool:
        """Send what is queued, then wait for and record every unit in flight, oldest
        first; ``False`` if any unit handed to :meth:`place` was never sent because the
        connection was gone."""
        self.send()
        while self._queue:
            self._settle_next()
        return not self._dropped

    # ----------------------------------------------------------------- internals
    def _settle_ready(self) -> None:
        """Record every head already answered, in one journal batch (one disk flush)."""
        if not self._queue:
            return
        pump()
        with self._batch():
            while self._queue:
                head = self._queue[0]
                if isinstance(head, Unit) and not head.settled():
                    return
                self._settle_head()

    def _hold(self) -> None:
        if self._held is None:
            with whole_step():  # the batch opened and known to the window, or neither
                held = self._batch()
                held.__enter__()
                self._held = held

    def _release(self) -> None:
        """Write the held outcome records now (one fsync, if there are any)."""
        with whole_step():
            held, self._held = self._held, None
            if held is not None:
                held.__exit__(None, None, None)

    def _settle_next(self) -> None:
        """Wait for the head, then record it with every unit answered meanwhile, in one
        journal batch (nothing is held during the wait: the head's record comes first)."""
        with self._batch():
            self._settle_head()
            self._settle_ready()

    def _settle_head(self) -> None:
        head = self._queue[0]
        if not isinstance(head, Unit):
            self._queue.popleft()
            head()
            return
        event, message = self._acknowledge(head)
        stop = self._stop_after(head.trades, event)
        if isinstance(stop, GatewayNotAnsweringError):
            message = str(stop)
        with whole_step():  # recorded and out of the window, or neither (no second record)
            self._record(head, event, message)
            self._queue.popleft()  # only now: a failed record leaves it for _close_out
            self._in_flight -= 1
        if stop is not None:
            raise stop

    def _acknowledge(self, unit: Unit[K]) -> tuple[str, str]:
        """Wait for the unit's acknowledgements until its deadline; an IB outage (1100)
        starting meanwhile holds them (IB acknowledges only once restored), so wait it
        out, then give every unit in flight a fresh deadline."""
        watch = self.watch
        remaining = max(0.0, unit.deadline - self._clock())
        pump()
        wait_for_update(self.ib, lambda: unit.settled() or watch.in_outage, remaining)
        if not unit.settled() and watch.in_outage:
            watch.wait_out_outage()
            fresh = self._clock() + self.timeout
            for queued in self._queue:
                if isinstance(queued, Unit):
                    queued.deadline = max(queued.deadline, fresh)
            wait_for_update(self.ib, unit.settled, self.timeout)
        return classify(self.ib, unit.trades, self.timeout)

    def _close_out(self, cause: str) -> None:
        """The run stopped: record every unit in flight as it stands, without asking the
        gateway anything (it may be gone, silent or read-only), and the queued rows."""
        if self._in_flight:
            log.warning("order.window.cut_short", in_flight=self._in_flight, cause=cause)
        while self._queue:
            head = self._queue.popleft()
            if not isinstance(head, Unit):
                head()
                continue
            self._in_flight -= 1
            outcome = _as_it_stands(head)
            if outcome is None:
                self._cut_short(head, cause)
            else:
                self._record(head, *outcome)


@dataclass
class _Pending(Generic[K]):
    """A unit queued for the next burst: nothing announced or sent yet."""

    key: K
    contract: Any
    orders: list[Any]
    announce: Callable[[], None]


def _as_it_stands(unit: Unit[Any]) -> tuple[str, str] | None:
    """The outcome known without a round trip: every order accepted, or a Read-Only
    refusal (321 is final, and :func:`.orders.classify` never re-asks about it either);
    ``None`` for anything else, which is then unconfirmed."""
    if not unit.trades or len(unit.trades) < len(unit.orders):
        return None
    if all(trade_outcome(t) == "accepted" for t in unit.trades):
        return SUBMITTED, ""
    for trade in unit.trades:
        if any(is_read_only_error(code, text) for code, text in trade_errors(trade)):
            return REJECTED, trade_error(trade)
    return None

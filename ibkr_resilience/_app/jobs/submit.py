"""``submit_orders``: place an order plan exactly once, however often cron runs it.

A cron job can run twice (a retry, a manual re-run) or die halfway (SIGTERM, a reboot),
and either must neither lose nor duplicate an order. So the account, not this process,
is the memory: every order carries an ``orderRef`` derived from the plan, and before
placing anything the script collects the refs already in the account's open orders and
in the executions the gateway reports; rows found there are skipped. Up to
``IBKR_ORDER_WINDOW`` rows are in flight at once (:mod:`.window`): each is announced by an
fsynced ``order.sending`` record before it is sent, and its outcome follows in plan
order, so a kill loses at most the acknowledgements of the rows in the window, which are
then journaled as unconfirmed on the way out. See ``docs/scripts.md``.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from ..._connect.compat import order_status
from ..._core.config import SessionConfig, env_value
from ..._core.log import get_logger
from .gateway_watch import GatewayWatch, record_connectivity, stop_after
from .journal import DRY_RUN, REJECTED, UNCONFIRMED, Journal
from .kit import (
    Outcome,
    RunState,
    ScriptRun,
    add_common_arguments,
    new_parser,
    run_in_session,
    script_main,
)
from .orders import paper_account, qualify
from .placements import (
    CHANGED,
    Placement,
    moved_from,
    placed_refs,
    read_placements,
    removed_refs,
    request_refs,
    review,
)
from .plan import Plan, PlannedOrder, check_plan_id, load_plan
from .plan_rows import Limits
from .submit_review import ReviewedRows
from .window import OrderWindow, Unit

log = get_logger("ibkr_resilience.submit")

SCRIPT = "submit_orders.py"
CLIENT_ID = 10


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser(
        SCRIPT,
        "Place the orders of an order plan (CSV, see docs/order-plan.md) on the paper "
        "account, each exactly once: rows whose orderRef is already in the account's open "
        "orders or executions are skipped, so re-running after a crash is safe.",
    )
    parser.add_argument("--plan", required=True, metavar="PATH", help="the order plan CSV")
    parser.add_argument(
        "--plan-id",
        type=_plan_id_arg,
        metavar="ID",
        help="name the plan in every orderRef (1-21 of A-Z a-z 0-9 _ . -) instead of deriving "
        "it from the file's path: for a plan file that moves or is regenerated under another "
        "name (see docs/order-plan.md)",
    )
    parser.add_argument(
        "--amend",
        action="store_true",
        help="modify in place (same order id) the working order of a row whose quantity or "
        "price changed after it was placed; without it such a row is only reported",
    )
    add_common_arguments(parser, CLIENT_ID)
    return parser


def main(argv: Sequence[str] | None = None, *, env: Mapping[str, str] | None = None) -> int:
    """Run the script; return its exit code (the demo runs it in-process)."""
    return script_main(SCRIPT, build_parser, _run, argv, env)


def _run(run: ScriptRun) -> None:
    args = run.args
    settings = run.settings
    limits = Limits(settings.max_order_quantity, settings.max_order_notional)
    # The whole plan is checked before anything happens.
    plan = load_plan(args.plan, limits, plan_id=args.plan_id)

    def start(journal: Journal, config: SessionConfig) -> Callable[[Any], None]:
        mode = " (dry run: nothing is placed)" if args.dry_run else ""
        run.state.header = f"{SCRIPT}: plan {plan.plan_id} ({plan.source}), {len(plan)} rows{mode}"
        log_file = args.log_file or env_value("IBKR_LOG_FILE", run.env)
        if log_file:
            run.state.footer.append(f"log: {log_file}")
        log.info(
            "submit.start",
            plan=plan.source,
            plan_id=plan.plan_id,
            rows=len(plan),
            dry_run=args.dry_run,
            journal=str(journal.path),
        )
        return Submitter(
            plan,
            journal,
            run.state,
            timeout=run.ack_timeout,
            dry_run=args.dry_run,
            outage_wait=run.settings.outage_wait,
            window=run.settings.order_window,
            amend=args.amend,
            placements=read_placements(journal.path, plan.plan_id),
        ).run

    run_in_session(run, SCRIPT, start)


@dataclass
class Submitter(ReviewedRows):
    """One run over a plan; records every row's outcome in the journal and the summary."""

    plan: Plan
    journal: Journal
    state: RunState
    _: KW_ONLY
    timeout: float
    """Seconds to wait for each row's acknowledgement."""
    dry_run: bool
    outage_wait: float = 300.0
    """Seconds to wait for IB to come back after error 1100 (``IBKR_OUTAGE_WAIT``)."""
    window: int = 1
    """Rows in flight at once (``IBKR_ORDER_WINDOW``; 1: each acknowledged before the next)."""
    amend: bool = False
    """``--amend``: modify a changed row's working order in place."""
    placements: Mapping[str, Placement] = field(default_factory=dict)
    """What the journal says this plan placed before (:func:`read_placements`)."""
    today: Callable[[], str] = lambda: f"{datetime.now(UTC):%Y-%m-%d}"
    account: str = field(default="", init=False)
    """The paper account traded, known once connected."""
    watch: GatewayWatch | None = field(default=None, init=False)

    def run(self, ib: Any) -> None:
        """Check the plan against the account, then place each row not placed yet."""
        # Bound every blocking request: a gateway that stops answering mid-run must end
        # the run (exit 1), not hang it until the next cron slot.
        ib.RequestTimeout = self.timeout
        self.watch = GatewayWatch(ib, self._record_connectivity, self.outage_wait)
        try:
            self._run(ib)
        finally:
            self.watch.close()

    def _run(self, ib: Any) -> None:
        self.account = paper_account(ib)
        contracts = self.plan.contracts()
        requested = request_refs(ib)  # answered while the contracts are qualified
        failures = qualify(ib, contracts)
        placed = placed_refs(ib, self.account, requested)
        log.info(
            "submit.checked",
            account=self.account,
            contracts=len(contracts),
            unqualified=len(failures),
            refs_in_account=len(placed),
        )
        next_id: Callable[[], int] = (
            itertools.count(1).__next__ if self.dry_run else ib.client.getReqId
        )
        today = self.today()
        assert self.watch is not None
        window: OrderWindow[PlannedOrder] = OrderWindow(
            ib,
            self.watch,
            size=self.window,
            timeout=self.timeout,
            record=self._record_unit,
            cut_short=self._record_cut_short,
            stop_after=lambda trades, event: stop_after(ib, trades, event, self.timeout),
            batch=self.journal.batch,
            announcing=self.journal.announcing,
        )
        with window:
            for row in self.plan:
                if not self.state.check_connected(ib):
                    break
                seen = review(row, placed, self.placements.get(row.order_ref), today)
                if seen.action == "skip":
                    window.then(partial(self._record_skipped, row, seen))
                    continue
                if seen.action == "changed":
                    window.drain()  # an amendment is sent: one thing at a time
                    self._changed(ib, row, seen)
                    continue
                moved = moved_from(row, self.placements, self.plan.orders)
                if moved is not None:
                    window.then(partial(self._record_moved, row, moved))
                    continue
                failure = failures.get(row.contract_key)
                if failure is not None:
                    window.then(partial(self._record, row, REJECTED, message=failure))
                    continue
                orders = row.build_orders(next_id, account=self.account)
                if self.dry_run:
                    legs = (
                        f" + take-profit {row.take_profit} / stop-loss {row.stop_loss}"
                        if row.is_bracket
                        else ""
                    )
                    self._record(row, DRY_RUN, message=f"would place {_describe(row)}{legs}")
                    continue
                sending = partial(self._record_sending, row, orders)
                if not window.place(row, contracts[row.contract_key], orders, sending):
                    break
            if not window.drain():
                self.state.check_connected(ib)  # the gateway went away: rows left unsent
        if self.state.lost:
            return
        for ref, earlier in removed_refs(
            self.plan.plan_id, self.plan, placed, self.placements
        ).items():
            self._record_removed(ref, earlier)

    def _record_unit(self, unit: Unit[PlannedOrder], event: str, message: str) -> None:
        self._record(unit.key, event, trades=unit.trades, message=message)

    def _record_cut_short(self, unit: Unit[PlannedOrder], cause: str) -> None:
        """A row in the window when the run stopped: unconfirmed, with why."""
        trades, orders = unit.trades, unit.orders
        message = (
            f"{cause} while placing ({len(trades)} of {len(orders)} order(s) handed to "
            "the client), before the gateway confirmed; a re-run skips it if the gateway "
            "has it"
        )
        if trades:
            self._record(unit.key, UNCONFIRMED, trades=trades, message=message)
        else:
            self._record(unit.key, UNCONFIRMED, order_id=orders[0].orderId, message=message)

    def _record_sending(self, row: PlannedOrder, orders: list[Any]) -> None:
        """The fsynced ``order.sending`` record that must precede the row's placeOrder."""
        fields = row.journal_fields()
        fields.update(account=self.account, order_id=orders[0].orderId)
        if len(orders) > 1:
            fields["legs"] = [{"order_ref": o.orderRef, "order_id": o.orderId} for o in orders]
        self.journal.sending(**fields)

    def _record_connectivity(self, code: int, message: str) -> None:
        record_connectivity(self.journal, self.state, self.account, code, message)

    def _record(
        self,
        row: PlannedOrder,
        event: str,
        *,
        trades: list[Any] | None = None,
        status: str = "",
        order_id: int | None = None,
        perm_id: int | None = None,
        message: str = "",
        placed_fingerprint: str | None = None,
    ) -> None:
        fields = row.journal_fields()
        legs: list[dict[str, Any]] = []
        if trades:
            entry = trades[0]
            status = order_status(entry)
            order_id = entry.order.orderId
            perm_id = entry.orderStatus.permId or entry.order.permId or None
            if len(trades) > 1:
                legs = [
                    {
                        "order_ref": t.order.orderRef,
                        "order_id": t.order.orderId,
                        "perm_id": t.orderStatus.permId or t.order.permId or None,
                        "status": order_status(t),
                    }
                    for t in trades
                ]
        fields.update(
            account=self.account, order_id=order_id, perm_id=perm_id, status=status, message=message
        )
        if placed_fingerprint is not None or event == CHANGED:
            fields["placed_fingerprint"] = placed_fingerprint
        if legs:
            fields["legs"] = legs
        self.journal.append(event, **fields)
        self.state.outcomes.append(
            Outcome(
                event,
                f"line {row.line} {row.row_id}: {_describe(row)}",
                row.order_ref,
                status,
                order_id,
                message,
            )
        )
        log.info(
            "submit.order",
            outcome=event,
            order_ref=row.order_ref,
            line=row.line,
            order_id=order_id,
            status=status,
            message=message or None,
        )


def _plan_id_arg(text: str) -> str:
    try:
        return check_plan_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _describe(row: PlannedOrder) -> str:
    price = ""
    if row.limit_price is not None:
        price += f" @{row.limit_price:g}"
    if row.stop_price is not None:
        price += f" stop {row.stop_price:g}"
    bracket = " bracket" if row.is_bracket else ""
    return f"{row.side} {row.quantity} {row.symbol} {row.order_type}{price}{bracket}"

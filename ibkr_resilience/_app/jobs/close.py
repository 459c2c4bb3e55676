"""``close_positions``: flatten the paper account, cancelling what could reopen it first.

A stop or limit order left working after a position is closed can open a new one later,
and a closing order sent while another order on the symbol is still live can overshoot.
So the script cancels the account's open orders for the symbols it closes, waits until
the gateway confirms that none of them is live any more, re-reads the positions (an
order may have filled meanwhile), and only then sends one closing order per position,
up to ``IBKR_ORDER_WINDOW`` of them unacknowledged at once (:mod:`.window`, as in
``submit_orders``), each announced by an fsynced ``order.sending`` record before it is
sent, outcomes recorded in position order.

This module is the script and the order of those steps; each step is its own module:
what to act on (:mod:`.close_scope`), cancelling (:mod:`.close_cancel`), the closing
orders (:mod:`.close_orders`) and the records (:mod:`.close_records`). A symbol whose
orders cannot be cancelled is not closed and the run exits 3. See ``docs/scripts.md``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from datetime import date
from functools import partial
from typing import Any

from ..._core.config import SessionConfig
from ..._core.log import get_logger
from .close_cancel import Canceller
from .close_orders import ClosingOrders
from .close_records import CloseParams, CloseRecorder
from .close_scope import Book, close_ref, trading_date
from .gateway_watch import GatewayWatch, record_connectivity
from .journal import DRY_RUN, NOT_PLACED, REJECTED, Journal
from .kit import (
    RunState,
    ScriptRun,
    UsageError,
    add_common_arguments,
    new_parser,
    run_in_session,
    script_main,
)
from .orders import paper_account
from .plan_rows import SYMBOL_RE

__all__ = ["CLIENT_ID", "SCRIPT", "Closer", "close_ref", "main", "parse_symbols", "trading_date"]

log = get_logger("ibkr_resilience.close")

SCRIPT = "close_positions.py"
CLIENT_ID = 11


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser(
        SCRIPT,
        "Close the paper account's positions: cancel the open orders on the affected "
        "symbols first (and wait until the gateway confirms), then send one closing order "
        "per position (market, or market-on-close with --moc). Without --symbols, every "
        "position and every open order of the account is affected.",
    )
    parser.add_argument(
        "--symbols",
        nargs="+",
        metavar="SYMBOL",
        help="only these symbols (space- or comma-separated); their open orders are "
        "cancelled even where there is no position",
    )
    parser.add_argument(
        "--moc",
        action="store_true",
        help="close with market-on-close orders instead of market orders",
    )
    parser.add_argument(
        "--global-cancel",
        action="store_true",
        help="cancel with reqGlobalCancel: EVERY open order of the login (all accounts, all "
        "symbols, orders entered in TWS); for when another client id holding orders is "
        "still connected. Not with --symbols",
    )
    add_common_arguments(parser, CLIENT_ID)
    return parser


def parse_symbols(values: Sequence[str] | None) -> list[str]:
    if not values:
        return []
    symbols: list[str] = []
    for value in values:
        for part in value.split(","):
            symbol = part.strip().upper()
            if not symbol:
                continue
            if not SYMBOL_RE.fullmatch(symbol):
                raise UsageError(f"--symbols: {part.strip()!r} is not a ticker symbol")
            if symbol not in symbols:
                symbols.append(symbol)
    if not symbols:
        raise UsageError("--symbols: no symbol given")
    return symbols


def main(argv: Sequence[str] | None = None, *, env: Mapping[str, str] | None = None) -> int:
    """Run the script; return its exit code (the demo runs it in-process)."""
    return script_main(SCRIPT, build_parser, _run, argv, env)


def _run(run: ScriptRun) -> None:
    args = run.args
    symbols = parse_symbols(args.symbols)
    if args.global_cancel and symbols:
        raise UsageError(
            "--global-cancel cancels every order of the login; it cannot be combined with --symbols"
        )
    order_type = "MOC" if args.moc else "MKT"

    def start(journal: Journal, config: SessionConfig) -> Callable[[Any], None]:
        scope = ", ".join(symbols) if symbols else "all positions"
        mode = " (dry run: nothing is cancelled or placed)" if args.dry_run else ""
        run.state.header = f"{SCRIPT}: close {scope} with {order_type} orders{mode}"
        log.info(
            "close.start",
            symbols=symbols or None,
            order_type=order_type,
            dry_run=args.dry_run,
            journal=str(journal.path),
        )
        return Closer(
            journal,
            run.state,
            config,
            symbols=symbols,
            order_type=order_type,
            timeout=run.ack_timeout,
            dry_run=args.dry_run,
            global_cancel=args.global_cancel,
            outage_wait=run.settings.outage_wait,
            window=run.settings.order_window,
        ).run

    run_in_session(run, SCRIPT, start)


@dataclass
class Closer:
    """One run, step by step: read the book, cancel what is in the way, confirm, re-read,
    close; the steps themselves are done by :class:`Canceller` and :class:`ClosingOrders`."""

    journal: Journal
    state: RunState
    config: SessionConfig
    """The session's settings; cancel sessions under another client id start from them."""
    _: KW_ONLY
    symbols: list[str]
    """Only these symbols; empty: every position and open order of the account."""
    order_type: str
    """``MKT``, or ``MOC`` (``--moc``)."""
    timeout: float
    """Seconds to wait for each acknowledgement and for the cancels to be confirmed."""
    dry_run: bool
    global_cancel: bool
    outage_wait: float = 300.0
    """Seconds to wait for IB to come back after error 1100 (``IBKR_OUTAGE_WAIT``)."""
    window: int = 1
    """Closing orders in flight at once (``IBKR_ORDER_WINDOW``; 1: each acknowledged
    before the next is sent)."""
    day: date = field(default_factory=trading_date)
    """The exchange date the closing orders belong to."""

    def run(self, ib: Any) -> None:
        """Close the positions in scope on the connected ``ib``; record every step.

        Raises the same :class:`.exits.RunStopped` errors as ``submit_orders`` (Read-Only
        API, an IB outage past ``outage_wait``, a gateway that stopped answering).
        """
        ib.RequestTimeout = self.timeout
        params = CloseParams(paper_account(ib), self.day, self.order_type)
        watch = GatewayWatch(
            ib,
            lambda code, text: record_connectivity(
                self.journal, self.state, params.account, code, text
            ),
            self.outage_wait,
        )
        try:
            self._run(ib, params, watch)
        finally:
            watch.close()

    def _run(self, ib: Any, params: CloseParams, watch: GatewayWatch) -> None:
        record = CloseRecorder(self.journal, self.state, params)
        closing_orders = ClosingOrders(params, record, watch, timeout=self.timeout)
        book = Book.read(ib, params.account, self.day)
        scope = book.scope(self.symbols)
        to_cancel = book.to_cancel(scope)
        log.info(
            "close.checked",
            account=params.account,
            trading_date=self.day.isoformat(),
            positions={s: p.position for s, p in book.positions.items() if s in scope},
            to_cancel=len(to_cancel),
            pending_closes=len(book.pending),
        )
        idle = book.idle(self.symbols)
        if idle:
            self.state.footer.append(f"no position and no open order: {', '.join(idle)}")
        if self.dry_run:
            self._preview(ib, book, scope, to_cancel, record, closing_orders)
            return
        canceller = Canceller(
            self.config, record, timeout=self.timeout, global_cancel=self.global_cancel
        )
        blocked = canceller.cancel(ib, to_cancel)
        if to_cancel:
            # Anything may have filled before its cancel landed: close what is there now.
            book = Book.read(ib, params.account, self.day)
        self._close(ib, book, scope, blocked, record, closing_orders)

    def _close(
        self,
        ib: Any,
        book: Book,
        scope: set[str],
        blocked: dict[str, str],
        record: CloseRecorder,
        closing_orders: ClosingOrders,
    ) -> None:
        """One outcome per position in scope: closed, skipped, or why it was not."""
        live = book.live_by_symbol()
        closing = book.closing(scope)
        failures = closing_orders.qualify(ib, closing)
        with closing_orders.window(ib, size=self.window) as window:
            for symbol, pos in closing.items():
                if not self.state.check_connected(ib):
                    break
                pending = book.pending_close(symbol)
                if symbol in blocked or symbol in live:
                    ids = ", ".join(str(t.order.orderId) for t in live.get(symbol, []))
                    reason = blocked.get(symbol) or f"order(s) {ids} on {symbol} are still live"
                    window.then(
                        partial(record.close, pos, NOT_PLACED, message=f"not closed: {reason}")
                    )
                elif pending is not None:
                    window.then(partial(closing_orders.skip_pending, pos, pending))
                elif symbol in failures:
                    window.then(partial(record.close, pos, REJECTED, message=failures[symbol]))
                elif not closing_orders.place(ib, window, pos):
                    break
            if not window.drain():
                self.state.check_connected(ib)  # the gateway went away: closes left unsent

    def _preview(
        self,
        ib: Any,
        book: Book,
        scope: set[str],
        to_cancel: list[Any],
        record: CloseRecorder,
        closing_orders: ClosingOrders,
    ) -> None:
        """The dry run: what would be cancelled and closed (contracts are qualified)."""
        for t in to_cancel:
            record.cancel(t, DRY_RUN, "would cancel")
        closing = book.closing(scope)
        failures = closing_orders.qualify(ib, closing)
        for symbol, pos in closing.items():
            if symbol in failures:
                record.close(pos, REJECTED, message=failures[symbol])
            else:
                preview = closing_orders.preview(pos, book.pending_close(symbol))
                record.close(pos, DRY_RUN, message=preview)

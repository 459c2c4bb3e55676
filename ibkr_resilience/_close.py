"""``close_positions``: flatten the paper account, cancelling what could reopen it first.

A stop or limit order left working after a position is closed can open a new one later,
and a closing order sent while another order on the symbol is still live can overshoot.
So the script cancels the account's open orders for the symbols it closes, waits until
the gateway confirms that none of them is live any more, re-reads the positions (an
order may have filled meanwhile), and only then sends one closing order per position.

TWS lets a client cancel only its own orders (error 10147 otherwise), so orders of
another client id are cancelled through a short session under that client id; if that
client is still connected (error 326) or the order was entered by hand in TWS, the
symbol is not closed and the run exits 3, unless ``--global-cancel`` was given. Closing
orders carry ``close:<exchange date>:<symbol>`` and a pending one is never duplicated.
See ``docs/scripts.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

from ._alerts import DisabledAlert
from ._config import SessionConfig
from ._errors import ConnectionFailed
from ._ibcompat import ib_insync
from ._journal import (
    CANCEL_FAILED,
    CANCELLED,
    DRY_RUN,
    NOT_PLACED,
    REJECTED,
    SKIPPED,
    SUBMITTED,
    UNCONFIRMED,
    Journal,
    JournalError,
)
from ._scriptkit import (
    Outcome,
    RunState,
    ScriptRun,
    UsageError,
    add_common_arguments,
    contract_fields,
    live_open_orders,
    new_parser,
    open_journal,
    order_key,
    paper_account,
    script_main,
    session_config,
    trade_error,
    trade_outcome,
    unconfirmed_message,
    wait_for_acks,
    wait_for_update,
    wait_until,
)
from ._session import SIGTERM_EXIT_CODE, ibkr_session
from ._submit import qualify

log = structlog.get_logger("ibkr_resilience.close")

SCRIPT = "close_positions.py"
CLIENT_ID = 11
EXCHANGE_TIMEZONE = "America/New_York"
_SYMBOL_RE = re.compile(r"[A-Z0-9][A-Z0-9 ./-]{0,11}")


def exchange_timezone() -> tzinfo:
    """New York, where US stocks trade; UTC if the system has no time-zone database."""
    try:
        return ZoneInfo(EXCHANGE_TIMEZONE)
    except ZoneInfoNotFoundError:
        log.warning("close.no_tzdata", timezone=EXCHANGE_TIMEZONE, using="UTC")
        return UTC


def trading_date(now: datetime | None = None) -> date:
    """The exchange's calendar date: the day a DAY or MOC closing order belongs to.

    UTC would switch dates at 20:00 New York time (19:00 in winter), in the middle of
    the evening in which an after-close cron run would look for today's closing orders.
    """
    moment = datetime.now(UTC) if now is None else now
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(exchange_timezone()).date()


def close_ref(symbol: str, day: date) -> str:
    """``close:2024-05-06:AAPL``: the orderRef that marks a closing order as ours."""
    return f"close:{day.isoformat()}:{symbol}"


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser(
        SCRIPT,
        "Close the paper account's positions: cancel the open orders on the affected "
        "symbols first (and wait until the gateway confirms), then send one closing order "
        "per position (market, or market-on-close with --moc). Without --symbols, every "
        "position and every open order of the account is affected.",
    )
    parser.add_argument(
        "--symbols", nargs="+", metavar="SYMBOL",
        help="only these symbols (space- or comma-separated); their open orders are "
        "cancelled even where there is no position",
    )  # fmt: skip
    parser.add_argument("--moc", action="store_true",
                        help="close with market-on-close orders instead of market orders")
    parser.add_argument(
        "--global-cancel", action="store_true",
        help="cancel with reqGlobalCancel: EVERY open order of the login (all accounts, all "
        "symbols, orders entered in TWS); for when another client id holding orders is "
        "still connected. Not with --symbols",
    )  # fmt: skip
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
            if not _SYMBOL_RE.fullmatch(symbol):
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
    args, env, state, run_id, timeout = run.args, run.env, run.state, run.run_id, run.ack_timeout
    symbols = parse_symbols(args.symbols)
    if args.global_cancel and symbols:
        raise UsageError("--global-cancel cancels every order of the login; it cannot be "
                         "combined with --symbols")  # fmt: skip
    config = session_config(args, env)
    with open_journal(args.journal, env, script=SCRIPT, run_id=run_id) as journal:
        scope = ", ".join(symbols) if symbols else "all positions"
        mode = " (dry run: nothing is cancelled or placed)" if args.dry_run else ""
        kind = "MOC" if args.moc else "MKT"
        state.header = f"{SCRIPT}: close {scope} with {kind} orders{mode}"
        state.footer = [f"journal: {journal.path}"]
        log.info("close.start", symbols=symbols or None, order_type=kind,
                 dry_run=args.dry_run, journal=str(journal.path))  # fmt: skip
        closer = Closer(
            journal, state, config, symbols=symbols, moc=args.moc, timeout=timeout,
            dry_run=args.dry_run, global_cancel=args.global_cancel,
        )  # fmt: skip
        with ibkr_session(client_id=config.client_id, config=config) as ib:
            closer.run(ib)


class Closer:
    """One run: cancel, confirm, re-read, close; every step journaled."""

    def __init__(
        self,
        journal: Journal,
        state: RunState,
        config: SessionConfig,
        *,
        symbols: list[str],
        moc: bool,
        timeout: float,
        dry_run: bool,
        global_cancel: bool,
    ) -> None:
        self.journal = journal
        self.state = state
        self.config = config
        self.symbols = symbols
        self.order_type = "MOC" if moc else "MKT"
        self.timeout = timeout
        self.dry_run = dry_run
        self.global_cancel = global_cancel
        self.account = ""
        self.day = trading_date()
        self._contracts: dict[str, Any] = {}
        self._in_flight: tuple[Any, Any, Any] | None = None  # (position, order, trade)

    # ------------------------------------------------------------------ the run
    def run(self, ib: Any) -> None:
        try:
            self._run(ib)
        except BaseException as exc:
            self._journal_interrupted(exc)
            raise

    def _run(self, ib: Any) -> None:
        ib.RequestTimeout = self.timeout
        self.account = paper_account(ib)
        positions = self._positions(ib)
        orders = live_open_orders(ib, self.account)
        scope = set(self.symbols) or set(positions) | {t.contract.symbol for t in orders}
        pending = self._pending_closes(orders)
        to_cancel = [
            t for t in orders
            if t.contract.symbol in scope and order_key(t.order) not in pending
        ]  # fmt: skip
        log.info("close.checked", account=self.account, trading_date=self.day.isoformat(),
                 positions={s: p.position for s, p in positions.items() if s in scope},
                 to_cancel=len(to_cancel), pending_closes=len(pending))  # fmt: skip
        idle = sorted(s for s in self.symbols if s not in positions
                      and not any(t.contract.symbol == s for t in orders))  # fmt: skip
        if idle:
            self.state.footer.append(f"no position and no open order: {', '.join(idle)}")
        if self.dry_run:
            self._dry_run(ib, positions, to_cancel, pending, scope)
            return
        blocked = self._cancel(ib, to_cancel)
        if to_cancel:
            # Anything may have filled before its cancel landed: close what is there now.
            positions = self._positions(ib)
            orders = live_open_orders(ib, self.account)
            pending = self._pending_closes(orders)
        live: dict[str, list[Any]] = {}
        for t in orders:
            if order_key(t.order) not in pending:
                live.setdefault(t.contract.symbol, []).append(t)
        closing = {s: p for s, p in sorted(positions.items()) if s in scope}
        failures = self._qualify(ib, closing)
        for symbol, pos in closing.items():
            if not self.state.check_connected(ib):
                return
            pending_trade = next(
                (t for t in pending.values() if t.contract.symbol == symbol), None
            )
            if symbol in blocked or symbol in live:
                ids = ", ".join(str(t.order.orderId) for t in live.get(symbol, []))
                reason = blocked.get(symbol) or f"order(s) {ids} on {symbol} are still live"
                self._record_close(pos, NOT_PLACED, message=f"not closed: {reason}")
            elif pending_trade is not None:
                self._skip_pending(pos, pending_trade)
            elif symbol in failures:
                self._record_close(pos, REJECTED, message=failures[symbol])
            else:
                self._close(ib, pos)

    # ------------------------------------------------------------------ reading
    def _positions(self, ib: Any) -> dict[str, Any]:
        """Non-zero positions of the account, freshly asked (not the cached view)."""
        return {
            p.contract.symbol: p
            for p in ib.reqPositions()
            if p.account == self.account and p.position
        }

    def _pending_closes(self, orders: list[Any]) -> dict[Any, Any]:
        """Today's closing orders still working: the marker that a position is handled."""
        return {
            order_key(t.order): t
            for t in orders
            if t.order.orderRef == close_ref(t.contract.symbol, self.day)
        }

    def _qualify(self, ib: Any, closing: Mapping[str, Any]) -> dict[str, str]:
        contracts = {
            (s, p.contract.secType or "STK", "SMART", p.contract.currency or "USD"): (
                _closing_contract(p)
            )
            for s, p in closing.items()
        }
        if not contracts:
            return {}
        failures = qualify(ib, contracts)
        self._contracts = {key[0]: c for key, c in contracts.items()}
        return {key[0]: reason for key, reason in failures.items()}

    # ------------------------------------------------------------------ cancelling
    def _cancel(self, ib: Any, to_cancel: list[Any]) -> dict[str, str]:
        """Cancel ``to_cancel`` and wait until none is live; return blocked symbols."""
        if not to_cancel:
            return {}
        blocked: dict[str, str] = {}
        if self.global_cancel:
            log.warning("close.global_cancel", orders=len(to_cancel))
            ib.reqGlobalCancel()
        else:
            by_owner: dict[int, list[Any]] = {}
            for t in to_cancel:
                by_owner.setdefault(t.order.clientId, []).append(t)
            for owner, trades in sorted(by_owner.items()):
                ids = {t.order.orderId for t in trades}
                # A bracket's children go with their parent; cancelling them too would
                # only earn "order not found" errors.
                roots = [t for t in trades if t.order.parentId not in ids]
                manual = [t for t in trades if t.order.orderId <= 0]
                if manual:
                    for t in manual:
                        blocked[t.contract.symbol] = (
                            f"order (permId {t.order.permId}) was entered in TWS by hand; "
                            "cancel it there, or use --global-cancel"
                        )
                    roots = [t for t in roots if t.order.orderId > 0]
                if owner == ib.client.clientId:
                    for t in roots:
                        ib.cancelOrder(t.order)
                elif roots:
                    reason = self._cancel_as(owner, roots)
                    if reason:
                        for t in trades:
                            blocked.setdefault(t.contract.symbol, reason)
        # Wait only for the cancels actually requested: an order whose owner could not
        # be reached stays live, and waiting for it would only delay the report.
        sent = [t for t in to_cancel if t.contract.symbol not in blocked]
        wanted = {order_key(t.order) for t in sent}
        still: list[Any] = list(sent)

        def none_live() -> bool:
            nonlocal still
            live = {order_key(t.order) for t in live_open_orders(ib, self.account)}
            still = [t for t in sent if order_key(t.order) in live & wanted]
            return not still

        if sent:
            wait_until(ib, none_live, self.timeout)
        failed = {order_key(t.order) for t in still}
        failed |= {order_key(t.order) for t in to_cancel if t.contract.symbol in blocked}
        for t in to_cancel:
            symbol = t.contract.symbol
            if order_key(t.order) in failed:
                reason = blocked.get(symbol) or (
                    f"cancel not confirmed within {self.timeout:g} s"
                )
                blocked.setdefault(symbol, f"order {t.order.orderId} not cancelled: {reason}")
                self._record_cancel(t, CANCEL_FAILED, reason)
            else:
                self._record_cancel(t, CANCELLED, "")
        return blocked

    def _cancel_as(self, owner: int, trades: list[Any]) -> str | None:
        """Cancel another client id's orders through a short session as that client.

        One attempt, no alert: if the owner is still connected the gateway answers 326
        at once, and that is a finding for the summary, not an outage to page about.
        """
        wanted = {order_key(t.order) for t in trades}
        config = self.config.replace(client_id=owner, max_attempts=1)
        quiet = DisabledAlert("cancel session of close_positions: failures are in its summary")
        log.info("close.cancel_as", client_id=owner, orders=len(trades))
        try:
            with ibkr_session(client_id=owner, config=config, alert=quiet) as other:
                other.RequestTimeout = self.timeout
                mine = [t for t in other.openTrades() if order_key(t.order) in wanted]
                for t in mine:
                    other.cancelOrder(t.order)
                wait_for_update(other, lambda: all(t.isDone() for t in mine), self.timeout)
        except ConnectionFailed as exc:
            return (
                f"its orders belong to client id {owner}, which could not be used "
                f"({exc.failure_class}: still connected?); stop that client and re-run, "
                "or use --global-cancel"
            )
        return None

    # ------------------------------------------------------------------ closing
    def _close(self, ib: Any, pos: Any) -> None:
        contract = self._contracts[pos.contract.symbol]
        order = self._closing_order(pos)
        order.orderId = ib.client.getReqId()  # known before sending, for the journal
        self._in_flight = (pos, order, None)
        trade = ib.placeOrder(contract, order)
        self._in_flight = (pos, order, trade)
        wait_for_acks(ib, [trade], self.timeout)
        outcome = trade_outcome(trade)
        if outcome == "rejected":
            event, message = REJECTED, trade_error(trade) or "cancelled by the gateway"
        elif outcome == "pending":
            event = UNCONFIRMED
            message = unconfirmed_message(ib, self.timeout)
        else:
            event, message = SUBMITTED, ""
        self._record_close(pos, event, trade=trade, message=message)
        self._in_flight = None

    def _closing_order(self, pos: Any) -> Any:
        side = "SELL" if pos.position > 0 else "BUY"
        common: dict[str, Any] = {
            "tif": "DAY",
            "account": self.account,
            "orderRef": close_ref(pos.contract.symbol, self.day),
        }
        return ib_insync.Order(
            orderType=self.order_type, action=side, totalQuantity=abs(pos.position), **common
        )

    def _skip_pending(self, pos: Any, trade: Any) -> None:
        order = trade.order
        side = "SELL" if pos.position > 0 else "BUY"
        remaining = trade.orderStatus.remaining or order.totalQuantity
        if order.action != side or remaining != abs(pos.position):
            self._record_close(
                pos, NOT_PLACED, trade=trade,
                message=f"a pending closing order {order.orderId} ({order.action} "
                f"{_qty(remaining)}) does not match the position; not sending another: "
                "check TWS",
            )  # fmt: skip
            return
        self._record_close(
            pos, SKIPPED, trade=trade,
            message=f"closing order {order.orderId} already pending ({trade.orderStatus.status})",
        )  # fmt: skip

    def _dry_run(
        self, ib: Any, positions: dict[str, Any], to_cancel: list[Any],
        pending: dict[Any, Any], scope: set[str],
    ) -> None:  # fmt: skip
        for t in to_cancel:
            self._record_cancel(t, DRY_RUN, "would cancel")
        closing = {s: p for s, p in sorted(positions.items()) if s in scope}
        failures = self._qualify(ib, closing)
        pending_by_symbol = {t.contract.symbol: t for t in pending.values()}
        for symbol, pos in closing.items():
            if symbol in failures:
                self._record_close(pos, REJECTED, message=failures[symbol])
                continue
            order = self._closing_order(pos)
            if symbol in pending_by_symbol:
                message = f"would skip: closing order {pending_by_symbol[symbol].order.orderId}" \
                    " already pending"  # fmt: skip
            else:
                message = f"would place {order.action} {_qty(order.totalQuantity)} " \
                    f"{symbol} {self.order_type}"  # fmt: skip
            self._record_close(pos, DRY_RUN, message=message)

    # ------------------------------------------------------------------ records
    def _record_cancel(self, trade: Any, event: str, message: str) -> None:
        order = trade.order
        fields = {
            "order_ref": order.orderRef,
            "order_id": order.orderId,
            "perm_id": order.permId or None,
            "client_id": order.clientId,
            "account": order.account or self.account,
            "contract": contract_fields(trade.contract),
            "side": order.action,
            "quantity": _qty(order.totalQuantity),
            "order_type": order.orderType,
            "status": "Cancelled" if event == CANCELLED else trade.orderStatus.status,
            "message": message,
        }
        self.journal.append(event, **fields)
        what = (f"cancel {order.action} {_qty(order.totalQuantity)} {trade.contract.symbol} "
                f"{order.orderType} (client {order.clientId})")  # fmt: skip
        self.state.outcomes.append(
            Outcome(event, what, order.orderRef, fields["status"], order.orderId, message)
        )
        log.info("close.cancel", outcome=event, order_id=order.orderId,
                 client_id=order.clientId, symbol=trade.contract.symbol,
                 message=message or None)  # fmt: skip

    def _record_close(
        self, pos: Any, event: str, *, trade: Any = None, message: str = "",
        order: Any = None,
    ) -> None:  # fmt: skip
        symbol = pos.contract.symbol
        side = "SELL" if pos.position > 0 else "BUY"
        order = trade.order if trade is not None else order
        order_id = order.orderId if order is not None and event != DRY_RUN else None
        status = trade.orderStatus.status if trade is not None else ""
        perm_id = (trade.orderStatus.permId or trade.order.permId or None) if trade else None
        ref = order.orderRef if order is not None else close_ref(symbol, self.day)
        fields = {
            "order_ref": ref,
            "order_id": order_id,
            "perm_id": perm_id,
            "account": self.account,
            "contract": contract_fields(pos.contract),
            "side": side,
            "quantity": _qty(abs(pos.position)),
            "order_type": order.orderType if order is not None else self.order_type,
            "tif": "DAY",
            "position": _qty(pos.position),
            "status": status,
            "message": message,
        }
        self.journal.append(event, **fields)
        what = f"close {symbol} {_qty(pos.position):+}: {side} {_qty(abs(pos.position))} " \
            f"{fields['order_type']}"  # fmt: skip
        self.state.outcomes.append(Outcome(event, what, ref, status, order_id, message))
        log.info("close.order", outcome=event, symbol=symbol, order_ref=ref,
                 order_id=order_id, status=status, message=message or None)  # fmt: skip

    def _journal_interrupted(self, exc: BaseException) -> None:
        """Journal the closing order in flight when the run is cut short."""
        if self._in_flight is None:
            return
        pos, order, trade = self._in_flight
        self._in_flight = None
        if isinstance(exc, SystemExit) and exc.code == SIGTERM_EXIT_CODE:
            why = "terminated (SIGTERM)"
        elif isinstance(exc, KeyboardInterrupt):
            why = "interrupted (Ctrl-C)"
        else:
            why = f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(JournalError):
            self._record_close(
                pos, UNCONFIRMED, trade=trade, order=order,
                message=f"{why} while placing, before the gateway confirmed; a re-run "
                "skips it if it is still pending",
            )  # fmt: skip


def _closing_contract(pos: Any) -> Any:
    """The position's contract, routed SMART (positions come without an exchange)."""
    c = pos.contract
    return ib_insync.Contract(
        conId=c.conId, symbol=c.symbol, secType=c.secType or "STK", exchange="SMART",
        currency=c.currency or "USD",
    )  # fmt: skip


def _qty(value: float) -> float | int:
    """Whole share counts as ints in the journal (``10``, not ``10.0``)."""
    return int(value) if float(value).is_integer() else float(value)

"""Reading and checking a plan's CSV text, every row before any is used.

A cron job that places half a plan and then trips over a typo on row 7 leaves the
account in a state nobody planned, so :func:`parse_rows` checks every row first and
raises one :class:`PlanError` listing every problem with its CSV line number. The
columns and rules are documented in ``docs/order-plan.md``.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import re
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from .planned_order import NEEDS_LIMIT, NEEDS_STOP, ROW_ID_LEN, PlannedOrder

SIDES = ("BUY", "SELL")
ORDER_TYPES = ("MKT", "LMT", "STP", "STP LMT", "MOC", "LOC")
TIFS = ("DAY", "GTC", "OPG")
SEC_TYPES = ("STK",)
REQUIRED_COLUMNS = ("symbol", "side", "quantity", "order_type")
OPTIONAL_COLUMNS = (
    "id",
    "limit_price",
    "stop_price",
    "tif",
    "take_profit",
    "stop_loss",
    "sec_type",
    "exchange",
    "currency",
)
COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS


class Limits(NamedTuple):
    """The fat-finger guard: the most one row may order (shares) and be worth (quantity x
    limit or stop price, in the contract's currency); over it is a validation error."""

    max_quantity: int = 10_000
    max_notional: float = 1_000_000.0


SYMBOL_RE = re.compile(r"[A-Z0-9][A-Z0-9 ./-]{0,11}")
"""A ticker symbol as IB writes it (``AAPL``, ``BRK B``), upper case; also ``--symbols``."""

_BRACKET_TYPES = frozenset({"MKT", "LMT", "STP", "STP LMT"})
# IB accepts OPG only for market/limit-on-open and auction orders only as DAY orders.
_TIFS_FOR_TYPE = {
    "MKT": ("DAY", "GTC", "OPG"),
    "LMT": ("DAY", "GTC", "OPG"),
    "STP": ("DAY", "GTC"),
    "STP LMT": ("DAY", "GTC"),
    "MOC": ("DAY",),
    "LOC": ("DAY",),
}
# Only characters TWS passes through untouched in an orderRef.
_ID_RE = re.compile(rf"[A-Za-z0-9_.-]{{1,{ROW_ID_LEN}}}")
_EXCHANGE_RE = re.compile(r"[A-Z0-9.]{1,20}")
_CURRENCY_RE = re.compile(r"[A-Z]{3}")


class PlanError(ValueError):
    """The plan cannot be used; nothing in it may be sent.

    ``problems`` lists every problem (``"line N: ..."``); ``str()`` is a one-line summary
    followed by one indented line per problem, so the cron mail alone says what to fix.
    """

    def __init__(self, summary: str, problems: list[str] | None = None) -> None:
        self.summary = summary
        self.problems = list(problems) if problems else [summary]
        details = "".join(f"\n  {p}" for p in problems or [])
        super().__init__(summary + details)


def parse_rows(text: str, src: str, limits: Limits | None = None) -> list[PlannedOrder]:
    """The validated rows of plan text (``plan_id`` still empty); ``src`` names the plan
    in the error. Raises :class:`PlanError` listing every problem of every row."""
    rows = csv.reader(io.StringIO(text, newline=""))
    try:
        return _parse_rows(rows, src, limits or Limits())
    except csv.Error as exc:  # e.g. a cell over the csv module's field size limit
        # The reader stops at the line it could not read: name it, as every other
        # problem names its line (the cell itself is never quoted: it may be huge).
        raise PlanError(
            f"invalid order plan {src}: line {rows.line_num} is not readable as CSV: {exc}"
        ) from None


def _parse_rows(rows: Any, src: str, limits: Limits) -> list[PlannedOrder]:
    problems: list[tuple[int, str]] = []
    header, header_line = _read_header(rows)
    if header is None:
        raise PlanError(f"order plan {src} is empty: expected a header line and orders")
    missing = _check_header(header, header_line, problems)
    orders: list[PlannedOrder] = []
    first_line_of_id: dict[str, int] = {}
    data_rows, prev_end = 0, header_line
    for cells in rows:
        line, prev_end = prev_end + 1, rows.line_num  # a quoted cell may span lines
        if _is_blank_or_comment(cells):
            continue
        data_rows += 1
        row = _Row(line, header, cells, missing, problems)
        given = row.text("id", "")
        row_id = given or str(data_rows)
        first = first_line_of_id.setdefault(row_id.casefold(), line)
        if first != line:
            row.fail(f"duplicate id {row_id!r} (first used on line {first})")
        order = _parse_row(row, row_id)
        if order is not None and _within(row, order, limits):
            # Ids are case-insensitive (``Abc-1`` is ``abc-1``): the orderRef carries one
            # spelling, so that a re-typed id can never look like a new row.
            orders.append(order._replace(row_id=row_id.lower(), positional=not given))
    if not data_rows:
        problems.append((header_line, "the plan has a header but no orders"))
    if problems:
        problems.sort(key=lambda p: p[0])
        lines = sorted({n for n, _ in problems})
        raise PlanError(
            f"invalid order plan {src}: {_count(len(problems), 'problem')} on "
            f"{_count(len(lines), 'line')} ({', '.join(map(str, lines))})",
            [f"line {n}: {msg}" for n, msg in problems],
        )
    return orders


def _read_header(rows: Any) -> tuple[list[str] | None, int]:
    for cells in rows:
        if not _is_blank_or_comment(cells):
            names = [re.sub(r"[\s-]+", "_", c.strip().lower()) for c in cells]
            return names, rows.line_num
    return None, 0


def _check_header(header: list[str], line: int, problems: list[tuple[int, str]]) -> set[str]:
    """Report header problems; return the missing required columns (not re-reported per row)."""
    for i, col in enumerate(header):
        if col and col in header[:i]:
            problems.append((line, f"column {col!r} appears twice"))
        elif col and col not in COLUMNS:
            import difflib  # only for a bad header: not worth its import on every run

            close = difflib.get_close_matches(col, COLUMNS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append((line, f"unknown column {col!r}{hint}"))
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    problems.extend((line, f"missing required column {c!r}") for c in missing)
    return set(missing)


def _is_blank_or_comment(cells: list[str]) -> bool:
    return not any(c.strip() for c in cells) or cells[0].lstrip().startswith("#")


class _Row:
    """One data row's cells plus the problem sink, so each check stays one line."""

    def __init__(
        self,
        line: int,
        header: list[str],
        cells: list[str],
        missing: set[str],
        problems: list[tuple[int, str]],
    ) -> None:
        self.line, self.missing, self.problems = line, missing, problems
        self.cells: dict[str, str] = {}
        for i, cell in enumerate(cells):
            col = header[i] if i < len(header) else ""
            if col in COLUMNS:
                self.cells[col] = cell.strip()
            elif not col and cell.strip():
                self.fail(f"value {cell.strip()!r} in a column with no header name")

    def fail(self, message: str) -> None:
        self.problems.append((self.line, message))

    def text(self, col: str, default: str = "") -> str:
        return self.cells.get(col, "") or default

    def choice(self, col: str, allowed: tuple[str, ...], default: str = "") -> str | None:
        raw = self.text(col, default)
        value = re.sub(r"[\s_]+", " ", raw.upper())
        if value in allowed:
            return value
        if col not in self.missing:
            what = f"{raw!r} is not" if raw else "is empty; expected"
            self.fail(f"{col} {what} one of {', '.join(allowed)}")
        return None

    def pattern(self, col: str, regex: re.Pattern[str], default: str, hint: str) -> str | None:
        value = self.text(col, default).upper()
        if regex.fullmatch(value):
            return value
        if col not in self.missing:
            self.fail(f"{col} {self.text(col)!r} is not {hint}" if value else f"{col} is empty")
        return None

    def number(self, col: str) -> Decimal | None:
        """A positive finite number, or None (empty cells are not reported here)."""
        raw = self.text(col)
        if not raw:
            if col in REQUIRED_COLUMNS and col not in self.missing:
                self.fail(f"{col} is empty")
            return None
        try:
            value = Decimal(raw)
        except InvalidOperation:
            value = Decimal("NaN")
        if not value.is_finite():
            self.fail(f"{col} {raw!r} is not a number")
        elif value <= 0:
            self.fail(f"{col} {raw!r} must be greater than zero")
        elif not math.isfinite(float(value)) or float(value) == 0:
            # 1e400 is a finite Decimal but an infinite float; 1e-400 a zero one.
            self.fail(f"{col} {raw!r} is out of range")
        else:
            return value
        return None


def _parse_row(row: _Row, row_id: str) -> PlannedOrder | None:
    """Check one row (every field, then the cross-field rules); None if it has problems."""
    before = len(row.problems)
    if not _ID_RE.fullmatch(row_id):
        row.fail(f"id {row_id!r} must be 1-{ROW_ID_LEN} letters, digits, '_', '.' or '-'")
    symbol = row.pattern("symbol", SYMBOL_RE, "", "a ticker symbol (e.g. AAPL)")
    side = row.choice("side", SIDES)
    qty = row.number("quantity")
    if qty is not None and qty != qty.to_integral_value():
        row.fail(f"quantity {row.text('quantity')!r} must be a whole number of shares")
    order_type = row.choice("order_type", ORDER_TYPES)
    tif = row.choice("tif", TIFS, default="DAY")
    prices = {c: row.number(c) for c in ("limit_price", "stop_price", "take_profit", "stop_loss")}
    row.choice("sec_type", SEC_TYPES, default="STK")
    exchange = row.pattern("exchange", _EXCHANGE_RE, "SMART", "an exchange code (e.g. SMART)")
    currency = row.pattern("currency", _CURRENCY_RE, "USD", "a 3-letter currency code")
    if order_type and tif:
        _check_prices(row, order_type, tif)
        if side and prices["take_profit"] and prices["stop_loss"]:
            _check_bracket(row, side, order_type, tif, prices)
    if (
        len(row.problems) > before
        or symbol is None
        or side is None
        or qty is None
        or order_type is None
        or tif is None
        or exchange is None
        or currency is None
    ):
        return None
    lmt, stp, tp, sl = (None if v is None else float(v) for v in prices.values())
    return PlannedOrder(
        "",
        row_id,
        row.line,
        symbol,
        side,
        int(qty),
        order_type,
        tif,
        lmt,
        stp,
        tp,
        sl,
        exchange=exchange,
        currency=currency,
    )


def _within(row: _Row, order: PlannedOrder, limits: Limits) -> bool:
    """The fat-finger guard; reports the row and the setting that raises the limit."""
    if order.quantity > limits.max_quantity:
        row.fail(
            f"quantity {order.quantity} is over the per-order limit of {limits.max_quantity} "
            "shares (IBKR_MAX_ORDER_QUANTITY)"
        )
        return False
    price = order.limit_price or order.stop_price
    if price is not None and order.quantity * price > limits.max_notional:
        row.fail(
            f"notional {order.quantity} x {price:g} = {order.quantity * price:,.0f} is over "
            f"the per-order limit of {limits.max_notional:,.0f} (IBKR_MAX_ORDER_NOTIONAL)"
        )
        return False
    return True


def _check_prices(row: _Row, order_type: str, tif: str) -> None:
    for col, needed_by in (("limit_price", NEEDS_LIMIT), ("stop_price", NEEDS_STOP)):
        given = bool(row.text(col))
        if order_type in needed_by and not given:
            row.fail(f"{order_type} order needs a {col}")
        elif given and order_type not in needed_by:
            row.fail(f"{order_type} order does not use a {col}; leave it empty")
    if tif not in _TIFS_FOR_TYPE[order_type]:
        allowed = ", ".join(_TIFS_FOR_TYPE[order_type])
        row.fail(f"tif {tif} is not allowed for {order_type} orders (allowed: {allowed})")
    if bool(row.text("take_profit")) != bool(row.text("stop_loss")):
        row.fail("a bracket needs both take_profit and stop_loss (or neither)")


def _check_bracket(
    row: _Row, side: str, order_type: str, tif: str, prices: dict[str, Decimal | None]
) -> None:
    if order_type not in _BRACKET_TYPES:
        row.fail(f"a bracket (take_profit/stop_loss) cannot be attached to a {order_type} order")
        return
    if tif not in ("DAY", "GTC"):
        row.fail(f"a bracket must be DAY or GTC, not {tif}")
    entry_col = "stop_price" if order_type == "STP" else "limit_price"
    entry = prices[entry_col] if order_type != "MKT" else None
    tp, sl = prices["take_profit"], prices["stop_loss"]
    legs = [("take_profit", tp), (entry_col, entry), ("stop_loss", sl)]
    chain = [(c, v) for c, v in legs if v is not None]
    values = [v for _, v in chain]
    ascending = all(a < b for a, b in itertools.pairwise(values))
    descending = all(a > b for a, b in itertools.pairwise(values))
    if (side == "BUY" and not descending) or (side == "SELL" and not ascending):
        op = " > " if side == "BUY" else " < "
        shown = op.join(f"{c} ({v})" for c, v in chain)
        row.fail(f"{side} bracket legs are on the wrong side: need {shown}")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"

"""The order plan: a CSV file, validated as a whole before anything is sent.

A cron job that places half a plan and then trips over a typo on row 7 leaves the
account in a state nobody planned, so :func:`load_plan` checks every row first and
raises one :class:`PlanError` listing every problem with its CSV line number.

Every order carries an ``orderRef`` of ``<plan id>:<row id>`` (bracket legs add ``:tp``
and ``:sl``). The plan id is the file's stem plus a hash of the plan's canonical content,
so re-running the same file yields the same refs (the submit script skips refs the
account already has), while an edited plan is a new plan. The format is documented in
``docs/order-plan.md``.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import hashlib
import io
import itertools
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from ..._connect.compat import ib_insync

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
MAX_ORDER_REF_LEN = 40

_NEEDS_LIMIT = frozenset({"LMT", "STP LMT", "LOC"})
_NEEDS_STOP = frozenset({"STP", "STP LMT"})
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
# Reduce the other leg on a partial fill, with overfill protection: cancelling it
# outright (type 1) would leave the rest of a partly closed position unprotected.
_BRACKET_OCA_TYPE = 2

# Row ids and the plan-id stem are limited so that the longest ref,
# "<stem 12>-<hash 8>:<id 14>:tp", stays within MAX_ORDER_REF_LEN and uses only
# characters TWS passes through untouched.
_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,14}")
_SYMBOL_RE = re.compile(r"[A-Z0-9][A-Z0-9 ./-]{0,11}")
_EXCHANGE_RE = re.compile(r"[A-Z0-9.]{1,20}")
_CURRENCY_RE = re.compile(r"[A-Z]{3}")
_STEM_LEN = 12
_HASH_LEN = 8

ContractKey = tuple[str, str, str, str]
"""(symbol, sec_type, exchange, currency): rows with the same key share one contract."""


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


@dataclass(frozen=True)
class PlannedOrder:
    """One validated row. Prices are ``None`` when the row leaves them empty."""

    plan_id: str
    row_id: str
    line: int
    symbol: str
    side: str
    quantity: int
    order_type: str
    tif: str
    limit_price: float | None = None
    stop_price: float | None = None
    take_profit: float | None = None
    stop_loss: float | None = None
    sec_type: str = "STK"
    exchange: str = "SMART"
    currency: str = "USD"

    @property
    def order_ref(self) -> str:
        """The entry order's ``orderRef``; the key the submit script deduplicates on."""
        return f"{self.plan_id}:{self.row_id}"

    @property
    def is_bracket(self) -> bool:
        return self.take_profit is not None

    @property
    def order_refs(self) -> tuple[str, ...]:
        """Every ref this row places, so a crash between legs is detected per leg."""
        ref = self.order_ref
        return (ref, f"{ref}:tp", f"{ref}:sl") if self.is_bracket else (ref,)

    @property
    def contract_key(self) -> ContractKey:
        return (self.symbol, self.sec_type, self.exchange, self.currency)

    def contract(self) -> ib_insync.Contract:
        """A fresh, unqualified contract (qualifying fills it in place)."""
        return ib_insync.Stock(self.symbol, self.exchange, self.currency)

    def build_orders(
        self, next_id: Callable[[], int], *, account: str = ""
    ) -> list[ib_insync.Order]:
        """The order(s) to place, in placing order.

        ``next_id`` is usually ``ib.client.getReqId``; taking it as a callable keeps this
        free of any connection, so a dry run can pass ``itertools.count(1).__next__``.
        A bracket's parent and take-profit leg have ``transmit=False`` so that TWS holds
        them until the stop-loss leg arrives and activates all three together.
        """
        common: dict[str, Any] = {"tif": self.tif, "account": account}
        parent = self._entry_order(next_id(), **common)
        if self.take_profit is None or self.stop_loss is None:
            return [parent]
        parent.transmit = False
        exit_side = "SELL" if self.side == "BUY" else "BUY"
        legs: dict[str, Any] = {
            "parentId": parent.orderId,
            "ocaGroup": f"{self.order_ref}:oca",
            "ocaType": _BRACKET_OCA_TYPE,
            **common,
        }
        take_profit = ib_insync.LimitOrder(
            exit_side, self.quantity, self.take_profit, orderId=next_id(),
            orderRef=f"{self.order_ref}:tp", transmit=False, **legs,
        )  # fmt: skip
        stop_loss = ib_insync.StopOrder(
            exit_side, self.quantity, self.stop_loss, orderId=next_id(),
            orderRef=f"{self.order_ref}:sl", transmit=True, **legs,
        )  # fmt: skip
        return [parent, take_profit, stop_loss]

    def _entry_order(self, order_id: int, **common: Any) -> ib_insync.Order:
        kw: dict[str, Any] = {"orderId": order_id, "orderRef": self.order_ref, **common}
        side, qty = self.side, self.quantity
        lmt = _price_or(self.limit_price, self.order_type in _NEEDS_LIMIT, "limit_price")
        stp = _price_or(self.stop_price, self.order_type in _NEEDS_STOP, "stop_price")
        if self.order_type == "MKT":
            return ib_insync.MarketOrder(side, qty, **kw)
        if self.order_type == "LMT":
            return ib_insync.LimitOrder(side, qty, lmt, **kw)
        if self.order_type == "STP":
            return ib_insync.StopOrder(side, qty, stp, **kw)
        if self.order_type == "STP LMT":
            return ib_insync.StopLimitOrder(side, qty, lmt, stp, **kw)
        if self.order_type == "LOC":
            kw["lmtPrice"] = lmt
        return ib_insync.Order(orderType=self.order_type, action=side, totalQuantity=qty, **kw)

    def journal_fields(self) -> dict[str, Any]:
        """The row as the journal records it (see ``docs/order-plan.md``)."""
        return {
            "plan_id": self.plan_id,
            "row_id": self.row_id,
            "line": self.line,
            "order_ref": self.order_ref,
            "contract": {
                "symbol": self.symbol,
                "sec_type": self.sec_type,
                "exchange": self.exchange,
                "currency": self.currency,
            },
            "side": self.side,
            "quantity": self.quantity,
            "order_type": self.order_type,
            "tif": self.tif,
            "limit_price": self.limit_price,
            "stop_price": self.stop_price,
            "take_profit": self.take_profit,
            "stop_loss": self.stop_loss,
        }


def _price_or(value: float | None, needed: bool, col: str) -> float:
    """``Order``'s "unset" price for unused prices; a needed one must be there."""
    if value is not None:
        return value
    if needed:
        raise ValueError(f"{col} is required for this order type")
    return float(ib_insync.util.UNSET_DOUBLE)


@dataclass(frozen=True)
class Plan:
    """A validated plan: ``plan_id`` names it in every ``orderRef``."""

    source: str
    plan_id: str
    orders: tuple[PlannedOrder, ...]

    def __iter__(self) -> Iterator[PlannedOrder]:
        return iter(self.orders)

    def __len__(self) -> int:
        return len(self.orders)

    def contracts(self) -> dict[ContractKey, ib_insync.Contract]:
        """One fresh contract per distinct key, in plan order, to qualify in one call."""
        contracts: dict[ContractKey, ib_insync.Contract] = {}
        for order in self.orders:
            contracts.setdefault(order.contract_key, order.contract())
        return contracts

    def by_ref(self) -> dict[str, PlannedOrder]:
        """Every leg's ref mapped to its row, for matching the account's open orders."""
        return {ref: o for o in self.orders for ref in o.order_refs}


def load_plan(path: str | os.PathLike[str]) -> Plan:
    """Read and validate a plan file; raise :class:`PlanError` on any problem."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise PlanError(f"cannot read order plan {p}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")  # tolerate the BOM spreadsheet exports add
    except UnicodeDecodeError as exc:
        raise PlanError(
            f"order plan {p} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start}); save it as CSV UTF-8"
        ) from None
    return parse_plan(text, name=p.stem, source=str(p))


def parse_plan(text: str, *, name: str = "plan", source: str | None = None) -> Plan:
    """Validate plan text; ``name`` seeds the plan id (``load_plan`` passes the stem)."""
    src = source or name
    problems: list[tuple[int, str]] = []
    rows = csv.reader(io.StringIO(text, newline=""))
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
        row_id = row.text("id", str(data_rows))
        first = first_line_of_id.setdefault(row_id.casefold(), line)
        if first != line:
            row.fail(f"duplicate id {row_id!r} (first used on line {first})")
        order = _parse_row(row, row_id)
        if order is not None:
            orders.append(order)
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
    plan_id = _plan_id(name, orders)
    return Plan(src, plan_id, tuple(dataclasses.replace(o, plan_id=plan_id) for o in orders))


def _plan_id(name: str, orders: list[PlannedOrder]) -> str:
    """``<stem>-<8 hex>``: the stem for humans, the hash so an edited plan is a new plan.

    The hash covers the whole name (the visible stem is cut to 12 characters, and daily
    files often differ only in a date at the end) and the parsed rows, not the bytes, so
    re-saving the file with other spacing, letter case, column order, line endings or
    comments keeps the id.
    """
    skip = {"plan_id", "line"}
    rows = [{k: v for k, v in dataclasses.asdict(o).items() if k not in skip} for o in orders]
    canonical = {"name": name, "rows": rows}
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.sha256(blob).hexdigest()[:_HASH_LEN]
    stem = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:_STEM_LEN].strip("-")
    return f"{stem or 'plan'}-{digest}"


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
        self, line: int, header: list[str], cells: list[str], missing: set[str],
        problems: list[tuple[int, str]],
    ) -> None:  # fmt: skip
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
        else:
            return value
        return None


def _parse_row(row: _Row, row_id: str) -> PlannedOrder | None:
    """Check one row (every field, then the cross-field rules); None if it has problems."""
    before = len(row.problems)
    if not _ID_RE.fullmatch(row_id):
        row.fail(f"id {row_id!r} must be 1-14 letters, digits, '_', '.' or '-'")
    symbol = row.pattern("symbol", _SYMBOL_RE, "", "a ticker symbol (e.g. AAPL)")
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
        or symbol is None or side is None or qty is None or order_type is None
        or tif is None or exchange is None or currency is None
    ):  # fmt: skip
        return None
    lmt, stp, tp, sl = (None if v is None else float(v) for v in prices.values())
    return PlannedOrder(
        "", row_id, row.line, symbol, side, int(qty), order_type, tif,
        lmt, stp, tp, sl, exchange=exchange, currency=currency,
    )  # fmt: skip


def _check_prices(row: _Row, order_type: str, tif: str) -> None:
    for col, needed_by in (("limit_price", _NEEDS_LIMIT), ("stop_price", _NEEDS_STOP)):
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

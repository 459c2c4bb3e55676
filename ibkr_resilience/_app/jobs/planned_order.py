"""One validated plan row and the orders it places, under refs that make it idempotent.

Every order carries an ``orderRef`` of ``<plan id>:<row id>`` (bracket legs add ``:tp``
and ``:sl``), so the submit script can tell from the account alone whether a row was
already placed. The lengths below keep the longest ref within what TWS passes through
untouched. The format is documented in ``docs/order-plan.md``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from ..._connect import compat

MAX_ORDER_REF_LEN = 40
# Row ids and plan ids are limited so that the longest ref, "<plan id 21>:<id 14>:tp"
# (a derived plan id is "<stem 12>-<hash 8>"), stays within MAX_ORDER_REF_LEN and uses
# only characters TWS passes through untouched.
ROW_ID_LEN = 14
PLAN_STEM_LEN = 12
PLAN_HASH_LEN = 8
PLAN_ID_LEN = PLAN_STEM_LEN + 1 + PLAN_HASH_LEN

CONTENT_FIELDS = (
    "contract",
    "side",
    "quantity",
    "order_type",
    "tif",
    "limit_price",
    "stop_price",
    "take_profit",
    "stop_loss",
)
"""The journal fields that say what a row orders (not where it is in the file): a change
in any of them after the row was placed is a changed row (docs/order-plan.md)."""
FINGERPRINT_LEN = 12

NEEDS_LIMIT = frozenset({"LMT", "STP LMT", "LOC"})
"""Order types that need a ``limit_price``."""
NEEDS_STOP = frozenset({"STP", "STP LMT"})
"""Order types that need a ``stop_price``."""
# Reduce the other leg on a partial fill, with overfill protection: cancelling it
# outright (type 1) would leave the rest of a partly closed position unprotected.
_BRACKET_OCA_TYPE = 2

ContractKey = tuple[str, str, str, str]
"""(symbol, sec_type, exchange, currency): rows with the same key share one contract."""


class PlannedOrder(NamedTuple):
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
    positional: bool = False
    """No ``id`` column value: ``row_id`` is the row's number, which shifts when a row is
    inserted above it (see :func:`.placements.moved_from`)."""

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

    def contract(self) -> compat.Contract:
        """A fresh, unqualified contract (qualifying fills it in place)."""
        return compat.Stock(self.symbol, self.exchange, self.currency)

    def build_orders(self, next_id: Callable[[], int], *, account: str = "") -> list[compat.Order]:
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

        def leg(kind: Callable[..., compat.Order], price: float, suffix: str) -> compat.Order:
            # Transmit only with the last leg: TWS then activates all three together.
            last = suffix == "sl"
            return kind(
                exit_side,
                self.quantity,
                price,
                orderId=next_id(),
                orderRef=f"{self.order_ref}:{suffix}",
                transmit=last,
                **legs,
            )

        take_profit = leg(compat.LimitOrder, self.take_profit, "tp")  # ids in placing order
        stop_loss = leg(compat.StopOrder, self.stop_loss, "sl")
        return [parent, take_profit, stop_loss]

    def _entry_order(self, order_id: int, **common: Any) -> compat.Order:
        kw: dict[str, Any] = {"orderId": order_id, "orderRef": self.order_ref, **common}
        side, qty = self.side, self.quantity
        lmt = _price_or(self.limit_price, self.order_type in NEEDS_LIMIT, "limit_price")
        stp = _price_or(self.stop_price, self.order_type in NEEDS_STOP, "stop_price")
        if self.order_type == "MKT":
            return compat.MarketOrder(side, qty, **kw)
        if self.order_type == "LMT":
            return compat.LimitOrder(side, qty, lmt, **kw)
        if self.order_type == "STP":
            return compat.StopOrder(side, qty, stp, **kw)
        if self.order_type == "STP LMT":
            return compat.StopLimitOrder(side, qty, lmt, stp, **kw)
        if self.order_type == "LOC":
            kw["lmtPrice"] = lmt
        return compat.Order(orderType=self.order_type, action=side, totalQuantity=qty, **kw)

    @property
    def fingerprint(self) -> str:
        """The row's content fingerprint (:func:`content_fingerprint`)."""
        return content_fingerprint(self._content())

    def journal_fields(self) -> dict[str, Any]:
        """The row as the journal records it (see ``docs/order-plan.md``)."""
        fields = self._content()
        return {
            "plan_id": self.plan_id,
            "row_id": self.row_id,
            "line": self.line,
            "order_ref": self.order_ref,
            **fields,
            "fingerprint": content_fingerprint(fields),
        }

    def _content(self) -> dict[str, Any]:
        return {
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


def content_fingerprint(fields: Mapping[str, Any]) -> str:
    """12 hex digits of SHA-256 over a row's :data:`CONTENT_FIELDS` as the journal
    records them (``PlannedOrder.journal_fields()`` or a journal record read back).

    Numbers are compared as floats, so ``10`` and ``10.0`` (or a record written by an
    older version) give the same fingerprint; fields a record lacks count as ``null``.
    """
    canonical = {k: _canonical(fields.get(k)) for k in CONTENT_FIELDS}
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:FINGERPRINT_LEN]


def _canonical(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    return str(value).upper()


def _price_or(value: float | None, needed: bool, col: str) -> float:
    """``Order``'s "unset" price for unused prices; a needed one must be there."""
    if value is not None:
        return value
    if needed:
        raise ValueError(f"{col} is required for this order type")
    return float(compat.UNSET_DOUBLE)

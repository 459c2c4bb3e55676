"""What a plan already placed, and whether each row still says the same.

A plan's rows keep their ``orderRef`` across edits (:mod:`.plan`), so a re-run must
tell apart a row placed as it stands (skip it), a row placed and edited since (never
place it again: report it, or ``--amend`` the working order), a row removed from the
plan (report it, never cancel it) and a row never placed (place it). Two memories answer:
the gateway (every client's open orders and the day's executions, authoritative for
today) and the journal (every earlier day too, since executions are same-day only). The
rules are documented in ``docs/order-plan.md``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from ..._connect import compat
from ..._connect.compat import order_status
from .journal import REJECTED, SKIPPED, SUBMITTED, UNCONFIRMED
from .orders import respect_reported_ids
from .planned_order import CONTENT_FIELDS, PlannedOrder, content_fingerprint

__all__ = [
    "AMENDED",
    "AMEND_FAILED",
    "CHANGED",
    "PLACEMENT_PROBLEMS",
    "REMOVED",
    "SENDING",
    "Found",
    "Placement",
    "Review",
    "content_changes",
    "gateway_changes",
    "placed_refs",
    "read_placements",
    "removed_refs",
    "request_refs",
    "review",
]

CHANGED = "order.changed"
"""A row placed earlier whose content changed since: not placed again."""
REMOVED = "order.removed"
"""A row placed earlier under this plan id and no longer in the plan: reported only."""
AMENDED = "order.amended"
"""``--amend``: the working order was modified in place (same order id)."""
AMEND_FAILED = "order.amend_failed"
"""``--amend`` was refused, not confirmed, or not possible: the order stays as placed."""
AMENDING = "order.amending"
"""The record written just before ``--amend``'s ``placeOrder``. It is not a placement:
until ``order.amended`` the journal's placed content stays the earlier one."""
SENDING = "order.sending"
"""The record written just before ``placeOrder`` (the run's own crash guard)."""
PLACEMENT_PROBLEMS = frozenset({CHANGED, REMOVED, AMEND_FAILED})
"""Outcomes that make a run exit 3: the plan was not carried out as written."""

# Records written when a row's content was sent to the gateway.
_SENT = frozenset({SUBMITTED, UNCONFIRMED, SENDING, AMENDED})
# Records about an order placed earlier, sending nothing.
_SEEN = frozenset({SKIPPED, CHANGED, REMOVED, AMEND_FAILED})
# Placements that only the gateway can settle on the day they were made: sent, but
# never confirmed.
_UNSETTLED = frozenset({UNCONFIRMED, SENDING})
_TOLERANCE = 1e-9


class Found(NamedTuple):
    """An orderRef the account already has, and where it was seen."""

    source: str  # "open order" or "execution"
    order_id: int | None
    perm_id: int | None
    status: str
    trade: Any = None
    """The open order's trade (its order and contract as the gateway reports them)."""


def request_refs(ib: Any) -> tuple[Awaitable[Any], Awaitable[Any]]:
    """Send the two requests :func:`placed_refs` reads (every client's open orders, the
    executions) and return their pending answers, so that the caller can do something
    else during the round trip (qualify the plan's contracts)."""
    return ib.reqAllOpenOrdersAsync(), ib.reqExecutionsAsync()


def placed_refs(
    ib: Any, account: str, requested: tuple[Awaitable[Any], Awaitable[Any]] | None = None
) -> dict[str, Found]:
    """Every orderRef in ``account``'s open orders (every client's) and executions.

    ``requested``: the answers :func:`request_refs` is waiting for; else both requests
    are sent now. Either way they share one round trip, and the wait is bounded as the
    blocking calls are (``RequestTimeout``; 0 means none).
    Executions are whatever the gateway reports, which is the current day unless TWS
    keeps more; earlier days are in the journal (:func:`read_placements`).
    ``openTrades()``/``fills()`` add what this session itself saw, in case a request
    answer was cut short.
    """
    found: dict[str, Found] = {}
    pending = requested or request_refs(ib)
    open_orders, executions = ib.run(*pending, timeout=ib.RequestTimeout or None)
    for trade in [*respect_reported_ids(ib, open_orders), *ib.openTrades()]:
        order = trade.order
        if order.orderRef and order.account in (account, ""):
            status = order_status(trade)
            found.setdefault(
                order.orderRef,
                Found("open order", order.orderId or None, order.permId or None, status, trade),
            )
    for fill in [*executions, *ib.fills()]:
        ex = fill.execution
        if ex.orderRef and ex.acctNumber in (account, ""):
            found.setdefault(
                ex.orderRef, Found("execution", ex.orderId or None, ex.permId or None, "Filled")
            )
    return found


class Placement(NamedTuple):
    """What the journal says this plan placed for one row (its entry ``orderRef``)."""

    order_ref: str
    row_id: str
    day: str
    """UTC date (``YYYY-MM-DD``) of the latest record about it."""
    event: str
    """The latest record's event."""
    content: Mapping[str, Any] | None
    """The :data:`CONTENT_FIELDS` of what was sent, when the journal knows it."""
    order_id: int | None = None
    perm_id: int | None = None

    @property
    def fingerprint(self) -> str | None:
        return None if self.content is None else content_fingerprint(self.content)

    def settled_by_gateway(self, today: str) -> bool:
        """Sent today and never confirmed: only the gateway knows whether it arrived, so
        a row it does not show is placed again (the crash-recovery rule)."""
        return self.event in _UNSETTLED and self.day == today


def read_placements(path: str | os.PathLike[str], plan_id: str) -> dict[str, Placement]:
    """This plan's rows the journal at ``path`` says were placed, by entry ``orderRef``.

    Read line by line (a journal grows for years): only lines naming ``plan_id`` are
    parsed; torn or foreign lines are skipped. The latest record per ref decides; a
    rejection clears the row (nothing of it is live). A missing journal is empty.
    """
    needle = f'"plan_id": {json.dumps(plan_id, ensure_ascii=False)}'.encode()
    placements: dict[str, Placement] = {}
    try:
        handle = Path(path).expanduser().open("rb")
    except FileNotFoundError:
        return placements
    with handle:
        for raw in handle:
            if needle not in raw:
                continue
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("plan_id") == plan_id:
                _apply(placements, record)
    return placements


def _apply(placements: dict[str, Placement], record: Mapping[str, Any]) -> None:
    ref, event = record.get("order_ref"), record.get("event")
    if not isinstance(ref, str) or not isinstance(event, str):
        return
    if event == REJECTED:
        placements.pop(ref, None)
        return
    if event not in _SENT | _SEEN:
        return
    before = placements.get(ref)
    content: Mapping[str, Any] | None
    if event in _SENT or (event == SKIPPED and before is None):
        content = {k: record.get(k) for k in CONTENT_FIELDS}
    else:
        content = before.content if before else None
    placements[ref] = Placement(
        order_ref=ref,
        row_id=str(record.get("row_id", ref.rpartition(":")[2])),
        day=str(record.get("time", ""))[:10],
        event=event,
        content=content,
        order_id=_int_or_none(record.get("order_id")) or (before.order_id if before else None),
        perm_id=_int_or_none(record.get("perm_id")) or (before.perm_id if before else None),
    )


class Review(NamedTuple):
    """What to do with one row: ``place`` it, ``skip`` it (placed as it stands) or
    report it ``changed`` (placed, edited since: never placed again)."""

    action: str
    legs: Mapping[str, Found]
    """The row's refs the gateway shows."""
    placement: Placement | None
    changes: tuple[str, ...] = ()
    placed_fingerprint: str | None = None
    """The fingerprint of what was placed, when known."""


def review(
    row: PlannedOrder, found: Mapping[str, Found], placement: Placement | None, today: str
) -> Review:
    """Decide one row from the gateway's view (``found``, :func:`placed_refs`) and the
    journal's (``placement``, :func:`read_placements`); ``today`` is the UTC date.

    Not at the gateway and not in the journal, or sent today but never confirmed and
    not at the gateway (so it never arrived): place. Otherwise it was placed, and its
    content decides: the journal's record of what was sent, else the open order as the
    gateway reports it (journal lost, another machine). A journal that says "changed"
    while the open order already matches the row (an amendment whose record a kill
    cut off) is not a change.
    """
    legs = {ref: found[ref] for ref in row.order_refs if ref in found}
    if not legs and (placement is None or placement.settled_by_gateway(today)):
        return Review("place", legs, placement)
    compared = _gateway_pairs(row, legs)
    on_gateway = {k for k, old, new in compared if not _same(old, new)}
    if placement is not None and placement.content is not None:
        # The gateway's word wins for the fields it reports.
        seen = {k for k, _, _ in compared}
        changes = [
            text
            for key, text in _content_changes(placement.content, row)
            if key not in seen or key in on_gateway
        ]
    else:
        changes = [_change(k, old, new) for k, old, new in compared if k in on_gateway]
    if not changes:
        return Review("skip", legs, placement, (), row.fingerprint)
    known = placement.fingerprint if placement is not None else None
    return Review("changed", legs, placement, tuple(changes), known)


def moved_from(
    row: PlannedOrder, placements: Mapping[str, Placement], plan: Sequence[PlannedOrder]
) -> Placement | None:
    """For a row :func:`review` would place: the placement of the same content under
    another row number, when the row has no ``id`` and so may only have moved (a row
    inserted above it shifts every number after it).

    Such a row is never placed again: placing it would put a second, identical order
    next to the first. Only rows without an ``id``: two rows with ids are two orders
    even when their content is the same. The placement must not belong to a row of the
    plan that still has that content (then it is that row's, not this one's).
    """
    if not row.positional:
        return None
    kept = {o.order_ref for o in plan if o.fingerprint == row.fingerprint}
    for ref, placement in placements.items():
        if ref not in kept and placement.fingerprint == row.fingerprint:
            return placement
    return None


def content_changes(placed: Mapping[str, Any], row: PlannedOrder) -> list[str]:
    """``["quantity 10 -> 12", ...]``: how ``row`` differs from the content placed."""
    return [text for _, text in _content_changes(placed, row)]


def _content_changes(placed: Mapping[str, Any], row: PlannedOrder) -> list[tuple[str, str]]:
    now = row.journal_fields()
    changes: list[tuple[str, str]] = []
    for key in CONTENT_FIELDS:
        old, new = placed.get(key), now.get(key)
        if key == "contract" and isinstance(old, Mapping) and isinstance(new, Mapping):
            changes += [
                (k, _change(k, old.get(k), new[k])) for k in new if not _same(old.get(k), new[k])
            ]
        elif not _same(old, new):
            changes.append((key, _change(key, old, new)))
    return changes


def gateway_changes(row: PlannedOrder, found: Mapping[str, Found]) -> list[str] | None:
    """How ``row`` differs from its open order(s) as the gateway reports them, or
    ``None`` when the gateway shows no open entry order to compare with."""
    compared = _gateway_pairs(row, found)
    if not compared:
        return None
    return [_change(k, old, new) for k, old, new in compared if not _same(old, new)]


def _gateway_pairs(row: PlannedOrder, found: Mapping[str, Found]) -> list[tuple[str, Any, Any]]:
    """(field, at the gateway, in the plan) for what TWS echoes of an open order: symbol,
    side, quantity, order type and prices; a bracket's legs by their own prices."""
    entry = found.get(row.order_ref)
    if entry is None or entry.trade is None:
        return []
    order, contract = entry.trade.order, entry.trade.contract
    pairs: list[tuple[str, Any, Any]] = [
        ("symbol", getattr(contract, "symbol", row.symbol), row.symbol),
        ("side", order.action, row.side),
        ("quantity", order.totalQuantity, row.quantity),
        ("order_type", order.orderType, row.order_type),
        ("limit_price", _price(order.lmtPrice), row.limit_price),
        ("stop_price", _price(order.auxPrice), row.stop_price),
    ]
    for suffix, key, attr, value in (
        (":tp", "take_profit", "lmtPrice", row.take_profit),
        (":sl", "stop_loss", "auxPrice", row.stop_loss),
    ):
        leg = found.get(row.order_ref + suffix)
        if leg is not None and leg.trade is not None:
            pairs.append((key, _price(getattr(leg.trade.order, attr)), value))
    return pairs


def removed_refs(
    plan_id: str,
    rows: Iterable[PlannedOrder],
    found: Mapping[str, Found],
    journal: Mapping[str, Placement],
) -> dict[str, Found | Placement]:
    """Entry refs of this plan placed earlier (gateway or journal) with no row now."""
    current = {r.order_ref for r in rows}
    prefix = f"{plan_id}:"
    gone: dict[str, Found | Placement] = {}
    for ref, seen in found.items():  # the gateway's view first: it is the current one
        entry = ref.removesuffix(":tp").removesuffix(":sl")
        mine = ref.startswith(prefix) and entry not in current
        if mine and (entry not in gone or ref == entry):  # the entry's own order wins
            gone[entry] = seen
    for ref, placement in journal.items():
        if ref not in current and ref not in gone:
            gone[ref] = placement
    return gone


def _price(value: Any) -> float | None:
    # Unset prices come back as TWS's "unset" double or as 0 (never a valid plan price).
    if value is None or value == compat.UNSET_DOUBLE or value == 0:
        return None
    return float(value)


def _same(old: Any, new: Any) -> bool:
    if old is None or new is None:
        return old is new
    if isinstance(old, int | float) and isinstance(new, int | float):
        return abs(float(old) - float(new)) <= _TOLERANCE * max(1.0, abs(float(new)))
    return str(old).upper() == str(new).upper()


def _change(key: str, old: Any, new: Any) -> str:
    return f"{key} {_show(old)} -> {_show(new)}"


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value else None

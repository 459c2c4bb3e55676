"""The order plan: a CSV file, validated as a whole, named by its content.

Every order carries an ``orderRef`` of ``<plan id>:<row id>`` (bracket legs add ``:tp``
and ``:sl``). The plan id is the file's stem plus a hash of the plan's canonical content,
so re-running the same file yields the same refs (the submit script skips refs the
account already has), while an edited plan is a new plan. Rows are checked by
:mod:`.plan_rows` and built into orders by :mod:`.planned_order`; the format is
documented in ``docs/order-plan.md``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..._connect import compat
from ..._core.statedir import UnusableStateFile, read_small_bytes
from .plan_rows import (
    COLUMNS,
    OPTIONAL_COLUMNS,
    ORDER_TYPES,
    REQUIRED_COLUMNS,
    SEC_TYPES,
    SIDES,
    TIFS,
    Limits,
    PlanError,
    parse_rows,
)
from .planned_order import (
    MAX_ORDER_REF_LEN,
    PLAN_HASH_LEN,
    PLAN_STEM_LEN,
    ContractKey,
    PlannedOrder,
)

__all__ = [
    "COLUMNS",
    "MAX_ORDER_REF_LEN",
    "OPTIONAL_COLUMNS",
    "ORDER_TYPES",
    "REQUIRED_COLUMNS",
    "SEC_TYPES",
    "SIDES",
    "TIFS",
    "ContractKey",
    "Limits",
    "Plan",
    "PlanError",
    "PlannedOrder",
    "load_plan",
    "parse_plan",
]


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

    def contracts(self) -> dict[ContractKey, compat.Contract]:
        """One fresh contract per distinct key, in plan order, to qualify in one call."""
        contracts: dict[ContractKey, compat.Contract] = {}
        for order in self.orders:
            contracts.setdefault(order.contract_key, order.contract())
        return contracts

    def by_ref(self) -> dict[str, PlannedOrder]:
        """Every leg's ref mapped to its row, for matching the account's open orders."""
        return {ref: o for o in self.orders for ref in o.order_refs}


MAX_PLAN_BYTES = 10 * 1024 * 1024
"""A plan file larger than this is refused (a day's plan is a few kB)."""


def load_plan(path: str | os.PathLike[str], limits: Limits | None = None) -> Plan:
    """Read and validate a plan file; raise :class:`PlanError` on any problem.

    ``limits`` is the fat-finger guard (default: :class:`Limits`' documented values)."""
    p = Path(path)
    try:
        data = read_small_bytes(p, MAX_PLAN_BYTES)
    except UnusableStateFile as exc:  # a FIFO, a device, or over the size cap
        raise PlanError(f"cannot read order plan {p}: {exc}") from None
    except OSError as exc:
        raise PlanError(f"cannot read order plan {p}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")  # tolerate the BOM spreadsheet exports add
    except UnicodeDecodeError as exc:
        raise PlanError(
            f"order plan {p} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start}); save it as CSV UTF-8"
        ) from None
    return parse_plan(text, name=p.stem, source=str(p), limits=limits)


def parse_plan(
    text: str, *, name: str = "plan", source: str | None = None, limits: Limits | None = None
) -> Plan:
    """Validate plan text; ``name`` seeds the plan id (``load_plan`` passes the stem)."""
    src = source or name
    orders = parse_rows(text, src, limits)
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
    digest = hashlib.sha256(blob).hexdigest()[:PLAN_HASH_LEN]
    stem = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:PLAN_STEM_LEN].strip("-")
    return f"{stem or 'plan'}-{digest}"

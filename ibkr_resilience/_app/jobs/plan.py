"""The order plan: a CSV file, validated as a whole, named by where it lives.

Every order carries an ``orderRef`` of ``<plan id>:<row id>`` (bracket legs add ``:tp``
and ``:sl``). The plan id names the plan, not its content: the file's stem plus a hash
of its absolute path (or an explicit ``--plan-id``), so re-running the file yields the
same refs after any edit, re-ordering or re-saving, and the submit script recognises each
row it already placed; two files of the same name in different directories are two
plans. What a row orders is followed separately, by its content fingerprint
(:func:`.planned_order.content_fingerprint`). Rows are checked by :mod:`.plan_rows` and
built into orders by :mod:`.planned_order`; the format is documented in
``docs/order-plan.md``.
"""

from __future__ import annotations

import hashlib
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
    PLAN_ID_LEN,
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
    "check_plan_id",
    "derived_plan_id",
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


_PLAN_ID_RE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{PLAN_ID_LEN - 1}}}")


def check_plan_id(text: str) -> str:
    """An explicit plan id (``--plan-id``) as given; ``ValueError`` with the rule if it
    is not 1-21 of ``A-Z a-z 0-9 _ . -`` starting with a letter or digit (the length
    keeps every ``orderRef`` within :data:`MAX_ORDER_REF_LEN`)."""
    if not _PLAN_ID_RE.fullmatch(text):
        raise ValueError(
            f"plan id {text!r} must be 1-{PLAN_ID_LEN} letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return text


def load_plan(
    path: str | os.PathLike[str], limits: Limits | None = None, *, plan_id: str | None = None
) -> Plan:
    """Read and validate a plan file; raise :class:`PlanError` on any problem.

    ``limits`` is the fat-finger guard (default: :class:`Limits`' documented values);
    ``plan_id`` an explicit id (:func:`check_plan_id`), else :func:`derived_plan_id`."""
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
    return parse_plan(
        text, name=p.stem, source=str(p), limits=limits, plan_id=plan_id or derived_plan_id(p)
    )


def parse_plan(
    text: str,
    *,
    name: str = "plan",
    source: str | None = None,
    limits: Limits | None = None,
    plan_id: str | None = None,
) -> Plan:
    """Validate plan text; ``plan_id`` names it (default: derived from ``name`` alone)."""
    src = source or name
    orders = parse_rows(text, src, limits)
    pid = plan_id or _plan_id(name, name)
    return Plan(src, pid, tuple(o._replace(plan_id=pid) for o in orders))


def derived_plan_id(path: str | os.PathLike[str]) -> str:
    """``<stem>-<8 hex>`` for the plan file at ``path``: the stem for humans, the hash of
    the absolute path (symlinks resolved) so that ``a/2026-11-30.csv`` and
    ``b/2026-11-30.csv`` are two plans, while editing the file keeps its id.

    Moving or renaming the file makes a new plan; ``--plan-id`` keeps one id wherever
    the file is (docs/order-plan.md).
    """
    real = Path(path).resolve()
    return _plan_id(real.stem, str(real))


def _plan_id(stem: str, where: str) -> str:
    digest = hashlib.sha256(where.encode("utf-8", "surrogateescape")).hexdigest()
    slug = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")[:PLAN_STEM_LEN].strip("-")
    return f"{slug or 'plan'}-{digest[:PLAN_HASH_LEN]}"

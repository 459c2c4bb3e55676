"""What the simulated gateway knows: accounts, contracts, positions, orders, fills.

The state outlives connections (and restarts), the way a real gateway's account
does, so that what one run placed is visible to the next run: that is what an
idempotency check across cron runs needs to be tested against.
"""

from __future__ import annotations

import csv
import itertools
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

OPEN_STATUSES = frozenset({"PendingSubmit", "PreSubmitted", "Submitted"})
IMMEDIATE_FILL_TYPES = frozenset({"MKT"})


@dataclass(frozen=True)
class SimContract:
    """A contract the gateway can qualify (answers contract-details requests for it)."""

    symbol: str
    con_id: int
    price: float
    primary_exchange: str = "NASDAQ"
    long_name: str = ""
    sec_type: str = "STK"
    currency: str = "USD"


DEFAULT_CONTRACTS: tuple[SimContract, ...] = (
    SimContract("AAPL", 265598, 190.0, "NASDAQ", "APPLE INC"),
    SimContract("MSFT", 272093, 410.0, "NASDAQ", "MICROSOFT CORP"),
    SimContract("SPY", 756733, 560.0, "ARCA", "SPDR S&P 500 ETF TRUST"),
    SimContract("IBM", 8314, 210.0, "NYSE", "INTL BUSINESS MACHINES CORP"),
    SimContract("AMZN", 3691937, 185.0, "NASDAQ", "AMAZON.COM INC"),
    SimContract("TSLA", 76792991, 250.0, "NASDAQ", "TESLA INC"),
)


@dataclass
class SimPosition:
    """A position in one account."""

    account: str
    symbol: str
    quantity: float
    avg_cost: float
    con_id: int = 0
    sec_type: str = "STK"
    exchange: str = "SMART"
    currency: str = "USD"


@dataclass
class OrderIdentity:
    """Which order, whose, and for which contract: what an order and its fills share."""

    order_id: int
    perm_id: int
    client_id: int
    account: str
    symbol: str
    sec_type: str
    exchange: str
    currency: str
    con_id: int

    def identity(self) -> dict[str, Any]:
        """These fields alone, by name (what a fill copies from its order)."""
        return {f.name: getattr(self, f.name) for f in fields(OrderIdentity)}


@dataclass
class SimOrder(OrderIdentity):
    """An order as the client placed it, plus the gateway's view of its status."""

    action: str
    quantity: float
    order_type: str
    lmt_price: float | None
    aux_price: float | None
    tif: str
    order_ref: str
    parent_id: int
    transmit: bool
    status: str = "PendingSubmit"
    filled: float = 0.0
    avg_fill_price: float = 0.0
    placed_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def remaining(self) -> float:
        return self.quantity - self.filled

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


@dataclass
class SimExecution(OrderIdentity):
    """A fill, reported by execDetails live and in answer to reqExecutions.

    A record: nothing changes it once made (not frozen only because ``SimOrder``,
    which shares its identity fields, is mutable)."""

    exec_id: str
    side: str  # BOT or SLD, as TWS reports it
    shares: float
    price: float
    time: datetime
    order_ref: str


class GatewayState:
    """Thread-safe store; the gateway thread mutates it, tests read it."""

    def __init__(
        self,
        accounts: Iterable[str] = ("DU1234567",),
        contracts: Iterable[SimContract] = DEFAULT_CONTRACTS,
        positions: Iterable[SimPosition] = (),
        next_order_id: int = 1,
    ) -> None:
        self.lock = threading.RLock()
        self.accounts: list[str] = list(accounts)
        if not self.accounts:
            raise ValueError("the simulated gateway needs at least one account")
        self.contracts: dict[str, SimContract] = {c.symbol: c for c in contracts}
        self.positions: dict[tuple[str, str], SimPosition] = {}
        for pos in positions:
            self.set_position(pos)
        self.orders: dict[tuple[int, int], SimOrder] = {}
        self.executions: list[SimExecution] = []
        self.next_order_id = next_order_id
        self._perm_ids = itertools.count(900_000_001)
        self._exec_ids = itertools.count(1)

    # --- contracts and positions -------------------------------------------------
    def contract_for(self, symbol: str, con_id: int = 0) -> SimContract | None:
        with self.lock:
            if con_id:
                for c in self.contracts.values():
                    if c.con_id == con_id:
                        return c
                return None
            return self.contracts.get(symbol.upper())

    def set_position(self, pos: SimPosition) -> None:
        with self.lock:
            if pos.account not in self.accounts:
                raise ValueError(f"position for unknown account {pos.account!r}")
            contract = self.contracts.get(pos.symbol)
            if contract is not None and not pos.con_id:
                pos = replace(pos, con_id=contract.con_id)
            self.positions[(pos.account, pos.symbol)] = pos

    def position_list(self) -> list[SimPosition]:
        with self.lock:
            return [replace(p) for p in self.positions.values()]

    # --- orders -------------------------------------------------------------------
    def new_perm_id(self) -> int:
        return next(self._perm_ids)

    def add_order(self, order: SimOrder) -> None:
        with self.lock:
            self.orders[(order.client_id, order.order_id)] = order
            self.next_order_id = max(self.next_order_id, order.order_id + 1)

    def order_list(self) -> list[SimOrder]:
        with self.lock:
            return [replace(o) for o in self.orders.values()]

    def open_orders(self, client_id: int | None = None) -> list[SimOrder]:
        """Open orders of one client id (``reqOpenOrders``) or of all (``None``)."""
        with self.lock:
            return [
                o
                for o in self.orders.values()
                if o.is_open and o.transmit and (client_id is None or o.client_id == client_id)
            ]

    def fill(self, order: SimOrder, price: float) -> SimExecution:
        """Fill the whole order at ``price``; update the position and record the fill."""
        with self.lock:
            qty = order.remaining
            order.filled += qty
            order.avg_fill_price = price
            order.status = "Filled"
            signed = qty if order.action == "BUY" else -qty
            key = (order.account, order.symbol)
            pos = self.positions.get(key)
            if pos is None:
                pos = SimPosition(order.account, order.symbol, 0.0, 0.0, con_id=order.con_id)
                self.positions[key] = pos
            new_qty = pos.quantity + signed
            if new_qty == 0:
                pos.avg_cost = 0.0
            elif pos.quantity == 0 or (pos.quantity > 0) == (signed > 0):
                pos.avg_cost = (pos.avg_cost * abs(pos.quantity) + price * qty) / abs(new_qty)
            pos.quantity = new_qty
            now = datetime.now(UTC)
            execution = SimExecution(
                **{**order.identity(), "exchange": "ISLAND"},
                exec_id=f"0000e0d5.{now:%Y%m%d}.{next(self._exec_ids):06d}.01",
                side="BOT" if order.action == "BUY" else "SLD",
                shares=qty,
                price=price,
                time=now,
                order_ref=order.order_ref,
            )
            self.executions.append(execution)
            return execution


def load_positions_csv(path: str | Path, default_account: str) -> list[SimPosition]:
    """Read positions from a CSV with columns symbol, quantity[, avg_cost, account].

    Raises ``ValueError`` naming the file, row and problem: the command line turns
    it into a one-line error.
    """
    out: list[SimPosition] = []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"symbol", "quantity"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        for row_no, row in enumerate(reader, start=2):
            try:
                qty = float(row["quantity"])
                cost = float(row.get("avg_cost") or 0.0)
            except ValueError:
                raise ValueError(f"{path}:{row_no}: quantity/avg_cost must be numbers") from None
            symbol = (row["symbol"] or "").strip().upper()
            if not symbol:
                raise ValueError(f"{path}:{row_no}: empty symbol")
            account = (row.get("account") or "").strip() or default_account
            out.append(SimPosition(account, symbol, qty, cost))
    return out

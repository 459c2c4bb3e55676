"""Incoming TWS requests as small typed records.

Each request kind the simulator answers is a frozen dataclass that names its message
(``NAME``, ``MSG_ID``) and decodes itself from the text fields (``decode``); the field
positions are the TWS protocol's at server version 157 and appear here only. Known
requests the simulator does not answer (market data, history, ...) decode into
``OtherRequest``; an id outside the protocol's table is a ``ProtocolError``. Faults and
the broker see these records, never raw field indexes. Encoding of replies lives in
``_messages``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from ._protocol import IN_MESSAGES, ProtocolError, WireContract, read_contract, to_float

Q = TypeVar("Q", bound="Request")


@dataclass(frozen=True)
class Request:
    """Base of every decoded request; ``name`` is the TWS message name (``"placeOrder"``)."""

    NAME: ClassVar[str] = ""
    MSG_ID: ClassVar[int] = 0

    @property
    def name(self) -> str:
        return self.NAME

    @property
    def msg_id(self) -> int:
        return self.MSG_ID

    @property
    def reply_id(self) -> int:
        """The id an error about this request carries: its order or request id, else -1."""
        return -1

    @classmethod
    def decode(cls: type[Q], fields: Sequence[str]) -> Q:
        """Build the record from the message's fields (``fields[0]`` is the id)."""
        del fields
        return cls()


@dataclass(frozen=True)
class OtherRequest(Request):
    """A known TWS request that the simulator records and does not answer."""

    kind_id: int
    kind_name: str
    fields: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.kind_name

    @property
    def msg_id(self) -> int:
        return self.kind_id


@dataclass(frozen=True)
class StartApi(Request):
    """``startApi``: the client asks to start its API session as ``client_id``."""

    NAME = "startApi"
    MSG_ID = 71
    client_id: int
    capabilities: str = ""

    @classmethod
    def decode(cls, fields: Sequence[str]) -> StartApi:
        return cls(int(fields[2]), fields[3] if len(fields) > 3 else "")


@dataclass(frozen=True)
class PlaceOrder(Request):
    """``placeOrder`` (new or modified order). Prices and quantity are ``None`` when unset."""

    NAME = "placeOrder"
    MSG_ID = 3
    order_id: int
    contract: WireContract
    action: str  # BUY, SELL, SSHORT
    quantity: float | None
    order_type: str  # MKT, LMT, STP, ...
    lmt_price: float | None
    aux_price: float | None
    tif: str  # DAY, GTC, ... ("" = DAY)
    account: str  # "" = the first managed account
    order_ref: str
    transmit: bool
    parent_id: int  # 0 = no parent
    unreadable: str = ""
    """A quantity or price field that is not a number (``Infinite``): TWS answers 320
    for the order instead of dropping the connection, so the decoder keeps it."""

    @classmethod
    def decode(cls, f: Sequence[str]) -> PlaceOrder:
        numbers = [f[17], f[19], f[20]]
        unreadable = next((t for t in numbers if t and not _is_number(t)), "")
        if unreadable:
            numbers = [t if _is_number(t) else "nan" for t in numbers]
        return cls(
            order_id=int(f[1]),
            contract=read_contract(f, 2),
            action=f[16],
            quantity=float(numbers[0]) if numbers[0] else None,
            order_type=f[18],
            lmt_price=to_float(numbers[1]),
            aux_price=to_float(numbers[2]),
            tif=f[21],
            account=f[23],
            order_ref=f[26],
            transmit=f[27] != "0",
            parent_id=int(f[28] or 0),
            unreadable=unreadable,
        )

    @property
    def reply_id(self) -> int:
        return self.order_id


@dataclass(frozen=True)
class CancelOrder(Request):
    """``cancelOrder``: cancel one of the caller's orders."""

    NAME = "cancelOrder"
    MSG_ID = 4
    order_id: int

    @classmethod
    def decode(cls, fields: Sequence[str]) -> CancelOrder:
        return cls(int(fields[2]))

    @property
    def reply_id(self) -> int:
        return self.order_id


@dataclass(frozen=True)
class ReqGlobalCancel(Request):
    NAME = "reqGlobalCancel"
    MSG_ID = 58


@dataclass(frozen=True)
class ReqOpenOrders(Request):
    """The caller's client id's open orders (client 0: everyone's)."""

    NAME = "reqOpenOrders"
    MSG_ID = 5


@dataclass(frozen=True)
class ReqAllOpenOrders(Request):
    NAME = "reqAllOpenOrders"
    MSG_ID = 16


@dataclass(frozen=True)
class ReqCompletedOrders(Request):
    NAME = "reqCompletedOrders"
    MSG_ID = 99


@dataclass(frozen=True)
class ReqAccountUpdates(Request):
    """Start (``subscribe``) or stop streaming one account's values and portfolio."""

    NAME = "reqAccountUpdates"
    MSG_ID = 6
    subscribe: bool
    account: str  # "" = the first managed account

    @classmethod
    def decode(cls, fields: Sequence[str]) -> ReqAccountUpdates:
        return cls(fields[2] == "1", fields[3])


@dataclass(frozen=True)
class ReqAccountUpdatesMulti(Request):
    NAME = "reqAccountUpdatesMulti"
    MSG_ID = 76
    req_id: int
    account: str

    @classmethod
    def decode(cls, fields: Sequence[str]) -> ReqAccountUpdatesMulti:
        return cls(int(fields[2]), fields[3])

    @property
    def reply_id(self) -> int:
        return self.req_id


@dataclass(frozen=True)
class ReqExecutions(Request):
    """Executions matching a filter; empty filter fields match everything."""

    NAME = "reqExecutions"
    MSG_ID = 7
    req_id: int
    client_id: int  # 0 = any
    account: str
    since: str  # ``yyyymmdd hh:mm:ss[ zone]``
    symbol: str
    sec_type: str
    exchange: str
    side: str  # BUY or SELL

    @classmethod
    def decode(cls, f: Sequence[str]) -> ReqExecutions:
        account, since, symbol, sec_type, exchange, side = ([*f] + [""] * 10)[4:10]
        return cls(int(f[2]), int(f[3] or 0), account, since, symbol, sec_type, exchange, side)

    @property
    def reply_id(self) -> int:
        return self.req_id


@dataclass(frozen=True)
class ReqIds(Request):
    NAME = "reqIds"
    MSG_ID = 8


@dataclass(frozen=True)
class ReqContractDetails(Request):
    NAME = "reqContractDetails"
    MSG_ID = 9
    req_id: int
    contract: WireContract

    @classmethod
    def decode(cls, fields: Sequence[str]) -> ReqContractDetails:
        return cls(int(fields[2]), read_contract(fields, 3))

    @property
    def reply_id(self) -> int:
        return self.req_id


@dataclass(frozen=True)
class ReqManagedAccts(Request):
    NAME = "reqManagedAccts"
    MSG_ID = 17


@dataclass(frozen=True)
class ReqCurrentTime(Request):
    NAME = "reqCurrentTime"
    MSG_ID = 49


@dataclass(frozen=True)
class ReqPositions(Request):
    NAME = "reqPositions"
    MSG_ID = 61


@dataclass(frozen=True)
class CancelPositions(Request):
    NAME = "cancelPositions"
    MSG_ID = 64


DECODED: tuple[type[Request], ...] = (
    StartApi,
    PlaceOrder,
    CancelOrder,
    ReqGlobalCancel,
    ReqOpenOrders,
    ReqAllOpenOrders,
    ReqCompletedOrders,
    ReqAccountUpdates,
    ReqAccountUpdatesMulti,
    ReqExecutions,
    ReqIds,
    ReqContractDetails,
    ReqManagedAccts,
    ReqCurrentTime,
    ReqPositions,
    CancelPositions,
)
_BY_ID: dict[int, type[Request]] = {kind.MSG_ID: kind for kind in DECODED}
assert all(IN_MESSAGES[k.MSG_ID] == k.NAME for k in DECODED), "codec and protocol disagree"

# What ``IB.connect()`` waits for: the requests of ib_insync's initial sync.
SYNC_REQUESTS = frozenset(
    k.NAME
    for k in (
        ReqOpenOrders,
        ReqAccountUpdates,
        ReqExecutions,
        ReqAllOpenOrders,
        ReqPositions,
        ReqAccountUpdatesMulti,
        ReqCompletedOrders,
    )
)


def message_id(fields: Sequence[str]) -> tuple[int, str]:
    """The message's id and TWS name; ``ProtocolError`` if not a known request."""
    if not fields or not fields[0].lstrip("-").isdigit():
        raise ProtocolError(f"message id {list(fields[:1])!r} is not a number")
    msg_id = int(fields[0])
    name = IN_MESSAGES.get(msg_id)
    if name is None:
        raise ProtocolError(f"unknown message id {msg_id}")
    return msg_id, name


def decode(fields: Sequence[str]) -> Request:
    """Decode one message into its record; ``ProtocolError`` if it is not well formed."""
    msg_id, name = message_id(fields)
    kind = _BY_ID.get(msg_id)
    if kind is None:
        return OtherRequest(msg_id, name, tuple(fields))
    try:
        return kind.decode(fields)
    except (IndexError, ValueError) as exc:
        raise ProtocolError(f"bad {name} message: {exc}") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True

"""Incoming TWS requests as small typed records.

Each request kind the simulator answers is a frozen dataclass whose class line names
its message and id (``class CancelOrder(Request, name="cancelOrder", msg_id=4)``) and
whose fields say where they stand in the message and how their text reads
(``order_id: Annotated[int, At(2, integer)]``); one generic ``Request.decode`` builds
every record from that. The field positions are the TWS protocol's at server version
157 and appear here only. Known requests the simulator does not answer (market data,
history, ...) decode into ``OtherRequest``; an id outside the protocol's table is a
``ProtocolError``. Faults and the broker see these records, never raw field indexes.
Encoding of replies lives in ``_messages``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Annotated, Any, ClassVar, TypeVar, get_args, get_type_hints

from ._protocol import IN_MESSAGES, ProtocolError, WireContract, read_contract, to_float

Q = TypeVar("Q", bound="Request")
Reader = Callable[[Sequence[str], int], Any]


# Readers of one field at a position (``fields[0]`` is the message id). A trailing field
# a client may leave off reads as "" (``tail``).
def text(f: Sequence[str], i: int) -> str:
    return f[i]


def tail(f: Sequence[str], i: int) -> str:
    return f[i] if len(f) > i else ""


def integer(f: Sequence[str], i: int) -> int:
    return int(f[i])


def integer_or_0(f: Sequence[str], i: int) -> int:
    """An id where "" means none (0)."""
    return int(f[i] or 0)


def number_or_none(f: Sequence[str], i: int) -> float | None:
    return float(f[i]) if f[i] else None


def price_or_none(f: Sequence[str], i: int) -> float | None:
    """A price; "" and TWS's "unset" (DBL_MAX) are ``None``."""
    return to_float(f[i])


def yes(f: Sequence[str], i: int) -> bool:
    return f[i] == "1"


def not_no(f: Sequence[str], i: int) -> bool:
    """A flag whose default is on: anything but "0"."""
    return f[i] != "0"


@dataclass(frozen=True)
class At:
    """Where a record's field stands in its message, and the reader of its text."""

    pos: int
    read: Reader = text


@dataclass(frozen=True)
class Request:
    """Base of every decoded request; ``name`` is the TWS message name (``"placeOrder"``).

    A subclass names its message in the class line: ``name`` and ``msg_id`` (the
    protocol's), and ``reply_to``, the field an error about the request carries.
    """

    NAME: ClassVar[str] = ""
    MSG_ID: ClassVar[int] = 0
    REPLY_TO: ClassVar[str] = ""
    LAYOUT: ClassVar[tuple[tuple[str, At], ...]] = ()
    """Each decoded field's name and ``At``, in order, from the annotations."""

    def __init_subclass__(cls, name: str = "", msg_id: int = 0, reply_to: str = "") -> None:
        super().__init_subclass__()
        cls.NAME, cls.MSG_ID, cls.REPLY_TO = name, msg_id, reply_to
        hints = get_type_hints(cls, include_extras=True)
        cls.LAYOUT = tuple(
            (field, at)
            for field, hint in hints.items()
            for at in get_args(hint)[1:]
            if isinstance(at, At)
        )

    @property
    def name(self) -> str:
        return self.NAME

    @property
    def msg_id(self) -> int:
        return self.MSG_ID

    @property
    def reply_id(self) -> int:
        """The id an error about this request carries: its order or request id, else -1."""
        return int(getattr(self, self.REPLY_TO)) if self.REPLY_TO else -1

    @classmethod
    def decode(cls: type[Q], fields: Sequence[str]) -> Q:
        """Build the record from the message's fields (``fields[0]`` is the id)."""
        return cls(**{name: at.read(fields, at.pos) for name, at in cls.LAYOUT})


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
class StartApi(Request, name="startApi", msg_id=71):
    """``startApi``: the client asks to start its API session as ``client_id``."""

    client_id: Annotated[int, At(2, integer)]
    capabilities: Annotated[str, At(3, tail)] = ""


@dataclass(frozen=True)
class PlaceOrder(Request, name="placeOrder", msg_id=3, reply_to="order_id"):
    """``placeOrder`` (new or modified order). Prices and quantity are ``None`` when unset."""

    order_id: Annotated[int, At(1, integer)]
    contract: Annotated[WireContract, At(2, read_contract)]
    action: Annotated[str, At(16)]  # BUY, SELL, SSHORT
    quantity: Annotated[float | None, At(17, number_or_none)]
    order_type: Annotated[str, At(18)]  # MKT, LMT, STP, ...
    lmt_price: Annotated[float | None, At(19, price_or_none)]
    aux_price: Annotated[float | None, At(20, price_or_none)]
    tif: Annotated[str, At(21)]  # DAY, GTC, ... ("" = DAY)
    account: Annotated[str, At(23)]  # "" = the first managed account
    order_ref: Annotated[str, At(26)]
    transmit: Annotated[bool, At(27, not_no)]
    parent_id: Annotated[int, At(28, integer_or_0)]  # 0 = no parent
    unreadable: str = ""
    """A quantity or price field that is not a number (``Infinite``): TWS answers 320
    for the order instead of dropping the connection, so the decoder keeps it."""

    @classmethod
    def decode(cls, fields: Sequence[str]) -> PlaceOrder:
        numbers = (17, 19, 20)  # quantity, limit price, aux price
        unreadable = next((fields[i] for i in numbers if not _is_number(fields[i])), "")
        if not unreadable:
            return super().decode(fields)
        readable = [
            "nan" if i in numbers and not _is_number(t) else t for i, t in enumerate(fields)
        ]
        return replace(super().decode(readable), unreadable=unreadable)


@dataclass(frozen=True)
class CancelOrder(Request, name="cancelOrder", msg_id=4, reply_to="order_id"):
    """``cancelOrder``: cancel one of the caller's orders."""

    order_id: Annotated[int, At(2, integer)]


@dataclass(frozen=True)
class ReqAccountUpdates(Request, name="reqAccountUpdates", msg_id=6):
    """Start (``subscribe``) or stop streaming one account's values and portfolio."""

    subscribe: Annotated[bool, At(2, yes)]
    account: Annotated[str, At(3)]  # "" = the first managed account


@dataclass(frozen=True)
class ReqAccountUpdatesMulti(Request, name="reqAccountUpdatesMulti", msg_id=76, reply_to="req_id"):
    req_id: Annotated[int, At(2, integer)]
    account: Annotated[str, At(3)]


@dataclass(frozen=True)
class ReqExecutions(Request, name="reqExecutions", msg_id=7, reply_to="req_id"):
    """Executions matching a filter; empty (or left off) filter fields match everything."""

    req_id: Annotated[int, At(2, integer)]
    client_id: Annotated[int, At(3, integer_or_0)]  # 0 = any
    account: Annotated[str, At(4, tail)]
    since: Annotated[str, At(5, tail)]  # ``yyyymmdd hh:mm:ss[ zone]``
    symbol: Annotated[str, At(6, tail)]
    sec_type: Annotated[str, At(7, tail)]
    exchange: Annotated[str, At(8, tail)]
    side: Annotated[str, At(9, tail)]  # BUY or SELL


@dataclass(frozen=True)
class ReqContractDetails(Request, name="reqContractDetails", msg_id=9, reply_to="req_id"):
    req_id: Annotated[int, At(2, integer)]
    contract: Annotated[WireContract, At(3, read_contract)]


# Requests without fields the simulator reads: the class line says it all.
class ReqGlobalCancel(Request, name="reqGlobalCancel", msg_id=58): ...


class ReqOpenOrders(Request, name="reqOpenOrders", msg_id=5): ...  # this client's (0: all)


class ReqAllOpenOrders(Request, name="reqAllOpenOrders", msg_id=16): ...


class ReqCompletedOrders(Request, name="reqCompletedOrders", msg_id=99): ...


class ReqIds(Request, name="reqIds", msg_id=8): ...


class ReqManagedAccts(Request, name="reqManagedAccts", msg_id=17): ...


class ReqCurrentTime(Request, name="reqCurrentTime", msg_id=49): ...


class ReqPositions(Request, name="reqPositions", msg_id=61): ...


class CancelPositions(Request, name="cancelPositions", msg_id=64): ...


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
    """Whether a numeric field reads as a number; "" (unset) does."""
    if not text:
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True

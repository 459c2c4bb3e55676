"""The TWS socket protocol as the simulated gateway speaks it.

Framing: after the client's ``API\\0`` greeting, every message in both directions is
a 4-byte big-endian length followed by NUL-terminated text fields. The server
answers the greeting's version range with two fields: its server version and the
connection time.

The simulator speaks server version 157 (``SERVER_VERSION``), the lowest one that
ib_insync 0.9.86 accepts (its range is 157..176), also the lowest of ib_async 2.1's
range (157..178), and far below the official client's maximum. At 157 the message
layouts carry none of the later optional fields (no ``advancedOrderRejectJson`` in
errors, no size rules in contract details, no ``duration``/``postToAts`` in orders),
which keeps the encoders below exact. The layouts were taken from ib_insync 0.9.86's
``decoder.py`` and ``client.py``; the field order is the TWS protocol's, so the
official ``ibapi`` client decodes the same bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SERVER_VERSION = 157
MAX_MESSAGE_SIZE = 1 << 20  # TWS itself rejects far smaller messages; 1 MiB is generous
GREETING = b"API\0"

# Incoming (client -> gateway) message ids of the TWS API, with names. The ones the
# simulator answers are records in _codec.py, routed by _broker.ROUTES; every other
# known id is recorded and ignored; an id outside this table closes the connection
# as malformed.
IN_MESSAGES: dict[int, str] = {
    1: "reqMktData",
    2: "cancelMktData",
    3: "placeOrder",
    4: "cancelOrder",
    5: "reqOpenOrders",
    6: "reqAccountUpdates",
    7: "reqExecutions",
    8: "reqIds",
    9: "reqContractDetails",
    10: "reqMktDepth",
    11: "cancelMktDepth",
    12: "reqNewsBulletins",
    13: "cancelNewsBulletins",
    14: "setServerLogLevel",
    15: "reqAutoOpenOrders",
    16: "reqAllOpenOrders",
    17: "reqManagedAccts",
    18: "requestFA",
    19: "replaceFA",
    20: "reqHistoricalData",
    21: "exerciseOptions",
    22: "reqScannerSubscription",
    23: "cancelScannerSubscription",
    24: "reqScannerParameters",
    25: "cancelHistoricalData",
    49: "reqCurrentTime",
    50: "reqRealTimeBars",
    51: "cancelRealTimeBars",
    52: "reqFundamentalData",
    53: "cancelFundamentalData",
    54: "reqCalcImpliedVolat",
    55: "reqCalcOptionPrice",
    56: "cancelCalcImpliedVolat",
    57: "cancelCalcOptionPrice",
    58: "reqGlobalCancel",
    59: "reqMarketDataType",
    61: "reqPositions",
    62: "reqAccountSummary",
    63: "cancelAccountSummary",
    64: "cancelPositions",
    65: "verifyRequest",
    66: "verifyMessage",
    67: "queryDisplayGroups",
    68: "subscribeToGroupEvents",
    69: "updateDisplayGroup",
    70: "unsubscribeFromGroupEvents",
    71: "startApi",
    72: "verifyAndAuthRequest",
    73: "verifyAndAuthMessage",
    74: "reqPositionsMulti",
    75: "cancelPositionsMulti",
    76: "reqAccountUpdatesMulti",
    77: "cancelAccountUpdatesMulti",
    78: "reqSecDefOptParams",
    79: "reqSoftDollarTiers",
    80: "reqFamilyCodes",
    81: "reqMatchingSymbols",
    82: "reqMktDepthExchanges",
    83: "reqSmartComponents",
    84: "reqNewsArticle",
    85: "reqNewsProviders",
    86: "reqHistoricalNews",
    87: "reqHeadTimestamp",
    88: "reqHistogramData",
    89: "cancelHistogramData",
    90: "cancelHeadTimestamp",
    91: "reqMarketRule",
    92: "reqPnL",
    93: "cancelPnL",
    94: "reqPnLSingle",
    95: "cancelPnLSingle",
    96: "reqHistoricalTicks",
    97: "reqTickByTickData",
    98: "cancelTickByTickData",
    99: "reqCompletedOrders",
    100: "reqWshMetaData",
    101: "cancelWshMetaData",
    102: "reqWshEventData",
    103: "cancelWshEventData",
    104: "reqUserInfo",
}

# Outgoing (gateway -> client) message ids used by the simulator.
OUT_ORDER_STATUS = 3
OUT_ERROR = 4
OUT_OPEN_ORDER = 5
OUT_ACCOUNT_VALUE = 6
OUT_PORTFOLIO_VALUE = 7
OUT_ACCOUNT_UPDATE_TIME = 8
OUT_NEXT_VALID_ID = 9
OUT_CONTRACT_DATA = 10
OUT_EXECUTION_DATA = 11
OUT_MANAGED_ACCOUNTS = 15
OUT_CURRENT_TIME = 49
OUT_CONTRACT_DATA_END = 52
OUT_OPEN_ORDER_END = 53
OUT_ACCOUNT_DOWNLOAD_END = 54
OUT_EXECUTION_DATA_END = 55
OUT_COMMISSION_REPORT = 59
OUT_POSITION = 61
OUT_POSITION_END = 62
OUT_ACCOUNT_UPDATE_MULTI = 73
OUT_ACCOUNT_UPDATE_MULTI_END = 74
OUT_COMPLETED_ORDERS_END = 102


class ProtocolError(Exception):
    """The peer sent bytes that are not the TWS protocol; the connection must close."""


Field = str | int | float | bool | None


def encode_field(value: Field) -> str:
    """Render one field the way TWS does: empty for unset, 0/1 for booleans."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        if value != value:  # NaN never goes on the wire
            return ""
        return repr(value) if value != int(value) else str(int(value))
    return str(value)


def frame(fields: Iterable[Field]) -> bytes:
    """Length-prefix one message of NUL-terminated fields."""
    body = "".join(encode_field(f) + "\0" for f in fields).encode()
    return struct.pack(">I", len(body)) + body


def split_fields(body: bytes) -> list[str]:
    """Decode one message body into its fields (the trailing NUL is required)."""
    if not body.endswith(b"\0"):
        raise ProtocolError("message body is not NUL-terminated")
    try:
        text = body.decode()
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"message body is not UTF-8: {exc}") from None
    return text.split("\0")[:-1]


def parse_version_range(body: bytes) -> tuple[int, int, str]:
    """Parse the greeting's ``v<min>..<max>[ options]`` into (min, max, options)."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("version range is not ASCII") from None
    spec, _, options = text.partition(" ")
    if not spec.startswith("v"):
        raise ProtocolError(f"bad version range {text!r}")
    low, sep, high = spec[1:].partition("..")
    try:
        lo = int(low)
        hi = int(high) if sep else lo
    except ValueError:
        raise ProtocolError(f"bad version range {text!r}") from None
    return lo, hi, options


@dataclass(frozen=True)
class WireContract:
    """The contract fields a request carries (the 12-field block of the protocol)."""

    con_id: int
    symbol: str
    sec_type: str
    last_trade_date: str
    strike: str
    right: str
    multiplier: str
    exchange: str
    primary_exchange: str
    currency: str
    local_symbol: str
    trading_class: str


def read_contract(fields: Sequence[str], start: int) -> WireContract:
    """Read the 12-field contract block that placeOrder and reqContractDetails send."""
    f = list(fields[start : start + 12])
    if len(f) < 12:
        raise ProtocolError("truncated contract block")
    return WireContract(
        con_id=int(f[0] or 0),
        symbol=f[1],
        sec_type=f[2],
        last_trade_date=f[3],
        strike=f[4],
        right=f[5],
        multiplier=f[6],
        exchange=f[7],
        primary_exchange=f[8],
        currency=f[9],
        local_symbol=f[10],
        trading_class=f[11],
    )


def to_float(text: str) -> float | None:
    """Parse a price field; empty and TWS's "unset" (DBL_MAX) mean no value."""
    if not text:
        return None
    value = float(text)
    if value >= 1.7e308:
        return None
    return value
